//! `cloudrack-bench`: Cloud Rack's switch measured side by side with its peers, in network
//! namespaces on this machine. See bench/README.md.

mod cpu;
mod flood;
mod iperf;
mod lossy;
mod migration;
mod ofclient;
mod openflow;
mod report;
mod rr;
mod scale;
mod systems;
mod util;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cpu::{CpuMark, DatapathCpu};
use iperf::Load;
use report::{Metrics, Record, Table, Test};
use systems::{Placement, System, Testbed, TestbedOptions};
use util::{catching, check_interrupted, interrupted, sleep_interruptible, utc_timestamp};

#[derive(Parser)]
#[command(
    name = "cloudrack-bench",
    about = "Cloud Rack benchmarks, side by side with Open vSwitch and the Linux kernel"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Throughput, small-frame rate, latency and CPU cost of the datapath, in one run, for
    /// cloudrack, ovs (userspace), kernel (bridges + VXLAN) and bridge (one Linux bridge).
    Datapath(DatapathArgs),
    /// Live migration of a real QEMU guest under TCP and fixed-rate UDP streams: gaps,
    /// datagrams lost, QEMU downtime and true pause, for cloudrack (with and without the
    /// migrate-in notice at STOP) and Open vSwitch.
    Migration(migration::MigrationArgs),
    /// The OpenFlow pipeline under load, beside Open vSwitch userspace with the same flows: L2
    /// forwarding, a two-table 1,000-rule ACL, and 100,000 installed flows (FLOW_MOD rate to
    /// the barrier, then forwarding again).
    Openflow(openflow::OpenflowArgs),
    /// TCP between VMs on two hosts across a routed WAN that loses packets (a rate-limited
    /// router dropping a random share of what it forwards), cloudrack side by side with the
    /// kernel (bridges + VXLAN), at several loss rates.
    LossyWan(lossy::LossyArgs),
    /// Thousands of simulated switches (OpenFlow 1.3 + TCCS over TCP) against one real
    /// controller: registrations/s, PACKET_IN -> FLOW_MOD latency, MAC move -> re-pointed,
    /// controller CPU and memory per 1,000 hosts and per 100,000 MACs.
    Scale(scale::ScaleArgs),
}

#[derive(Args)]
struct DatapathArgs {
    /// Short smoke-test run: one round, 3 s per iperf3 measurement, 2000 round trips.
    #[arg(long)]
    quick: bool,
    /// Seconds per iperf3 measurement (default 6, or 3 with --quick).
    #[arg(long, value_name = "SECS")]
    duration: Option<u32>,
    /// Where to write the JSON results (default: bench/results/datapath-<date>.json).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Systems to run, comma-separated: cloudrack, ovs, kernel, bridge (default: all).
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    only: Vec<String>,
    /// Timed request/response round trips per latency measurement (default 10000, or 2000
    /// with --quick).
    #[arg(long, value_name = "N")]
    rr_count: Option<u32>,
    /// MTU of the WAN links between hosts; the VMs keep 1500, so the default leaves room for
    /// every tunnel's header (GRE 42 bytes, VXLAN 50) without fragmenting.
    #[arg(long, value_name = "BYTES", default_value_t = 1600)]
    wan_mtu: u32,
    /// Datapath worker threads per cloudrack-switch (default: the switch's own default).
    #[arg(long, value_name = "N")]
    workers: Option<u32>,
    /// Measure everything this many times (taking turns between systems); the table shows the
    /// median, the JSON every round (default 3, or 1 with --quick).
    #[arg(long, value_name = "N")]
    rounds: Option<u32>,
    /// Measurements to make, comma-separated: tcp-1, tcp-4, rr, udp-64, flood-64, zero-loss-64
    /// (default: all, in that order).
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    tests: Vec<String>,
}

/// Resolved settings of one run.
struct Settings {
    seconds: u32,
    rounds: u32,
    rr_count: u32,
    rr_cap: Duration,
    systems: Vec<System>,
    tests: Vec<Test>,
    testbed: TestbedOptions,
    json_path: PathBuf,
}

