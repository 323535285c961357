//! `cloudrack-bench scale`: thousands of simulated switches against one real controller.
//!
//! For each host count a fresh `cloudrack-controller` starts on a free loopback port, and one
//! thread (`sim.rs`, mio) connects that many switches, each speaking OpenFlow 1.3 + TCCS like the
//! real one. Phases: **register** (every switch: HELLO, FEATURES_REPLY, TCCS Register, PortVnet
//! per port), **populate** (every VM MAC's first frame as a PACKET_IN: the controller learns it
//! and installs flows and tunnels), **steady** (new conversations and live migrations at fixed
//! rates). Measured: registrations/s, MACs/s, PACKET_IN → FLOW_MOD latency, MAC move → every
//! holding switch re-pointed, and the controller's CPU and memory from /proc. See bench/README.md.

mod frames;
mod procmon;
mod sim;
mod stats;

use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::cpu::process_cpu_seconds;
use crate::util::{catching, interrupted, utc_file_stamp, utc_timestamp};
use procmon::{Controller, ProcSample};
pub use sim::MoveVia;
use sim::{Plan, Sim};
use stats::{round3, Samples};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// State in the controller's memory (the default controller).
    Memory,
    /// State in etcd: pass the endpoints with --controller-arg=--etcd --controller-arg=URL.
    Etcd,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Etcd => "etcd",
        }
    }
}

