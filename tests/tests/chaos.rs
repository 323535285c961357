//! Chaos (issue 14): three hosts, two controllers on a three-member etcd, four VMs. For N
//! rounds the master is killed (SIGKILL) or stopped (SIGSTOP, later continued or killed),
//! sometimes with an etcd member, at a random moment while VMs move between hosts (port deleted
//! on the old host, added on the new one, a gratuitous ARP). After each round, once dead
//! processes are restarted and one master holds every switch: every VM reaches every other,
//! no flow on any switch leads to a port that does not exist, and etcd and every switch agree
//! where each VM is.
//!
//! CLOUDRACK_CHAOS_ROUNDS sets N (default 20: about 1.5 minutes on two quiet cores);
//! CLOUDRACK_CHAOS_SEED replays a run (the seed is printed); CLOUDRACK_CHAOS_JSON writes a
//! summary there (bench/run-chaos.sh).

use cloudrack_tests::*;
use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ROUNDS: usize = 20;
const HOSTS: usize = 3;
const VMS: usize = 4;
const VNET: u32 = 0;
const ELECTION_TTL: &str = "1s";

/// splitmix64: small, seedable, good enough to pick moments and victims.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

/// What happens to the master.
#[derive(Debug, Clone, Copy)]
enum Failure {
    Kill,
    /// SIGSTOP, then after `for_ms` SIGCONT (or SIGKILL if `then_kill`).
    Stop {
        for_ms: u64,
        then_kill: bool,
    },
}

#[derive(Debug, Clone, Copy)]
struct Move {
    vm: usize,
    to: usize,
    at_ms: u64,
}

/// One round's script, all times from the round's start.
struct Plan {
    master: usize,
    failure: Failure,
    fail_at_ms: u64,
    /// (host of the etcd member, when it is killed).
    etcd_kill: Option<(usize, u64)>,
    moves: Vec<Move>,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.failure {
            Failure::Kill => write!(f, "SIGKILL ctl{} at {} ms", self.master, self.fail_at_ms)?,
            Failure::Stop { for_ms, then_kill } => write!(
                f,
                "SIGSTOP ctl{} at {} ms, {} after {for_ms} ms",
                self.master,
                self.fail_at_ms,
                if then_kill { "SIGKILL" } else { "SIGCONT" }
            )?,
        }
        if let Some((h, at)) = self.etcd_kill {
            write!(f, "; etcd member on h{h} killed at {at} ms")?;
        }
        for m in &self.moves {
            write!(f, "; vm{} -> h{} at {} ms", m.vm, m.to, m.at_ms)?;
        }
        Ok(())
    }
}

/// Controller `i` (on host `i`) on the deployment's etcd.
fn spawn_controller(c: &Cluster, etcd: &EtcdCluster, i: usize) -> Proc {
    let endpoints = etcd.endpoints();
    let name = format!("ctl{i}");
    c.spawn_controller_on(
        i,
        &["--etcd", &endpoints, "--election-ttl", ELECTION_TTL, "--name", &name],
    )
}

/// The deployment under test and where each VM is.
struct Chaos {
    c: Cluster,
    etcd: EtcdCluster,
    ctls: Vec<Option<Proc>>,
    addrs: Vec<String>,
    /// Each VM and the host it is on.
    vms: Vec<(Vm, usize)>,
    /// Controller restarts, for the summary.
    restarts: usize,
}

impl Chaos {
    fn start(rng: &mut Rng) -> Chaos {
        let net = HostNet::new(HOSTS);
        let etcd = EtcdCluster::start(&net, &[0, 1, 2]);
        let mut c = Cluster::new(net, &[]);
        let addrs: Vec<String> = (0..2).map(|i| c.controller_addr_on(i)).collect();
        let ctls = (0..2).map(|i| Some(spawn_controller(&c, &etcd, i))).collect();
        c.start_switches(HOSTS, &["--controller", &addrs[1]]);
        let vms = (0..VMS)
            .map(|i| {
                let host = rng.below(HOSTS as u64) as usize;
                let mac = format!("02:00:00:00:0f:{:02x}", i + 1);
                let ip = format!("10.0.15.{}/24", 10 + i);
                (c.vm_system(host, &format!("vm{i}"), &mac, &ip, VNET), host)
            })
            .collect();
        Chaos {
            c,
            etcd,
            ctls,
            addrs,
            vms,
            restarts: 0,
        }
    }