fn main() {
    util::install_panic_hook();
    util::install_signal_handlers();
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Datapath(a) => match catching(|| datapath(a)) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("cloudrack-bench: {e}");
                2
            }
        },
        Cmd::Migration(a) => match catching(|| migration::run(a)) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("cloudrack-bench: {e}");
                2
            }
        },
        Cmd::Openflow(a) => match catching(|| openflow::run(a)) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("cloudrack-bench: {e}");
                2
            }
        },
        Cmd::LossyWan(a) => match catching(|| lossy::run(a)) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("cloudrack-bench: {e}");
                2
            }
        },
        Cmd::Scale(a) => match catching(|| scale::run(a)) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("cloudrack-bench: {e}");
                2
            }
        },
    };
    std::process::exit(code);
}

fn settings(a: &DatapathArgs) -> Result<Settings, String> {
    let systems = util::select_named(
        "--only",
        &a.only,
        System::ALL,
        System::parse,
        "cloudrack, ovs, kernel, bridge",
    )?;
    let tests = util::select_named(
        "--tests",
        &a.tests,
        Test::ALL,
        Test::parse,
        "tcp-1, tcp-4, rr, udp-64, flood-64, zero-loss-64",
    )?;
    let seconds = a.duration.unwrap_or(if a.quick { 3 } else { 6 });
    if !(1..=600).contains(&seconds) {
        return Err("--duration must be 1..=600 seconds".into());
    }
    let rr_count = a.rr_count.unwrap_or(if a.quick { 2000 } else { 10_000 });
    if rr_count == 0 {
        return Err("--rr-count must be at least 1".into());
    }
    let rounds = a.rounds.unwrap_or(if a.quick { 1 } else { 3 });
    if !(1..=20).contains(&rounds) {
        return Err("--rounds must be 1..=20".into());
    }
    if !(1280..=9000).contains(&a.wan_mtu) {
        return Err("--wan-mtu must be 1280..=9000".into());
    }
    let json_path = a.json.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("results")
            .join(format!("datapath-{}.json", util::utc_file_stamp()))
    });
    Ok(Settings {
        seconds,
        rounds,
        rr_count,
        // A slow path must not stretch the run: latency gets at most this long.
        rr_cap: Duration::from_secs(u64::from(seconds.max(10))),
        systems,
        tests,
        testbed: TestbedOptions {
            wan_mtu: a.wan_mtu,
            workers: a.workers,
            routed_rate: None,
        },
        json_path,
    })
}

/// Refuses to start when nothing could run; warns about what will fail.
fn preflight(systems: &[System]) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root: it creates network namespaces, veth pairs and bridges".into());
    }
    for t in ["ip", "iperf3"] {
        if cloudrack_tests::find_tool(t).is_none() {
            return Err(format!(
                "`{t}` is not installed: run scripts/install-deps.sh (or bench/run-datapath.sh)"
            ));
        }
    }
    if systems.contains(&System::Ovs) {
        for t in ["ovs-vswitchd", "ovsdb-server", "ethtool"] {
            if cloudrack_tests::find_tool(t).is_none() {
                eprintln!("warning: `{t}` is not installed: the ovs measurements will fail");
            }
        }
    }
    if systems.contains(&System::Cloudrack) {
        for b in ["cloudrack-switch", "cloudrack-controller", "cloudrack-ctl"] {
            if catching(|| Ok(cloudrack_tests::bin_path(b))).is_err() {
                eprintln!(
                    "warning: {b} is not built (cargo build --release --workspace): \
                     the cloudrack measurements will fail"
                );
            }
        }
    }
    Ok(())
}