#[derive(Args)]
pub struct ScaleArgs {
    /// Host counts to measure, comma-separated, each with a fresh controller (default
    /// 100,1000,10000; with --quick 100,1000).
    #[arg(long, value_name = "N,N,...", value_delimiter = ',')]
    hosts: Vec<u32>,
    /// VM MACs per host (default 100, i.e. 1,000,000 MACs at 10,000 hosts; with --quick 10).
    #[arg(long, value_name = "N")]
    macs_per_host: Option<u32>,
    /// Hosts per virtual network (tenant): VMs talk to and migrate between hosts of their own
    /// network only, so tunnels and broadcasts stay within it.
    #[arg(long, value_name = "N", default_value_t = 20)]
    hosts_per_vnet: u32,
    /// Live migrations (MAC moves) per second in the steady phase.
    #[arg(long, value_name = "RATE", default_value_t = 100.0)]
    moves_per_sec: f64,
    /// New conversations (unicast PACKET_INs towards a known MAC) per second in the steady
    /// phase.
    #[arg(long, value_name = "RATE", default_value_t = 1000.0)]
    pin_rate: f64,
    /// Seconds of the steady phase (default 20, or 5 with --quick).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// How a migrated VM is announced at its destination.
    #[arg(long, value_enum, default_value_t = MoveVia::Rarp)]
    move_via: MoveVia,
    /// VM first frames in flight (not yet learnt) during the populate phase.
    #[arg(long, value_name = "N", default_value_t = 256)]
    window: usize,
    /// Do not declare each VM port's MAC (TCCS PortBinding) at registration; a migration's
    /// destination port is declared either way (the controller refuses a move to an unbound port).
    #[arg(long)]
    no_port_bindings: bool,
    /// Keep a migrated VM's port on the source host (by default it is deleted, PortStatus
    /// DELETE, once the move is done, as when QEMU's tap goes away).
    #[arg(long)]
    keep_source_ports: bool,
    /// Switch handshakes in flight during registration (the controller's accept queue holds
    /// 128; more in flight measures SYN retransmissions rather than the controller).
    #[arg(long, value_name = "N", default_value_t = 100)]
    connect_window: usize,
    /// Give up on a phase (register, populate) after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 180.0)]
    phase_timeout: f64,
    /// Smoke test of under a minute: 100 and 1,000 hosts, 10 MACs per host, 5 s steady phase.
    #[arg(long)]
    quick: bool,
    /// The controller binary (default: found like the tests find it: $CLOUDRACK_BIN_DIR,
    /// target/release, target/debug).
    #[arg(long, value_name = "PATH")]
    controller_bin: Option<PathBuf>,
    /// Extra argument for the controller, repeatable, e.g. --controller-arg=--etcd
    /// --controller-arg=http://127.0.0.1:2379 (`--listen` is set by the bench).
    #[arg(long = "controller-arg", value_name = "ARG", allow_hyphen_values = true)]
    controller_args: Vec<String>,
    /// Which state backend the controller runs with: a label in the JSON and the table.
    #[arg(long, value_enum, default_value_t = Backend::Memory)]
    backend: Backend,
    /// RUST_LOG for the controller.
    #[arg(long, value_name = "FILTER", default_value = "info")]
    controller_log: String,
    /// Stop a host count when the controller's resident memory passes this many MiB (default:
    /// the memory available at the start less 3 GiB or 10%, whichever is more), so the
    /// controller cannot take the machine down.
    #[arg(long, value_name = "MIB")]
    max_controller_rss_mib: Option<u64>,
    /// Keep the controller logs (in the temp directory) instead of deleting them.
    #[arg(long)]
    keep_logs: bool,
    /// Seed for picking VMs and hosts.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where to write the JSON results (default: bench/results/scale-<backend>-<date>.json).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

struct Settings {
    hosts: Vec<u32>,
    /// What the controller is started with after `--listen`.
    controller_args: Vec<String>,
    macs_per_host: u32,
    steady: Duration,
    bin: PathBuf,
    rss_guard_kib: u64,
    json_path: PathBuf,
}

fn settings(a: &ScaleArgs) -> Result<Settings, String> {
    let mut hosts = a.hosts.clone();
    if hosts.is_empty() {
        hosts = if a.quick {
            vec![100, 1000]
        } else {
            vec![100, 1000, 10_000]
        };
    }
    if hosts.iter().any(|h| !(2..=100_000).contains(h)) {
        return Err("--hosts: each count must be 2..=100000".into());
    }
    let macs_per_host = a.macs_per_host.unwrap_or(if a.quick { 10 } else { 100 });
    if !(1..=0x3000).contains(&macs_per_host) {
        return Err("--macs-per-host must be 1..=12288 (local port numbers stay below the tunnel range)".into());
    }
    if hosts
        .iter()
        .any(|h| u64::from(*h) * u64::from(macs_per_host) > 50_000_000)
    {
        return Err("more than 50,000,000 MACs in one run".into());
    }
    if a.hosts_per_vnet < 2 {
        return Err("--hosts-per-vnet must be at least 2 (VMs talk and move between hosts)".into());
    }
    if hosts.iter().any(|h| h / a.hosts_per_vnet >= 0xffff) {
        return Err("too many virtual networks (hosts / --hosts-per-vnet must stay below 65535)".into());
    }
    let secs = a.duration.unwrap_or(if a.quick { 5.0 } else { 20.0 });
    if !(0.0..=3600.0).contains(&secs) || a.moves_per_sec < 0.0 || a.pin_rate < 0.0 {
        return Err("--duration must be 0..=3600 s and the rates non-negative".into());
    }
    if a.window == 0 || a.connect_window == 0 {
        return Err("--window and --connect-window must be at least 1".into());
    }
    let bin = match &a.controller_bin {
        Some(p) => p.clone(),
        None => catching(|| Ok(cloudrack_tests::bin_path("cloudrack-controller")))?,
    };
    if !bin.is_file() {
        return Err(format!("controller binary {} not found", bin.display()));
    }
    let avail_kib = procmon::meminfo("MemAvailable:").unwrap_or(4 << 20);
    let rss_guard_kib = a
        .max_controller_rss_mib
        .map_or(avail_kib.saturating_sub((3 << 20).max(avail_kib / 10)), |m| m * 1024);
    let json_path = a.json.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results").join(format!(
            "scale-{}-{}.json",
            a.backend.name(),
            utc_file_stamp()
        ))
    });
    // The simulated switches speak plain TCP; a controller that wants mutual TLS by default
    // says so in its --help and is told --plain-tcp (unless TLS options were passed through).
    let mut controller_args = a.controller_args.clone();
    let help = std::process::Command::new(&bin)
        .arg("--help")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if help.contains("--plain-tcp")
        && !controller_args
            .iter()
            .any(|x| x.starts_with("--tls") || x == "--plain-tcp")
    {
        controller_args.insert(0, "--plain-tcp".into());
    }
    Ok(Settings {
        hosts,
        controller_args,
        macs_per_host,
        steady: Duration::from_secs_f64(secs),
        bin,
        rss_guard_kib,
        json_path,
    })
}

/// Controller and simulator readings at a phase boundary.
#[derive(Clone, Copy)]
struct Snap {
    at: Instant,
    ctl: ProcSample,
    sim_cpu: f64,
    machine_busy: f64,
}