    /// Start again every controller that exited (killed, or stopped itself after losing the
    /// election while it was frozen).
    fn restart_exited_controllers(&mut self) {
        for i in 0..self.ctls.len() {
            let exited = self.ctls[i].as_mut().is_none_or(|p| !p.is_running());
            if exited {
                if let Some(p) = self.ctls[i].take() {
                    if let Some(line) = p.logs().lines().rev().find(|l| l.contains("stopping")) {
                        println!("    ctl{i} had stopped: {}", line.trim());
                    }
                }
                self.ctls[i] = Some(spawn_controller(&self.c, &self.etcd, i));
                self.restarts += 1;
            }
        }
    }

    /// The master, if every controller runs, every switch has the same master and the other
    /// controller as slave, etcd's election names it, and its running process is the one that
    /// took over (not one that died a moment ago, whose connection a switch has yet to see
    /// close, nor a restarted one the election still names by its predecessor's key).
    fn steady(&mut self) -> Option<usize> {
        if !self.ctls.iter_mut().all(|p| p.as_mut().is_some_and(|p| p.is_running())) {
            return None;
        }
        let m = steady_master(&self.c, &self.addrs)?;
        let reg = try_etcd_registry(&self.c, 0, &self.etcd.live_endpoints())?;
        let elected = reg["master"]["name"].as_str() == Some(format!("ctl{m}").as_str());
        let took_over = self.ctls[m]
            .as_ref()
            .is_some_and(|p| p.logs().contains("took over as master"));
        (elected && took_over).then_some(m)
    }