fn datapath(a: DatapathArgs) -> Result<i32, String> {
    let s = settings(&a)?;
    preflight(&s.systems)?;
    let per_round: usize = s.systems.iter().map(|x| x.placements().len() * s.tests.len()).sum();
    let total = per_round * s.rounds as usize;
    let started = utc_timestamp();
    let load_before = loadavg();
    let t_run = Instant::now();
    eprintln!(
        "cloudrack-bench datapath: {}; {total} measurements ({} round{}), {} s per iperf3 run, \
         {} round trips per latency run",
        s.systems.iter().map(|x| x.name()).collect::<Vec<_>>().join(", "),
        s.rounds,
        if s.rounds == 1 { "" } else { "s" },
        s.seconds,
        s.rr_count
    );

    // Every system is set up first and stays up, so that the measurements can take turns:
    // background load on a shared machine then spreads over all systems instead of hitting one.
    let mut beds: Vec<Bed> = s.systems.iter().map(|&sys| Bed::setup(sys, &s.testbed)).collect();
    let mut run = Run {
        s: &s,
        step: 0,
        total,
        port: 5201,
        records: Vec::new(),
    };
    'rounds: for round in 1..=s.rounds {
        for place in [Placement::Cross, Placement::Same] {
            for &test in &s.tests {
                for bed in beds.iter_mut().filter(|b| b.sys.placements().contains(&place)) {
                    run.one(bed, place, test, round);
                }
                if interrupted() {
                    break 'rounds;
                }
            }
        }
    }
    run.mark_not_run(&s.systems);
    let mut system_info = serde_json::Map::new();
    for bed in beds {
        // Logs are kept for real failures, not for what an interruption cut short.
        let failed = run
            .records
            .iter()
            .any(|r| r.sys == bed.sys && !r.ok && !r.error.as_deref().unwrap_or("").contains("interrupted"));
        let sys = bed.sys;
        system_info.insert(sys.name().to_string(), bed.finish(failed));
    }

    let table = Table::build(&run.records, &s.systems);
    let finished = utc_timestamp();
    let load_after = loadavg();
    println!(
        "\nCloud Rack datapath benchmark, {started} .. {finished} ({:.0} s); {} s per iperf3 run, \
         {} round trips per latency run, {} round{} (median shown)",
        t_run.elapsed().as_secs_f64(),
        s.seconds,
        s.rr_count,
        s.rounds,
        if s.rounds == 1 { "" } else { "s" },
    );
    println!(
        "machine: {} CPUs, kernel {}, load average {load_before} before, {load_after} after; \
         WAN MTU {} (a bridge without br_netfilter), VM MTU 1500\n",
        num_cpus(),
        read_trim("/proc/sys/kernel/osrelease"),
        s.testbed.wan_mtu
    );
    if s.systems.contains(&System::Cloudrack) {
        let bins = binaries_info();
        println!(
            "cloudrack binaries: {} (cloudrack-switch built {}); workspace {}\n",
            bins["dir"].as_str().unwrap_or("?"),
            bins["cloudrack-switch"]["modified"].as_str().unwrap_or("?"),
            first_line(&[
                "git",
                "-C",
                &cloudrack_tests::workspace_dir().to_string_lossy(),
                "describe",
                "--always",
                "--dirty",
            ])
            .unwrap_or_default()
        );
    }
    print!("{}", table.render());
    println!(
        "\nCPU accounting: cloudrack = utime+stime of both cloudrack-switch processes, ovs = of \
         both ovs-vswitchd processes (/proc/PID/stat); kernel and bridge = machine-wide softirq \
         time (/proc/stat), which also holds the VMs' own receive path. 'whole machine' = all \
         non-idle CPU time (iperf3 and the VMs' stacks included). Per worker: cloudrack \
         --workers threads, ovs the threads polling its ports (the main thread without PMDs)."
    );

    let doc = json!({
        "bench": "datapath",
        "started": started,
        "finished": finished,
        "run_seconds": t_run.elapsed().as_secs_f64(),
        "interrupted": interrupted(),
        "config": {
            "quick": a.quick,
            "rounds": s.rounds,
            "iperf3_seconds": s.seconds,
            "rr_count": s.rr_count,
            "rr_time_cap_s": s.rr_cap.as_secs_f64(),
            "wan_mtu": s.testbed.wan_mtu,
            "vm_mtu": 1500,
            "cloudrack_workers_flag": s.testbed.workers,
            "udp_payload_bytes": UDP_LEN,
            "systems": s.systems.iter().map(|x| x.name()).collect::<Vec<_>>(),
            "tests": s.tests.iter().map(|x| x.name()).collect::<Vec<_>>(),
        },
        "machine": {
            "cpus": num_cpus(),
            "kernel": read_trim("/proc/sys/kernel/osrelease"),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "iperf3": first_line(&["iperf3", "--version"]),
            "ovs": first_line(&["ovs-vswitchd", "--version"]),
            "cloudrack_binaries": binaries_info(),
            "cloudrack_commit": first_line(&[
                "git", "-C", &cloudrack_tests::workspace_dir().to_string_lossy(),
                "describe", "--always", "--dirty",
            ]),
        },
        "systems": system_info,
        "results": run.records,
        "table": table.to_json(),
    });
    crate::util::write_json(&s.json_path, &doc)?;
    eprintln!("JSON written to {}", s.json_path.display());
    Ok(if interrupted() {
        130
    } else if run.records.iter().all(|r| r.ok) {
        0
    } else {
        1
    })
}