fn snap(pid: u32) -> Snap {
    Snap {
        at: Instant::now(),
        ctl: procmon::sample(pid).unwrap_or_default(),
        sim_cpu: process_cpu_seconds(std::process::id()).unwrap_or(0.0),
        machine_busy: crate::cpu::machine_cpu().busy,
    }
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

/// CPU and memory over one phase.
fn phase_json(a: &Snap, b: &Snap) -> Value {
    let secs = (b.at - a.at).as_secs_f64().max(1e-9);
    let ctl = (b.ctl.cpu_s - a.ctl.cpu_s).max(0.0);
    let sim = (b.sim_cpu - a.sim_cpu).max(0.0);
    let others = (b.machine_busy - a.machine_busy - ctl - sim).max(0.0);
    json!({
        "secs": round3(secs),
        "controller_cpu_s": round3(ctl),
        "controller_cpu_pct": (ctl / secs * 1000.0).round() / 10.0,
        "simulator_cpu_s": round3(sim),
        "simulator_cpu_pct": (sim / secs * 1000.0).round() / 10.0,
        // Everything else on the machine (other builds and tests): the noise in the figures.
        "other_processes_cpu_pct": (others / secs * 1000.0).round() / 10.0,
        "controller_rss_mib_at_end": mib(b.ctl.rss_kib),
        "controller_threads_at_end": b.ctl.threads,
    })
}

/// Watches the controller while a phase runs: alive, under the memory guard, and a progress
/// line every 2 s.
struct Monitor {
    label: String,
    guard_kib: u64,
    started: Instant,
    last_sample: Instant,
    last_print: Instant,
    last: Option<(Instant, ProcSample, f64)>,
    max_rss_kib: u64,
    max_threads: u64,
    timeline: Vec<Value>,
    /// Latency samples already shown in the timeline: (PACKET_IN, move).
    seen: (usize, usize),
}

impl Monitor {
    fn watch(&mut self, sim: &Sim, ctl: &mut Controller) -> Result<(), String> {
        if interrupted() {
            return Err("interrupted".into());
        }
        if let Some(e) = ctl.exited() {
            return Err(e);
        }
        if self.last_sample.elapsed() < Duration::from_millis(500) {
            return Ok(());
        }
        self.last_sample = Instant::now();
        let Some(s) = procmon::sample(ctl.pid) else {
            return Ok(());
        };
        let sim_cpu = process_cpu_seconds(std::process::id()).unwrap_or(0.0);
        self.max_rss_kib = self.max_rss_kib.max(s.rss_kib);
        self.max_threads = self.max_threads.max(s.threads);
        let now = Instant::now();
        let (ctl_pct, sim_pct) = match self.last {
            Some((t, p, c)) => {
                let dt = (now - t).as_secs_f64().max(1e-9);
                ((s.cpu_s - p.cpu_s) / dt * 100.0, (sim_cpu - c) / dt * 100.0)
            }
            None => (0.0, 0.0),
        };
        self.last = Some((now, s, sim_cpu));
        let pins = sim.pin_ms_steady.since(self.seen.0);
        let moves = sim.move_ms.since(self.seen.1);
        let (pin_p99_max, move_p99_max) = (Samples::p99_max(pins), Samples::p99_max(moves));
        self.seen = (sim.pin_ms_steady.len(), sim.move_ms.len());
        self.timeline.push(json!({
            "t_s": round3(self.started.elapsed().as_secs_f64()),
            "phase": sim.phase.name(),
            "registered": sim.registered,
            "macs_learnt": sim.known,
            "moves_done": sim.moves_done(),
            "controller_rss_mib": mib(s.rss_kib),
            "controller_threads": s.threads,
            "controller_cpu_pct": ctl_pct.round(),
            "simulator_cpu_pct": sim_pct.round(),
            "pin_to_flowmod_p99_max_ms": pin_p99_max,
            "move_p99_max_ms": move_p99_max,
        }));
        if s.rss_kib > self.guard_kib {
            return Err(format!(
                "controller resident memory {} MiB passed the guard of {} MiB (--max-controller-rss-mib) \
                 with {} switches registered and {} MACs learnt",
                s.rss_kib / 1024,
                self.guard_kib / 1024,
                sim.registered,
                sim.known
            ));
        }
        if self.last_print.elapsed() >= Duration::from_secs(2) {
            self.last_print = Instant::now();
            eprintln!(
                "[{} {:>5.0}s] {:<8} switches {}/{} registered | MACs {}/{} learnt | moves {} done {} failed {} active | \
                 controller cpu {:>3.0}% rss {} MiB threads {} | simulator cpu {:>3.0}%",
                self.label,
                self.started.elapsed().as_secs_f64(),
                sim.phase.name(),
                sim.registered,
                sim.plan.hosts,
                sim.known,
                sim.total_macs(),
                sim.moves_done(),
                sim.moves_failed,
                sim.moves_active(),
                ctl_pct,
                s.rss_kib / 1024,
                s.threads,
                sim_pct
            );
        }
        Ok(())
    }
}

pub fn run(a: ScaleArgs) -> Result<i32, String> {
    let s = settings(&a)?;
    let max_hosts = s.hosts.iter().copied().max().unwrap_or(0);
    // One socket per switch here, and one in the controller (which inherits the limit).
    let want = u64::from(max_hosts) + 1024;
    let (soft, hard) = match procmon::raise_nofile(want) {
        Ok(l) => l,
        Err(e) => {
            let l = procmon::raise_nofile(u64::from(max_hosts) + 256)?;
            eprintln!(
                "warning: {e}; the controller (one descriptor per switch) can hold at most about {} switches",
                l.0.saturating_sub(64)
            );
            procmon::raise_nofile(l.1).unwrap_or(l)
        }
    };
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let started = utc_timestamp();
    let loadavg_at_start = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "cloudrack-bench scale ({} backend): hosts {:?}, {} MACs per host, {} hosts per virtual network; \
         steady phase {:.0} s with {} new conversations/s and {} moves/s (announced by {}); controller {}",
        a.backend.name(),
        s.hosts,
        s.macs_per_host,
        a.hosts_per_vnet,
        s.steady.as_secs_f64(),
        a.pin_rate,
        a.moves_per_sec,
        a.move_via.name(),
        s.bin.display()
    );
    eprintln!(
        "note: {cpus} CPUs, shared by the controller and the simulator (one thread); the simulator's own CPU is \
         reported next to the controller's. Open-files limit {soft}/{hard}."
    );
    let mut results = Vec::new();
    for &hosts in &s.hosts {
        if interrupted() {
            break;
        }
        let plan = Plan {
            hosts,
            macs_per_host: s.macs_per_host,
            hosts_per_vnet: a.hosts_per_vnet,
            moves_per_sec: a.moves_per_sec,
            pin_rate: a.pin_rate,
            steady: s.steady,
            move_via: a.move_via,
            window: a.window,
            connect_window: a.connect_window,
            bind_ports: !a.no_port_bindings,
            delete_source_port: !a.keep_source_ports,
            phase_timeout: Duration::from_secs_f64(a.phase_timeout),
            seed: a.seed,
        };
        let r = one(&a, &s, plan);
        eprintln!("{}", summary_line(&r));
        results.push(r);
    }
    let finished = utc_timestamp();
    let doc = json!({
        "bench": "scale",
        "started": started,
        "finished": finished,
        "backend": a.backend.name(),
        "controller": {
            "bin": s.bin.display().to_string(),
            "args": s.controller_args,
            "rust_log": a.controller_log,
            "built": std::fs::metadata(&s.bin).ok().and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| crate::util::utc_timestamp_of(d.as_secs() as i64)),
        },
        "settings": {
            "hosts": s.hosts,
            "macs_per_host": s.macs_per_host,
            "hosts_per_vnet": a.hosts_per_vnet,
            "steady_secs": s.steady.as_secs_f64(),
            "pin_rate": a.pin_rate,
            "moves_per_sec": a.moves_per_sec,
            "move_via": a.move_via.name(),
            "window": a.window,
            "connect_window": a.connect_window,
            "port_bindings": !a.no_port_bindings,
            "delete_source_ports": !a.keep_source_ports,
            "quick": a.quick,
            "seed": a.seed,
            "controller_rss_guard_mib": s.rss_guard_kib / 1024,
        },
        "machine": {
            "cpus": cpus,
            "shared": "the controller and the simulator (one thread) share these CPUs",
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "loadavg_at_start": loadavg_at_start.trim(),
            "loadavg_at_end": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
            "nofile_limit": [soft, hard],
            "limits": procmon::kernel_limits(),
        },
        "method": {
            "registration": "switch connects (at most --connect-window handshakes in flight), sends HELLO; on \
                FEATURES_REQUEST: FEATURES_REPLY, TCCS Register, a PortVnet (and a PortBinding of its VM's MAC \
                unless --no-port-bindings) per port; registered when the \
                controller's flow-stats request (sent once it handled the Register) arrives",
            "populate": "each VM's first frame as a PACKET_IN (in_port, tunnel_id = vnet): unicast to a VM of \
                its network on another host that the controller already knows, or a gratuitous ARP for one VM \
                per network; at most --window not yet learnt; a VM is learnt when its switch gets the FLOW_MOD \
                for its MAC to its port",
            "pin_to_flowmod": "from writing a unicast PACKET_IN (src VM -> known dst VM on another host) to the \
                same switch receiving the FLOW_MOD whose match is (tunnel_id, eth_dst = dst)",
            "move": "PortStatus ADD + PortVnet + PortBinding of a new port on another host of the VM's network, then the \
                announce (--move-via); done when every switch that held an entry for the MAC, the source and \
                the destination got a FLOW_MOD for it pointing at the destination (its local port there, the \
                tunnel to the destination elsewhere); barriers are answered at once; then the source's \
                port is deleted (PortStatus DELETE)",
            "controller_move_ms": "the controller's own figure (move_repointed_ms in its log: learn until \
                every barrier reply)",
            "listen_overflows": "machine-wide TcpExt ListenOverflows / ListenDrops (/proc/net/netstat) during \
                registration: handshakes that found the controller's accept queue full",
            "memory": "VmRSS / VmHWM of the controller from /proc/PID/status; per 1,000 hosts = (after \
                registration - idle) / hosts; per 100,000 MACs = (after populate - after registration) / MACs",
        },
        "results": results,
    });
    crate::util::write_json(&s.json_path, &doc)?;
    print_table(&doc);
    println!("\nJSON: {}", s.json_path.display());
    if interrupted() {
        return Ok(130);
    }
    let all_ok = doc["results"]
        .as_array()
        .is_some_and(|r| r.iter().all(|x| x["ok"] == true));
    Ok(if all_ok { 0 } else { 1 })
}