    /// Wait until every controller runs and one is steadily master (see `steady`); restarts
    /// controllers that exit meanwhile.
    fn wait_steady(&mut self, timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            self.restart_exited_controllers();
            if let Some(m) = self.steady() {
                return Some(m);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn plan(&self, rng: &mut Rng, master: usize) -> Plan {
        let failure = if rng.percent(50) {
            Failure::Kill
        } else {
            Failure::Stop {
                for_ms: 300 + rng.below(2700),
                then_kill: rng.percent(50),
            }
        };
        let etcd_kill = rng
            .percent(35)
            .then(|| (rng.below(HOSTS as u64) as usize, rng.below(1500)));
        let n_moves = 1 + rng.below(2) as usize;
        let mut moves = Vec::new();
        for _ in 0..n_moves {
            let vm = rng.below(VMS as u64) as usize;
            if moves.iter().any(|m: &Move| m.vm == vm) {
                continue;
            }
            let from = self.vms[vm].1;
            let to = (from + 1 + rng.below(HOSTS as u64 - 1) as usize) % HOSTS;
            moves.push(Move {
                vm,
                to,
                at_ms: rng.below(2000),
            });
        }
        Plan {
            master,
            failure,
            fail_at_ms: rng.below(1500),
            etcd_kill,
            moves,
        }
    }

    /// Carry out a plan's events at their moments, then end the stop (if any).
    fn run(&mut self, plan: &Plan) {
        enum Ev {
            Fail,
            Etcd(usize),
            Move(Move),
        }
        let mut events: Vec<(u64, Ev)> = vec![(plan.fail_at_ms, Ev::Fail)];
        if let Some((h, at)) = plan.etcd_kill {
            events.push((at, Ev::Etcd(h)));
        }
        events.extend(plan.moves.iter().map(|m| (m.at_ms, Ev::Move(*m))));
        events.sort_by_key(|(at, _)| *at);
        let t0 = Instant::now();
        let mut stopped_at = None;
        for (at, ev) in events {
            if let Some(wait) = Duration::from_millis(at).checked_sub(t0.elapsed()) {
                std::thread::sleep(wait);
            }
            match ev {
                Ev::Fail => {
                    let p = self.ctls[plan.master].as_mut().expect("the master runs");
                    match plan.failure {
                        Failure::Kill => {
                            p.signal(libc::SIGKILL);
                            p.wait_exit(Duration::from_secs(5));
                        }
                        Failure::Stop { .. } => {
                            p.signal(libc::SIGSTOP);
                            stopped_at = Some(Instant::now());
                        }
                    }
                }
                Ev::Etcd(h) => self.etcd.kill(h),
                Ev::Move(m) => {
                    let (vm, from) = &mut self.vms[m.vm];
                    vm.host_if = self.c.move_vm_system(vm, *from, m.to);
                    *from = m.to;
                    announce(vm);
                }
            }
        }
        if let (Failure::Stop { for_ms, then_kill }, Some(since)) = (plan.failure, stopped_at) {
            if let Some(wait) = Duration::from_millis(for_ms).checked_sub(since.elapsed()) {
                std::thread::sleep(wait);
            }
            if let Some(p) = self.ctls[plan.master].as_mut() {
                p.signal(if then_kill { libc::SIGKILL } else { libc::SIGCONT });
            }
        }
        if let Some((h, _)) = plan.etcd_kill {
            self.etcd.restart(&self.c.net, h);
        }
    }

    /// Every VM pair that still cannot ping after `timeout`.
    fn unreachable_pairs(&self, timeout: Duration) -> Vec<(usize, usize)> {
        let mut pending: Vec<(usize, usize)> = (0..VMS)
            .flat_map(|i| (0..VMS).filter(move |j| *j != i).map(move |j| (i, j)))
            .collect();
        let deadline = Instant::now() + timeout;
        while !pending.is_empty() && Instant::now() < deadline {
            pending.retain(|&(i, j)| {
                let dst = self.vms[j].0.ip.to_string();
                !ping(&self.vms[i].0.ns, &dst, 1, Duration::from_millis(500))
            });
        }
        pending
    }

    fn placements(&self) -> Vec<Placement> {
        self.vms
            .iter()
            .map(|(vm, host)| Placement {
                mac: vm.mac.clone(),
                vnet: VNET,
                host: *host,
                port_name: vm.host_if.clone(),
            })
            .collect()
    }

    /// What disagrees between etcd, the switches and where the VMs are (after waiting up to
    /// `timeout` for it to settle). A controller that stops meanwhile (a master fails-stop
    /// when etcd was unreachable for a lease's length) is started again: agreement needs one.
    fn disagreements(&mut self, timeout: Duration) -> Vec<String> {
        let vms = self.placements();
        let endpoints = self.etcd.live_endpoints();
        let deadline = Instant::now() + timeout;
        loop {
            self.restart_exited_controllers();
            let problems = match try_etcd_registry(&self.c, 0, &endpoints) {
                Some(reg) => {
                    let mut p = disagreements(&self.c, &reg, &vms);
                    let hosts = reg["hosts"].as_array().map_or(0, Vec::len);
                    if hosts != HOSTS {
                        p.push(format!("etcd holds {hosts} hosts, not {HOSTS}"));
                    }
                    p
                }
                None => vec!["etcd did not answer".into()],
            };
            if problems.is_empty() || Instant::now() >= deadline {
                return problems;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// After a round: one master, every pair reachable, etcd and switches agreeing.
    fn check(&mut self) -> Result<usize, Vec<String>> {
        let Some(master) = self.wait_steady(Duration::from_secs(20)) else {
            let roles: Vec<_> = (0..HOSTS).map(|h| switch_roles(&self.c, h)).collect();
            return Err(vec![format!("no steady master within 20 s: {roles:?}")]);
        };
        let mut problems = Vec::new();
        let unreachable = self.unreachable_pairs(Duration::from_secs(20));
        if !unreachable.is_empty() {
            problems.push(format!("unreachable (from, to): {unreachable:?}"));
        }
        problems.extend(self.disagreements(Duration::from_secs(20)));
        if problems.is_empty() {
            Ok(master)
        } else {
            problems.extend(self.state_dump());
            Err(problems)
        }
    }

    /// Where the VMs are, each switch's tunnels and flows, and etcd's tunnels: what a failed
    /// round's report needs to be understood.
    fn state_dump(&mut self) -> Vec<String> {
        let mut out: Vec<String> = self
            .placements()
            .iter()
            .enumerate()
            .map(|(i, p)| format!("vm{i} {} on h{} port {}", p.mac, p.host, p.port_name))
            .collect();
        for h in 0..HOSTS {
            let show = self.c.try_ctl_json(h, &["show"]).unwrap_or_default();
            let tunnels: Vec<String> = show["tunnels"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| format!("{}->{}", t["port_no"], t["remote_ip"]))
                .collect();
            let flows: Vec<String> = self
                .c
                .try_ctl_json(h, &["flows"])
                .and_then(|f| f.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .map(|f| format!("{}->{}", f["mac"], f["out_port"]))
                .collect();
            out.push(format!("h{h}: tunnels {tunnels:?}; flows {flows:?}"));
        }
        if let Some(reg) = try_etcd_registry(&self.c, 0, &self.etcd.live_endpoints()) {
            out.push(format!("etcd tunnels: {}", reg["tunnels"]));
        }
        out
    }
}

#[test]
fn chaos_master_failures_while_vms_move() {
    let _logs = TestLogs::new("chaos");
    let rounds: usize = std::env::var("CLOUDRACK_CHAOS_ROUNDS")
        .ok()
        .map(|s| s.parse().expect("CLOUDRACK_CHAOS_ROUNDS: a number"))
        .unwrap_or(ROUNDS);
    let seed: u64 = std::env::var("CLOUDRACK_CHAOS_SEED")
        .ok()
        .map(|s| s.parse().expect("CLOUDRACK_CHAOS_SEED: a number"))
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64);
    println!("chaos: seed {seed} (CLOUDRACK_CHAOS_SEED={seed} replays it), {rounds} rounds");
    let started = Instant::now();
    let mut rng = Rng(seed);
    let mut chaos = Chaos::start(&mut rng);

    let mut master = match chaos.check() {
        Ok(m) => m,
        Err(p) => panic!("the deployment is not healthy before any chaos: {p:#?}"),
    };
    let mut failures: Vec<(usize, String, Vec<String>)> = Vec::new();
    let mut report = Vec::new();
    let mut master_changes = 0;
    for round in 1..=rounds {
        let plan = chaos.plan(&mut rng, master);
        let t = Instant::now();
        chaos.run(&plan);
        let outcome = chaos.check();
        let secs = t.elapsed().as_secs_f64();
        match &outcome {
            Ok(m) => {
                println!("round {round}/{rounds}: {plan} -> ok, master ctl{m} ({secs:.1} s)");
                master_changes += usize::from(*m != master);
                master = *m;
            }
            Err(problems) => {
                println!("round {round}/{rounds}: {plan} -> FAILED ({secs:.1} s): {problems:#?}");
                failures.push((round, plan.to_string(), problems.clone()));
                match chaos.wait_steady(Duration::from_secs(20)) {
                    Some(m) => master = m,
                    None => panic!("chaos: no master any more after round {round}; seed {seed}"),
                }
            }
        }
        report.push(serde_json::json!({
            "round": round,
            "plan": plan.to_string(),
            "ok": outcome.is_ok(),
            "problems": outcome.err().unwrap_or_default(),
            "seconds": (secs * 10.0).round() / 10.0,
        }));
    }
    let total = started.elapsed().as_secs_f64();
    println!(
        "chaos: {rounds} rounds, {} failures, seed {seed}; the master changed in {master_changes} rounds, {} controller restarts, {total:.0} s",
        failures.len(),
        chaos.restarts
    );
    if let Ok(path) = std::env::var("CLOUDRACK_CHAOS_JSON") {
        let summary = serde_json::json!({
            "test": "chaos_master_failures_while_vms_move",
            "seed": seed,
            "rounds": rounds,
            "failures": failures.len(),
            "master_changes": master_changes,
            "controller_restarts": chaos.restarts,
            "seconds": total.round(),
            "per_round": report,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&summary).unwrap())
            .unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
    }
    assert!(
        failures.is_empty(),
        "chaos: {} of {rounds} rounds failed (replay with CLOUDRACK_CHAOS_SEED={seed}): {failures:#?}",
        failures.len()
    );
}