const UDP_LEN: u32 = 64;
/// TCP below this rate between two VMs on one machine means a broken path.
const STALLED_BPS: f64 = 10e6;

/// One system under test, set up (or not) for the whole run.
struct Bed {
    sys: System,
    tb: Option<Testbed>,
    /// Why it could not be set up.
    setup_error: Option<String>,
    /// Set once a daemon of it has died: later measurements are not attempted.
    dead: Option<String>,
    dp: Option<DatapathCpu>,
    workers: Option<u32>,
    info: Value,
}

impl Bed {
    fn setup(sys: System, opts: &TestbedOptions) -> Bed {
        let mut bed = Bed {
            sys,
            tb: None,
            setup_error: None,
            dead: None,
            dp: None,
            workers: None,
            info: json!({ "description": sys.description() }),
        };
        if interrupted() {
            bed.setup_error = Some("interrupted (not set up)".into());
            return bed;
        }
        eprintln!("== {}: setting up ({})", sys.name(), sys.description());
        let t0 = Instant::now();
        match catching(|| Ok(Testbed::setup(sys, opts))) {
            Ok(mut tb) => {
                bed.info["setup_seconds"] = json!(t0.elapsed().as_secs_f64());
                let dp = tb.datapath_cpu().clone();
                bed.workers = tb.workers();
                bed.info["datapath_cpu"] = json!(dp.describe());
                bed.info["workers"] = json!(bed.workers);
                bed.dp = Some(dp);
                bed.tb = Some(tb);
            }
            Err(e) => {
                eprintln!("== {}: setup FAILED: {e}", sys.name());
                bed.info["error"] = json!(e);
                bed.setup_error = Some(format!("setup failed: {e}"));
            }
        }
        bed
    }

    /// Collects counters and diagnostics, keeps the logs if something failed, tears it down.
    fn finish(mut self, failed: bool) -> Value {
        if let Some(tb) = self.tb.as_mut() {
            let drops = tb.drop_counters();
            if !drops.is_empty() {
                eprintln!("   {} datapath drop counters: {drops:?}", self.sys.name());
            }
            let drops: serde_json::Map<String, Value> = drops.into_iter().map(|(k, v)| (k, json!(v))).collect();
            self.info["drop_counters"] = Value::Object(drops);
            self.info["diagnostics"] = catching(|| Ok(tb.diagnostics())).unwrap_or_else(|e| json!(e));
            if failed {
                if let Some(p) = tb.keep_logs() {
                    eprintln!("   {} logs kept in {}", self.sys.name(), p.display());
                    self.info["logs_kept"] = json!(p);
                }
            }
            eprintln!("== {}: tearing down", self.sys.name());
        }
        if let Some(d) = &self.dead {
            self.info["died"] = json!(d);
        }
        drop(self.tb.take());
        self.info
    }
}

struct Run<'a> {
    s: &'a Settings,
    step: usize,
    total: usize,
    port: u16,
    records: Vec<Record>,
}