/// One host count against a fresh controller.
fn one(a: &ScaleArgs, s: &Settings, plan: Plan) -> Value {
    let hosts = plan.hosts;
    let macs = u64::from(hosts) * u64::from(plan.macs_per_host);
    let label = format!("{} {}h", a.backend.name(), hosts);
    let fail = |e: String| json!({ "hosts": hosts, "macs": macs, "ok": false, "error": e });
    let port = match procmon::free_port() {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let log = std::env::temp_dir().join(format!(
        "cloudrack-scale-{}-{}-{}.log",
        std::process::id(),
        a.backend.name(),
        hosts
    ));
    let mut args = s.controller_args.clone();
    if a.backend == Backend::Etcd {
        // A prefix of its own per run: nothing left by the previous host count is loaded.
        args.push(format!("--etcd-prefix=/cloudrack-bench/{}-{hosts}", std::process::id()));
    }
    let mut ctl = match Controller::start(&s.bin, addr, &args, &a.controller_log, log.clone()) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let ready = ctl
        .wait_listening(port, Duration::from_secs(10))
        .and_then(|()| match a.backend {
            Backend::Etcd => ctl.wait_log("took over as master", Duration::from_secs(20)),
            Backend::Memory => Ok(()),
        });
    if let Err(e) = ready {
        ctl.stop();
        return fail(e);
    }
    eprintln!("[{label}] controller pid {}, log {}", ctl.pid, ctl.log.display());
    let base = snap(ctl.pid);
    let listen_before = procmon::listen_overflows();
    let mut sim = match Sim::new(plan, addr) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let now = Instant::now();
    let mut mon = Monitor {
        label: label.clone(),
        guard_kib: s.rss_guard_kib,
        started: now,
        last_sample: now - Duration::from_secs(1),
        last_print: now,
        last: None,
        max_rss_kib: base.ctl.rss_kib,
        max_threads: base.ctl.threads,
        timeline: Vec::new(),
        seen: (0, 0),
    };
    let mut snaps = vec![("idle", base)];
    let mut error = None;
    let mut failed_phase = None;
    let mut listen = (0, 0);
    type PhaseFn = fn(&mut Sim, &mut dyn FnMut(&Sim) -> Result<(), String>) -> Result<(), String>;
    let phases: [(&str, PhaseFn); 3] = [
        ("register", Sim::register_all),
        ("populate", Sim::populate),
        ("steady", Sim::steady),
    ];
    for (name, f) in phases {
        let r = f(&mut sim, &mut |sim: &Sim| mon.watch(sim, &mut ctl));
        let mut sn = snap(ctl.pid);
        if sn.ctl.threads == 0 {
            // The controller is gone: its last reading stands for the end of the phase.
            if let Some((_, last, _)) = mon.last {
                sn.ctl = last;
            }
        }
        snaps.push((name, sn));
        if name == "register" {
            let (o, d) = procmon::listen_overflows();
            listen = (o.saturating_sub(listen_before.0), d.saturating_sub(listen_before.1));
        }
        if let Err(e) = r {
            error = Some(e);
            failed_phase = Some(name);
            break;
        }
    }
    let fin = procmon::sample(ctl.pid).unwrap_or_default();
    let exited = ctl.exited();
    ctl.stop();
    sim.shutdown();
    let logf = procmon::read_log(&ctl.log);
    if !a.keep_logs && error.is_none() {
        let _ = std::fs::remove_file(&ctl.log);
    }
    let mut r = record(
        &sim,
        &snaps,
        fin,
        &mon,
        &logf,
        error,
        failed_phase,
        exited,
        &ctl.log,
        a.keep_logs,
    );
    r["registration"]["listen_overflows"] = json!(listen.0);
    r["registration"]["listen_drops"] = json!(listen.1);
    r
}

#[allow(clippy::too_many_arguments)]
fn record(
    sim: &Sim,
    snaps: &[(&str, Snap)],
    fin: ProcSample,
    mon: &Monitor,
    logf: &procmon::LogFacts,
    error: Option<String>,
    failed_phase: Option<&str>,
    exited: Option<String>,
    log: &std::path::Path,
    keep_logs: bool,
) -> Value {
    let hosts = sim.plan.hosts;
    let macs = sim.total_macs();
    let get = |n: &str| snaps.iter().find(|(x, _)| *x == n).map(|(_, s)| *s);
    let mut phases = serde_json::Map::new();
    for w in snaps.windows(2) {
        phases.insert(w[1].0.to_string(), phase_json(&w[0].1, &w[1].1));
    }
    let idle = get("idle").expect("idle");
    let reg = get("register");
    let pop = get("populate");
    // Per connection that got through the handshake (all of them, unless registration failed).
    let conns = f64::from(sim.connected.max(1));
    let per_1k_hosts = reg.map(|r| {
        json!({
            "rss_mib": round3((r.ctl.rss_kib.saturating_sub(idle.ctl.rss_kib)) as f64 / 1024.0 / conns * 1000.0),
            "cpu_s": round3((r.ctl.cpu_s - idle.ctl.cpu_s) / conns * 1000.0),
            "threads": round3((r.ctl.threads.saturating_sub(idle.ctl.threads)) as f64 / conns * 1000.0),
        })
    });
    let per_100k_macs = match (reg, pop, sim.known) {
        (Some(r), Some(p), k) if k > 0 => Some(json!({
            "rss_mib": round3((p.ctl.rss_kib.saturating_sub(r.ctl.rss_kib)) as f64 / 1024.0 / f64::from(k) * 100_000.0),
            "cpu_s": round3((p.ctl.cpu_s - r.ctl.cpu_s) / f64::from(k) * 100_000.0),
        })),
        _ => None,
    };
    let reg_secs = match (sim.first_connect, sim.last_registered) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => 0.0,
    };
    let (unans_pop, unans_steady) = sim.unanswered();
    let (fm_min, fm_med, fm_max) = sim.flow_mods_per_switch();
    let sim_rss = procmon::sample(std::process::id()).unwrap_or_default();
    json!({
        "hosts": hosts,
        "macs": macs,
        "ok": error.is_none(),
        "error": error,
        "failed_phase": failed_phase,
        "controller_exit": exited,
        "controller_log": if keep_logs || failed_phase.is_some() { Some(log.display().to_string()) } else { None },
        "registration": {
            "registered": sim.registered,
            "secs": round3(reg_secs),
            "per_s": if reg_secs > 0.0 { round3(f64::from(sim.registered) / reg_secs) } else { 0.0 },
            "connect_to_registered": sim.reg_ms.summary(),
            "connect_errors": sim.t.connect_errors,
            "reconnects": sim.t.reconnects,
            "disconnects": sim.t.disconnects,
            "close_reasons": sim.close_reasons,
        },
        "populate": {
            "macs_learnt": sim.known,
            "secs": round3(sim.populate_secs),
            "macs_per_s": if sim.populate_secs > 0.0 { round3(f64::from(sim.known) / sim.populate_secs) } else { 0.0 },
            "pin_to_flowmod": sim.pin_ms_populate.summary(),
            "unanswered": unans_pop,
            "packet_ins_resent": sim.t.packet_in_resent,
        },
        "steady": {
            "secs": round3(sim.steady_secs),
            "packet_ins": sim.pins_steady_sent,
            "packet_ins_per_s": if sim.steady_secs > 0.0 { round3(sim.pins_steady_sent as f64 / sim.steady_secs) } else { 0.0 },
            "pin_to_flowmod": sim.pin_ms_steady.summary(),
            "unanswered": unans_steady,
            "moves_started": sim.moves_started,
            "moves_per_s": if sim.steady_secs > 0.0 { round3(sim.moves_started as f64 / sim.steady_secs) } else { 0.0 },
            "moves_done": sim.moves_done(),
            "moves_failed": sim.moves_failed,
            "move_to_repointed": sim.move_ms.summary(),
            "switches_per_move": sim.move_holders.summary_counts(),
            "controller_move_ms": logf.move_ms.summary(),
            // etcd: record -> committed latency (the move's durability, behind its re-pointing).
            "store": logf.last_status.as_ref().map(|st| st["store"].clone()),
        },
        "controller": {
            "idle_rss_mib": mib(idle.ctl.rss_kib),
            "rss_mib_after": {
                "register": reg.map(|s| mib(s.ctl.rss_kib)),
                "populate": pop.map(|s| mib(s.ctl.rss_kib)),
                "steady": get("steady").map(|s| mib(s.ctl.rss_kib)),
            },
            "peak_rss_mib": mib(fin.hwm_kib.max(mon.max_rss_kib)),
            "max_threads": mon.max_threads.max(fin.threads),
            "per_1000_hosts": per_1k_hosts,
            "per_100000_macs": per_100k_macs,
            "phases": phases,
            "log": {
                "bytes": logf.bytes,
                "lines": logf.lines,
                "status_lines": logf.status_lines,
                "status_bytes": logf.status_bytes,
                "warnings": logf.warn,
                "errors": logf.error,
                "messages_dropped": logf.dropped,
                "echo_timeouts": logf.echo_timeouts,
                "moves_unconfirmed": logf.move_unconfirmed,
                "first_warnings": logf.first_warnings,
            },
        },
        "simulator": {
            "rss_mib": mib(sim_rss.rss_kib),
            "counts": sim.t,
            "flow_mods_per_switch": { "min": fm_min, "median": fm_med, "max": fm_max },
            "flows_installed": sim.flows_installed(),
            "tunnels": sim.tunnels(),
            "controller_errors": sim.controller_errors,
        },
        "timeline": mon.timeline,
    })
}

fn f(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn fmt_pair(s: &Value) -> String {
    match (f(&s["p50_ms"]), f(&s["p99_ms"])) {
        (Some(a), Some(b)) => format!("{a:.2}/{b:.2}"),
        _ => "-".into(),
    }
}

fn summary_line(r: &Value) -> String {
    if r["ok"] != true {
        return format!(
            "{} hosts: FAILED in {}: {}",
            r["hosts"],
            r["failed_phase"].as_str().unwrap_or("setup"),
            r["error"].as_str().unwrap_or("?")
        );
    }
    format!(
        "{} hosts: {:.0} registrations/s, {:.0} MACs/s, PACKET_IN->FLOW_MOD p50/p99 {} ms, move p50/p99 {} ms, \
         controller peak RSS {} MiB",
        r["hosts"],
        f(&r["registration"]["per_s"]).unwrap_or(0.0),
        f(&r["populate"]["macs_per_s"]).unwrap_or(0.0),
        fmt_pair(&r["steady"]["pin_to_flowmod"]),
        fmt_pair(&r["steady"]["move_to_repointed"]),
        r["controller"]["peak_rss_mib"]
    )
}

fn print_table(doc: &Value) {
    let s = &doc["settings"];
    println!(
        "\nCloud Rack controller at scale ({} backend), {} .. {}\n\
         {} MACs per host, {} hosts per virtual network; steady phase {} s: {} new conversations/s, {} moves/s ({})\n\
         machine: {} CPUs shared by the controller and the simulator; latencies in ms (p50/p99)\n",
        doc["backend"].as_str().unwrap_or("?"),
        doc["started"].as_str().unwrap_or(""),
        doc["finished"].as_str().unwrap_or(""),
        s["macs_per_host"],
        s["hosts_per_vnet"],
        s["steady_secs"],
        s["pin_rate"],
        s["moves_per_sec"],
        s["move_via"].as_str().unwrap_or(""),
        doc["machine"]["cpus"],
    );
    println!(
        "{:>6} {:>8} {:>7} {:>7} {:>13} {:>13} {:>13} {:>13} {:>8} {:>8} {:>9} {:>6} {:>6} {:>6} {:>6} {:>6}",
        "hosts",
        "MACs",
        "reg/s",
        "MACs/s",
        "pin>fm(pop)",
        "pin>fm(load)",
        "move",
        "move(ctl)",
        "RSS MiB",
        "/1k hst",
        "/100kMAC",
        "ctl%",
        "sim%",
        "oth%",
        "thrds",
        "ok"
    );
    for r in doc["results"].as_array().into_iter().flatten() {
        let c = &r["controller"];
        let num = |v: &Value, d: usize| f(v).map_or("-".to_string(), |x| format!("{x:.d$}"));
        println!(
            "{:>6} {:>8} {:>7} {:>7} {:>13} {:>13} {:>13} {:>13} {:>8} {:>8} {:>9} {:>6} {:>6} {:>6} {:>6} {:>6}",
            r["hosts"].to_string(),
            r["macs"].to_string(),
            num(&r["registration"]["per_s"], 0),
            num(&r["populate"]["macs_per_s"], 0),
            fmt_pair(&r["populate"]["pin_to_flowmod"]),
            fmt_pair(&r["steady"]["pin_to_flowmod"]),
            fmt_pair(&r["steady"]["move_to_repointed"]),
            fmt_pair(&r["steady"]["controller_move_ms"]),
            num(&c["peak_rss_mib"], 0),
            num(&c["per_1000_hosts"]["rss_mib"], 1),
            num(&c["per_100000_macs"]["rss_mib"], 1),
            num(&c["phases"]["steady"]["controller_cpu_pct"], 0),
            num(&c["phases"]["steady"]["simulator_cpu_pct"], 0),
            num(&c["phases"]["steady"]["other_processes_cpu_pct"], 0),
            num(&c["max_threads"], 0),
            if r["ok"] == true { "yes" } else { "FAIL" },
        );
    }
    for r in doc["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["ok"] != true)
    {
        println!(
            "  {} hosts failed in {}: {}",
            r["hosts"],
            r["failed_phase"].as_str().unwrap_or("setup"),
            r["error"].as_str().unwrap_or("?")
        );
    }
    println!(
        "\npin>fm: PACKET_IN -> FLOW_MOD on the same switch, during populate (saturating) and the steady phase;\n\
         move: MAC move -> every switch that held it re-pointed (simulator's clock); move(ctl): the controller's \
         own log figure;\nRSS MiB: controller peak; /1k hst and /100kMAC: controller MiB per 1,000 hosts and per \
         100,000 MACs;\nctl%/sim%/oth%: CPU of the controller, the simulator and everything else on the machine during the \
         steady phase (100% = one core);\nthrds: controller threads at most."
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: ScaleArgs,
    }

    fn parse(v: &[&str]) -> ScaleArgs {
        let mut full = vec!["scale"];
        full.extend_from_slice(v);
        Cli::parse_from(full).a
    }

    #[test]
    fn controller_args_pass_through() {
        let a = parse(&[
            "--controller-arg=--etcd",
            "--controller-arg",
            "--tunnel-idle=5s",
            "--backend",
            "etcd",
            "--hosts",
            "10,20",
        ]);
        assert_eq!(a.controller_args, vec!["--etcd", "--tunnel-idle=5s"]);
        assert_eq!(a.backend, Backend::Etcd);
        assert_eq!(a.hosts, vec![10, 20]);
    }

    #[test]
    fn quick_defaults() {
        let a = parse(&["--quick", "--controller-bin", "/bin/sh"]);
        let s = settings(&a).unwrap();
        assert_eq!(s.hosts, vec![100, 1000]);
        assert_eq!(s.macs_per_host, 10);
        assert!(s.json_path.to_string_lossy().contains("results/scale-memory-"));
        assert!(settings(&parse(&["--hosts", "1", "--controller-bin", "/bin/sh"])).is_err());
    }
}