impl Run<'_> {
    /// One measurement of one system, recorded whatever happens.
    fn one(&mut self, bed: &mut Bed, place: Placement, test: Test, round: u32) {
        self.step += 1;
        let round_note = if self.s.rounds > 1 {
            format!(" (round {round}/{})", self.s.rounds)
        } else {
            String::new()
        };
        eprint!(
            "[{}/{}] {} {} {}{round_note} ... ",
            self.step,
            self.total,
            bed.sys.name(),
            test.name(),
            place.name()
        );
        let t = Instant::now();
        let port = self.port;
        self.port = if self.port >= 60000 { 5201 } else { self.port + 1 };
        let outcome = match (&bed.setup_error, &bed.dead, bed.tb.as_mut(), bed.dp.as_ref()) {
            (Some(e), _, _, _) => Err(e.clone()),
            (None, Some(d), _, _) => Err(format!("not measured, the datapath died earlier: {d}")),
            (None, None, Some(tb), Some(dp)) => {
                let s = self.s;
                let workers = bed.workers;
                let o = catching(|| {
                    tb.warm_up(place).map_err(|e| format!("no connectivity: {e}"))?;
                    measure(tb, dp, place, test, s, port, workers)
                });
                match (o, tb.health()) {
                    (o, Ok(())) => o,
                    (o, Err(h)) => {
                        bed.dead = Some(h.clone());
                        match o {
                            Ok(_) => Err(format!("the datapath died during the run: {h}")),
                            Err(e) => Err(format!("{e}; the datapath died: {h}")),
                        }
                    }
                }
            }
            _ => Err("not set up".into()),
        };
        let secs = t.elapsed().as_secs_f64();
        match &outcome {
            Ok(m) => eprintln!("{} ({secs:.1} s)", summary(test, m)),
            Err(e) => eprintln!("ERROR: {e}"),
        }
        self.records
            .push(Record::new(bed.sys, place, test, round, outcome, secs));
        // Let queues drain and sockets close before the next one.
        let _ = sleep_interruptible(Duration::from_millis(300));
    }

    /// What an interruption left unmeasured still gets a record.
    fn mark_not_run(&mut self, systems: &[System]) {
        for round in 1..=self.s.rounds {
            for &sys in systems {
                for &place in sys.placements() {
                    for &test in &self.s.tests {
                        let done = self
                            .records
                            .iter()
                            .any(|r| r.sys == sys && r.place == place && r.kind == test && r.round == round);
                        if !done {
                            self.records.push(Record::new(
                                sys,
                                place,
                                test,
                                round,
                                Err("interrupted (not run)".into()),
                                0.0,
                            ));
                        }
                    }
                }
            }
        }
    }
}

fn measure(
    tb: &Testbed,
    dp: &DatapathCpu,
    place: Placement,
    test: Test,
    s: &Settings,
    port: u16,
    workers: Option<u32>,
) -> Result<Metrics, String> {
    check_interrupted()?;
    let pair = tb.pair(place).ok_or_else(|| format!("no {} VM pair", place.name()))?;
    let mut m = Metrics::default();
    match test {
        Test::Tcp1 | Test::Tcp4 => {
            let streams = if test == Test::Tcp4 { 4 } else { 1 };
            let server = iperf::Server::start(pair.server, port)?;
            let mark = CpuMark::take(dp);
            let v = iperf::client(pair.client, pair.server_ip, port, Load::Tcp { streams }, s.seconds)
                .map_err(|e| format!("{e}; server log: {}", server.log_tail()))?;
            let cpu = mark.usage_since(dp);
            let r = iperf::parse_tcp(&v)?;
            let gbit = r.bytes * 8.0 / 1e9;
            m.gbps = Some(r.bits_per_second / 1e9);
            m.bytes = Some(r.bytes);
            m.retransmits = r.retransmits;
            if gbit > 0.0 {
                m.datapath_cpu_s_per_gbit = cpu.datapath_s.map(|c| c / gbit);
                m.softirq_s_per_gbit = Some(cpu.softirq_s / gbit);
                m.machine_cpu_s_per_gbit = Some(cpu.machine_busy_s / gbit);
            }
            m.cpu = Some(cpu);
            // Under 10 Mbit/s on this path it is broken, not slow: a failure to report, not a
            // figure to divide by.
            if r.bits_per_second < STALLED_BPS {
                return Err(format!(
                    "TCP stalled: {:.0} bytes received in {} s ({:.3} Mbit/s), {} retransmits",
                    r.bytes,
                    s.seconds,
                    r.bits_per_second / 1e6,
                    r.retransmits.map(|x| x.to_string()).unwrap_or("?".into())
                ));
            }
        }
        Test::Udp64 => {
            let server = iperf::Server::start(pair.server, port)?;
            let mut bytes = 0.0;
            let r = frame_rates(&mut m, &pair, dp, workers, || {
                let v = iperf::client(pair.client, pair.server_ip, port, Load::Udp { len: UDP_LEN }, s.seconds)
                    .map_err(|e| format!("{e}; server log: {}", server.log_tail()))?;
                let r = iperf::parse_udp(&v, UDP_LEN)?;
                bytes = r.bytes;
                Ok(FrameCounts {
                    sent: r.sent,
                    delivered: r.delivered,
                    seconds: r.seconds,
                    lost_percent: Some(r.lost_percent),
                })
            })?;
            m.bytes = Some(bytes);
            if r.delivered <= 0.0 {
                return Err(format!(
                    "no datagram arrived ({:.0} sent, loss {:.1} %)",
                    r.sent,
                    r.lost_percent.unwrap_or(0.0)
                ));
            }
        }
        Test::Flood64 => {
            let r = frame_rates(&mut m, &pair, dp, workers, || {
                let r = flood::run(
                    pair.server,
                    pair.client,
                    pair.server_ip,
                    port,
                    UDP_LEN as usize,
                    s.seconds,
                )?;
                let (sent, received) = (r.sent as f64, r.received as f64);
                Ok(FrameCounts {
                    sent,
                    delivered: received,
                    seconds: r.seconds,
                    lost_percent: (r.sent > 0).then(|| 100.0 * (1.0 - received / sent)),
                })
            })?;
            if r.delivered <= 0.0 {
                return Err(format!("no datagram arrived ({} sent)", r.sent));
            }
        }
        Test::ZeroLoss64 => {
            // Eight trials (one unpaced, seven paced) take about three measurement lengths.
            let trial = (f64::from(s.seconds) / 3.0).clamp(1.0, 3.0);
            let mark = CpuMark::take(dp);
            let z = flood::zero_loss(pair.server, pair.client, pair.server_ip, port, UDP_LEN as usize, trial)?;
            m.cpu = Some(mark.usage_since(dp));
            m.workers = workers;
            if z.flood_delivered_fps <= 0.0 {
                return Err("no datagram arrived in the unpaced trial".to_string());
            }
            m.zero_loss = Some(z);
        }
        Test::Rr => {
            let r = rr::run(pair.server, pair.client, pair.server_ip, port, s.rr_count, s.rr_cap)?;
            m.rr = Some(r);
        }
    }
    Ok(m)
}

/// What a small-frame test counted at the VMs' sockets.
struct FrameCounts {
    sent: f64,
    delivered: f64,
    /// How long the sender sent.
    seconds: f64,
    lost_percent: Option<f64>,
}

/// Runs the small-frame test `f` between two readings of both VMs' NIC counters and of the
/// datapath's CPU, and fills the small-frame figures from them and from what `f` counted.
fn frame_rates(
    m: &mut Metrics,
    pair: &systems::Pair,
    dp: &DatapathCpu,
    workers: Option<u32>,
    f: impl FnOnce() -> Result<FrameCounts, String>,
) -> Result<FrameCounts, String> {
    let rx0 = nic_packets(pair.server);
    let tx0 = nic_packets(pair.client);
    let mark = CpuMark::take(dp);
    let r = f()?;
    let cpu = mark.usage_since(dp);
    let rx = delta(rx0, nic_packets(pair.server), |c| c.0);
    let tx = delta(tx0, nic_packets(pair.client), |c| c.1);
    let secs = r.seconds.max(1e-9);
    let fps = r.delivered / secs;
    m.udp_nic_rx_fps = rx.map(|n| n / secs);
    m.udp_nic_tx_fps = tx.map(|n| n / secs);
    m.udp_sent_fps = Some(r.sent / secs);
    m.udp_delivered_fps = Some(fps);
    m.udp_loss_percent = r.lost_percent;
    m.workers = workers;
    m.udp_delivered_fps_per_worker = workers.map(|w| fps / f64::from(w.max(1)));
    // Per frame the datapath handed to the server VM (what the receiver got if the NIC
    // counter is unavailable).
    let forwarded = rx.unwrap_or(r.delivered);
    if forwarded > 0.0 {
        m.datapath_cpu_us_per_frame = cpu.datapath_s.map(|c| c * 1e6 / forwarded);
    }
    m.cpu = Some(cpu);
    Ok(r)
}

/// Which cloudrack binaries ran: their directory, and each one's size and modification time
/// (the working tree may be rebuilt by others between runs).
fn binaries_info() -> Value {
    let mut v = json!({});
    for b in ["cloudrack-switch", "cloudrack-controller", "cloudrack-ctl"] {
        if let Ok(p) = catching(|| Ok(cloudrack_tests::bin_path(b))) {
            if let Some(dir) = p.parent() {
                v["dir"] = json!(dir);
            }
            if let Ok(md) = std::fs::metadata(&p) {
                let modified = md
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| util::utc_timestamp_of(d.as_secs() as i64));
                v[b] = json!({ "size": md.len(), "modified": modified });
            }
        }
    }
    v
}

/// (rx, tx) packet counters of a VM's `eth0`, from `ip -s -j link` inside its namespace.
fn nic_packets(ns: &cloudrack_tests::Netns) -> Option<(f64, f64)> {
    let o = ns.exec(&["ip", "-s", "-j", "link", "show", "dev", "eth0"]);
    if !o.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&o.stdout).ok()?;
    let st = &v.get(0)?["stats64"];
    Some((st["rx"]["packets"].as_f64()?, st["tx"]["packets"].as_f64()?))
}

fn delta(before: Option<(f64, f64)>, after: Option<(f64, f64)>, pick: fn((f64, f64)) -> f64) -> Option<f64> {
    let (a, b) = (pick(before?), pick(after?));
    (b >= a).then_some(b - a)
}

fn summary(test: Test, m: &Metrics) -> String {
    let f = |x: Option<f64>, d: usize| x.map(|v| format!("{v:.d$}")).unwrap_or("?".into());
    match test {
        Test::Tcp1 | Test::Tcp4 => format!(
            "{} Gbit/s, {} retransmits, datapath {} CPU s/Gbit",
            f(m.gbps, 2),
            m.retransmits.map(|r| r.to_string()).unwrap_or("?".into()),
            f(m.datapath_cpu_s_per_gbit, 3)
        ),
        Test::ZeroLoss64 => match &m.zero_loss {
            Some(z) => format!(
                "{:.0} kframes/s lost at most {} % ({} trials; unpaced {:.0} kframes/s arrived)",
                z.rate / 1e3,
                flood::ZERO_LOSS_TOLERANCE * 100.0,
                z.trials.len(),
                z.flood_delivered_fps / 1e3
            ),
            None => "?".into(),
        },
        Test::Flood64 | Test::Udp64 => format!(
            "{} kframes/s {} of {} sent ({} % lost), {} kframes/s into the VM's NIC",
            f(m.udp_delivered_fps.map(|x| x / 1e3), 0),
            if test == Test::Flood64 { "counted" } else { "to iperf3" },
            f(m.udp_sent_fps.map(|x| x / 1e3), 0),
            f(m.udp_loss_percent, 1),
            f(m.udp_nic_rx_fps.map(|x| x / 1e3), 0),
        ),
        Test::Rr => match m.rr {
            Some(r) => format!(
                "p50 {:.1} us, p99 {:.1} us ({} round trips)",
                r.p50_us, r.p99_us, r.count
            ),
            None => "?".into(),
        },
    }
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn loadavg() -> String {
    read_trim("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn first_line(argv: &[&str]) -> Option<String> {
    let o = std::process::Command::new(cloudrack_tests::find_tool(argv[0])?)
        .args(&argv[1..])
        .output()
        .ok()?;
    if !o.status.success() {
        return None;
    }
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> DatapathArgs {
        let mut full = vec!["cloudrack-bench", "datapath"];
        full.extend_from_slice(v);
        match Cli::parse_from(full).cmd {
            Cmd::Datapath(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn only_is_ordered_and_validated() {
        let s = settings(&args(&["--only", "bridge,cloudrack", "--quick"])).unwrap();
        assert_eq!(s.systems, vec![System::Cloudrack, System::Bridge]);
        assert_eq!(s.seconds, 3);
        assert!(settings(&args(&["--only", "nope"])).is_err());
        let s = settings(&args(&["--duration", "7"])).unwrap();
        assert_eq!(s.seconds, 7);
        assert_eq!(s.systems.len(), 4);
        assert_eq!(s.tests.len(), Test::ALL.len());
        let s = settings(&args(&["--tests", "flood-64,tcp-1"])).unwrap();
        assert_eq!(s.tests, vec![Test::Tcp1, Test::Flood64]);
        assert!(settings(&args(&["--tests", "tcp-2"])).is_err());
        assert!(s.json_path.to_string_lossy().contains("results/datapath-"));
    }
}
