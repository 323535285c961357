//! `cloudrack-bench migration`: the paper's live-migration experiment, Cloud Rack side by side
//! with Open vSwitch. Three host namespaces on a WAN; VM1 (a real QEMU guest) on host A, VM2 on
//! host B; VM2 live-migrates B → C (and back, C → B, on the next measurement) while VM1 streams
//! iperf3 TCP or fixed-rate UDP to it, sampled every 100 ms. See bench/README.md.

use clap::Args;
use cloudrack_tests::{
    bin_path, cloudrack_vm_path, ensure_guest_image, Cluster, HostNet, Netns, OvsHost, QemuVm, TestLogs, VmSpec, WAN_IF,
};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::util::{catching, interrupted, run_with_timeout, sleep_interruptible, utc_file_stamp, utc_timestamp};

const VNET: u32 = 7;
const VM1_MAC: &str = "52:54:00:4d:00:01";
const VM2_MAC: &str = "52:54:00:4d:00:02";
/// Socket receive buffer in the guests (bytes).
const GUEST_RMEM: u32 = 8 << 20;

fn guest_rmem_cmd() -> String {
    format!("echo {GUEST_RMEM} > /proc/sys/net/core/rmem_max; echo {GUEST_RMEM} > /proc/sys/net/core/rmem_default")
}
const VM1_IP: &str = "10.78.0.1";
const VM2_IP: &str = "10.78.0.2";
/// 1500-byte underlay minus GRE's 42 bytes.
const GUEST_MTU: u32 = 1458;
/// UDP payload: fits the guest MTU (1458 - 28) without IP fragments.
const UDP_LEN: u32 = 1400;
const IPERF_PORT: u16 = 5201;

#[derive(Args)]
pub struct MigrationArgs {
    /// Measurements per system and test (default 5, or 1 with --quick); the table shows the
    /// median with min..max.
    #[arg(long, value_name = "N")]
    runs: Option<u32>,
    /// Smoke test: one run, 8 s streams.
    #[arg(long)]
    quick: bool,
    /// Where to write the JSON results (default: bench/results/migration-<date>.json).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Systems, comma-separated: cloudrack, cloudrack-reactive, ovs (default: all).
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    only: Vec<String>,
    /// UDP rates, comma-separated, iperf3 syntax (default 20M,100M).
    #[arg(long, value_name = "RATES", value_delimiter = ',')]
    rates: Vec<String>,
    /// Seconds of each stream that spans a migration (default 10, or 8 with --quick).
    #[arg(long, value_name = "SECS")]
    stream_secs: Option<u32>,
    /// Seconds into the stream at which the migration starts.
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    migrate_at: f64,
    /// Seconds of the static (no migration) TCP measurement.
    #[arg(long, value_name = "SECS", default_value_t = 4)]
    static_secs: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sys {
    Cloudrack,
    CloudrackReactive,
    Ovs,
}

impl Sys {
    const ALL: [Sys; 3] = [Sys::Cloudrack, Sys::CloudrackReactive, Sys::Ovs];
    fn name(self) -> &'static str {
        match self {
            Sys::Cloudrack => "cloudrack",
            Sys::CloudrackReactive => "cloudrack-reactive",
            Sys::Ovs => "ovs",
        }
    }
    fn description(self) -> &'static str {
        match self {
            Sys::Cloudrack => {
                "cloudrack-controller + cloudrack-switch per host; QEMU taps as system ports; \
                 `cloudrack-vm migrate --on-stop 'cloudrack-ctl migrate-in DST_TAP --mac VM2'` \
                 points every switch at the destination at the source's STOP event"
            }
            Sys::CloudrackReactive => {
                "cloudrack as above, without --on-stop: the controller reacts to QEMU's RARP \
                 announce from the destination"
            }
            Sys::Ovs => {
                "Open vSwitch userspace (Debian), br-phy with the underlay IP, br-int netdev NORMAL, \
                 keyed GRE hub: A-B and A-C (no B-C tunnel, so no broadcast loop); guest TX \
                 offloads off (OVS's AF_PACKET ports need it)"
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Test {
    StaticTcp,
    Tcp,
    Udp { rate: String, bps: f64 },
}

impl Test {
    fn name(&self) -> String {
        match self {
            Test::StaticTcp => "tcp-static".into(),
            Test::Tcp => "tcp".into(),
            Test::Udp { rate, .. } => format!("udp-{rate}"),
        }
    }
}

fn parse_rate(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1e3),
        'm' | 'M' => (&s[..s.len() - 1], 1e6),
        'g' | 'G' => (&s[..s.len() - 1], 1e9),
        _ => (s, 1.0),
    };
    let v: f64 = num.parse().ok()?;
    (v > 0.0).then_some(v * mult)
}

struct Settings {
    runs: u32,
    systems: Vec<Sys>,
    tests: Vec<Test>,
    stream_secs: u32,
    migrate_at: f64,
    static_secs: u32,
    json_path: PathBuf,
}

fn settings(a: &MigrationArgs) -> Result<Settings, String> {
    let systems = crate::util::select_named(
        "--only",
        &a.only,
        Sys::ALL,
        |n| Sys::ALL.into_iter().find(|x| x.name() == n),
        "cloudrack, cloudrack-reactive, ovs",
    )?;
    let mut tests = vec![Test::StaticTcp, Test::Tcp];
    let rates: Vec<String> = if a.rates.is_empty() {
        vec!["20M".into(), "100M".into()]
    } else {
        a.rates
            .iter()
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect()
    };
    for r in rates {
        let bps = parse_rate(&r).ok_or_else(|| format!("--rates: bad rate {r:?} (e.g. 20M)"))?;
        tests.push(Test::Udp { rate: r, bps });
    }
    let runs = a.runs.unwrap_or(if a.quick { 1 } else { 5 });
    if !(1..=50).contains(&runs) {
        return Err("--runs must be 1..=50".into());
    }
    let stream_secs = a.stream_secs.unwrap_or(if a.quick { 8 } else { 10 });
    if !(3..=120).contains(&stream_secs) || a.migrate_at < 0.5 || a.migrate_at + 2.0 > f64::from(stream_secs) {
        return Err("need 3 <= --stream-secs <= 120 and 0.5 <= --migrate-at <= stream-secs - 2".into());
    }
    let json_path = a.json.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("results")
            .join(format!("migration-{}.json", utc_file_stamp()))
    });
    Ok(Settings {
        runs,
        systems,
        tests,
        stream_secs,
        migrate_at: a.migrate_at,
        static_secs: a.static_secs.clamp(1, 60),
        json_path,
    })
}

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn vm_tool(args: &[&str], timeout: Duration) -> Result<crate::util::Finished, String> {
    let mut c = Command::new("python3");
    c.arg(cloudrack_vm_path()).args(args);
    run_with_timeout("cloudrack-vm", c, timeout)
}

/// Runs a shell command line in the guest of run directory `dir`.
fn guest(dir: &Path, script: &str, timeout_s: u64) -> Result<String, String> {
    let t = timeout_s.to_string();
    let d = dir.to_string_lossy();
    let f = vm_tool(
        &["exec", "--dir", &d, "--timeout", &t, "--", script],
        Duration::from_secs(timeout_s + 15),
    )?;
    if f.status.success() {
        Ok(f.stdout)
    } else {
        Err(format!(
            "`{script}` in the guest exited with {}: {} {}",
            f.status,
            f.stdout.trim(),
            f.stderr.trim()
        ))
    }
}

enum Net {
    Cr(Box<Cluster>),
    Ovs { hosts: Vec<OvsHost>, net: HostNet },
}

/// One system with its two VMs. Field order is drop order: the VMs go first.
struct Bed {
    vm2: QemuVm,
    vm1: QemuVm,
    net: Net,
    sys: Sys,
    vm2_host: usize,
    vm2_tap: String,
    migrations: u32,
    _logs: TestLogs,
}

impl Bed {
    fn host_ns(&self, i: usize) -> &Netns {
        match &self.net {
            Net::Cr(c) => &c.net[i].ns,
            Net::Ovs { net, .. } => &net[i].ns,
        }
    }

    fn underlay_ip(&self, i: usize) -> String {
        match &self.net {
            Net::Cr(c) => c.net[i].underlay_ip.to_string(),
            Net::Ovs { net, .. } => net[i].underlay_ip.to_string(),
        }
    }

    /// Attach a VM's tap, bound to the VM's MAC (on Cloud Rack, only a bound port may take a
    /// MAC over: the migration destination declares its VM this way).
    fn attach(&self, i: usize, tap: &str, mac: &str) {
        match &self.net {
            Net::Cr(c) => {
                let vnet = VNET.to_string();
                c.ctl(i, &["add-port", tap, "--kind", "system", "--vnet", &vnet, "--mac", mac]);
            }
            Net::Ovs { hosts, .. } => hosts[i].add_port("br-int", tap),
        }
    }

    fn detach(&self, i: usize, tap: &str) {
        let _ = catching(|| {
            match &self.net {
                Net::Cr(c) => {
                    c.ctl(i, &["del-port", tap]);
                }
                Net::Ovs { hosts, .. } => {
                    hosts[i].vsctl(&["--if-exists", "del-port", "br-int", tap]);
                }
            }
            Ok(())
        });
    }

    fn controller_log(&self) -> String {
        match &self.net {
            Net::Cr(c) => c.controller.as_ref().map(|p| p.logs()).unwrap_or_default(),
            Net::Ovs { .. } => String::new(),
        }
    }

    fn setup(sys: Sys) -> Bed {
        let logs = TestLogs::new(&format!("bench-migration-{}", sys.name()));
        let net = match sys {
            Sys::Cloudrack | Sys::CloudrackReactive => Net::Cr(Box::new(Cluster::start(3, &[]))),
            Sys::Ovs => {
                let net = HostNet::new(3);
                let hosts: Vec<OvsHost> = (0..3)
                    .map(|i| {
                        let o = OvsHost::start(&net[i].ns);
                        o.setup_underlay(WAN_IF, &net[i].underlay_cidr);
                        o.add_bridge("br-int");
                        o
                    })
                    .collect();
                // A hub: A <-> B and A <-> C. With NORMAL and a full mesh, a broadcast from B
                // would go A -> C -> B ... forever; a tree has no loop.
                for (a, b) in [(0usize, 1usize), (0, 2)] {
                    hosts[a].add_gre_port("br-int", &format!("gre{b}"), &net[b].underlay_ip.to_string(), VNET);
                    hosts[b].add_gre_port("br-int", &format!("gre{a}"), &net[a].underlay_ip.to_string(), VNET);
                }
                Net::Ovs { hosts, net }
            }
        };
        let spec1 = VmSpec::new("vm1", VM1_MAC, &format!("{VM1_IP}/24"), Some(GUEST_MTU));
        let spec2 = VmSpec::new("vm2", VM2_MAC, &format!("{VM2_IP}/24"), Some(GUEST_MTU));
        let (ns0, ns1) = match &net {
            Net::Cr(c) => (&c.net[0].ns, &c.net[1].ns),
            Net::Ovs { net, .. } => (&net[0].ns, &net[1].ns),
        };
        let vm1 = QemuVm::start(ns0, "vm1t", &spec1, None);
        let vm2 = QemuVm::start(ns1, "vm2t0", &spec2, None);
        let bed = Bed {
            vm2,
            vm1,
            net,
            sys,
            vm2_host: 1,
            vm2_tap: "vm2t0".into(),
            migrations: 0,
            _logs: logs,
        };
        bed.attach(0, "vm1t", VM1_MAC);
        bed.attach(1, "vm2t0", VM2_MAC);
        bed.vm1.wait_ready(Duration::from_secs(120));
        bed.vm2.wait_ready(Duration::from_secs(120));
        if sys == Sys::Ovs {
            for vm in [&bed.vm1, &bed.vm2] {
                vm.run("ethtool -K eth0 tx off tso off gso off", Duration::from_secs(20));
            }
        }
        // Socket buffers of a server rather than a tiny guest's 208 KB: the TCG guest slows at
        // the end of pre-copy and overflows its UDP socket on the burst after RESUME, which is
        // loss inside the guest, not in the network. The same for every system.
        for vm in [&bed.vm1, &bed.vm2] {
            vm.run(&guest_rmem_cmd(), Duration::from_secs(20));
        }
        bed.vm2.run(
            &format!("iperf3 -s -D -J -i 0.1 -p {IPERF_PORT}"),
            Duration::from_secs(20),
        );
        bed.reachable().unwrap_or_else(|e| panic!("{e}"));
        bed
    }

    /// If VM2's QEMU is gone (e.g. its guest kernel panicked after a migration), boots a fresh
    /// VM2 on host B so the next measurements can run. Returns whether it did.
    fn revive_vm2(&mut self) -> Result<bool, String> {
        if self.vm2.process_alive() {
            return Ok(false);
        }
        let dead_console =
            crate::util::last_lines(&cloudrack_tests::tail_file(&self.vm2.dir.join("console.log"), 12), 12);
        eprint!(
            "(VM2's QEMU on host {} is gone, console: {dead_console:?}; booting a new VM2 on host 1) ",
            self.vm2_host
        );
        let old_tap = self.vm2_tap.clone();
        self.detach(self.vm2_host, &old_tap);
        self.migrations += 1;
        let tap = format!("vm2t{}", self.migrations);
        let spec2 = self.vm2.spec.clone();
        let vm = catching(|| Ok(QemuVm::start(self.host_ns(1), &tap, &spec2, None)))?;
        self.attach(1, &tap, VM2_MAC);
        let mut old = std::mem::replace(&mut self.vm2, vm);
        old.stop();
        self.vm2_host = 1;
        self.vm2_tap = tap;
        catching(|| {
            self.vm2.wait_ready(Duration::from_secs(120));
            if self.sys == Sys::Ovs {
                self.vm2
                    .run("ethtool -K eth0 tx off tso off gso off", Duration::from_secs(20));
            }
            self.vm2.run(&guest_rmem_cmd(), Duration::from_secs(20));
            self.vm2.run(
                &format!("iperf3 -s -D -J -i 0.1 -p {IPERF_PORT}"),
                Duration::from_secs(20),
            );
            Ok(())
        })?;
        Ok(true)
    }

    /// VM1 pings VM2 until it answers (ARP, learnt MACs, flows and tunnels in place).
    fn reachable(&self) -> Result<(), String> {
        let mut last = String::new();
        for _ in 0..8 {
            match guest(&self.vm1.dir, &format!("ping -c 2 -W 2 {VM2_IP}"), 15) {
                Ok(_) => return Ok(()),
                Err(e) => last = e,
            }
            if interrupted() {
                break;
            }
        }
        Err(format!(
            "VM1 cannot ping VM2 ({VM2_IP}) on host {}: {last}",
            self.vm2_host
        ))
    }
}

/// One 100 ms sample, from the iperf3 server (receiver) side.
#[derive(Clone, Copy)]
struct Sample {
    start: f64,
    end: f64,
    mbps: f64,
    lost: i64,
    packets: i64,
}

/// The 100 ms samples of the receiver (iperf3 server, `server == true`) or of the sender.
fn samples(v: &Value, server: bool) -> Vec<Sample> {
    let ivs = if server {
        v["server_output_json"]["intervals"].as_array()
    } else {
        v["intervals"].as_array()
    };
    ivs.map(|a| {
        a.iter()
            .map(|i| {
                let s = &i["sum"];
                Sample {
                    start: s["start"].as_f64().unwrap_or(0.0),
                    end: s["end"].as_f64().unwrap_or(0.0),
                    mbps: s["bits_per_second"].as_f64().unwrap_or(0.0) / 1e6,
                    lost: s["lost_packets"].as_i64().unwrap_or(0),
                    packets: s["packets"].as_i64().unwrap_or(0),
                }
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Host time (epoch s) of the first event of `side` named `event` (with `status`, if given).
fn event_ts(mig: &Value, side: &str, event: &str, status: Option<&str>) -> Option<f64> {
    mig["events"].as_array()?.iter().find_map(|e| {
        let ok = e["side"] == side && e["event"] == event && status.is_none_or(|st| e["data"]["status"] == st);
        if ok {
            e["ts"].as_f64()
        } else {
            None
        }
    })
}

/// (UDP InErrors, RcvbufErrors) of the guest, from /proc/net/snmp.
fn guest_udp_errors(dir: &Path) -> Option<(i64, i64)> {
    let out = guest(dir, "grep '^Udp:' /proc/net/snmp", 15).ok()?;
    let mut lines = out.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let vals: Vec<&str> = lines.next()?.split_whitespace().collect();
    let get = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .and_then(|i| vals.get(i)?.parse().ok())
    };
    Some((get("InErrors")?, get("RcvbufErrors")?))
}

/// A tap's host-side counters (tx = frames handed to the VM, tx_dropped = frames the tap
/// could not queue for it).
fn tap_stats(ns: &Netns, tap: &str) -> Value {
    let o = ns.exec(&["ip", "-s", "-j", "link", "show", "dev", tap]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    let st = &v[0]["stats64"];
    json!({ "tx_packets": st["tx"]["packets"], "tx_dropped": st["tx"]["dropped"], "rx_packets": st["rx"]["packets"] })
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// The outage in `s` against `ref_mbps` (the throughput before the migration):
/// * the longest run of ~zero samples (below 5 % of it), in ms;
/// * the traffic missing in the longest run of samples below half of it, in ms at that rate
///   (sum of (1 - sample/ref) x sample length): a sample half empty counts half;
/// * where that run starts, in s into the stream.
fn longest_gap(s: &[Sample], ref_mbps: f64) -> (f64, f64, Option<f64>) {
    let runs = |thr: f64| {
        let (mut best, mut best_at, mut i) = (0.0, None, 0);
        while i < s.len() {
            if s[i].mbps < thr && s[i].end - s[i].start > 0.02 {
                let (j0, mut zero_ms, mut deficit_ms) = (i, 0.0, 0.0);
                while i < s.len() && s[i].mbps < thr {
                    let dur = (s[i].end - s[i].start) * 1000.0;
                    zero_ms += dur;
                    deficit_ms += (1.0 - s[i].mbps / ref_mbps.max(1e-9)).clamp(0.0, 1.0) * dur;
                    i += 1;
                }
                let v = if thr < ref_mbps * 0.1 { zero_ms } else { deficit_ms };
                if v > best {
                    best = v;
                    best_at = Some(s[j0].start);
                }
            } else {
                i += 1;
            }
        }
        (best, best_at)
    };
    let (zero, _) = runs((ref_mbps * 0.05).max(0.01));
    let (deficit, at) = runs(ref_mbps * 0.5);
    (zero, deficit, at)
}

fn iperf_script(test: &Test, secs: u32) -> String {
    let base = format!("iperf3 -c {VM2_IP} -p {IPERF_PORT} -t {secs} -i 0.1 -J --get-server-output");
    match test {
        Test::StaticTcp | Test::Tcp => base,
        Test::Udp { rate, .. } => format!("{base} -u -b {rate} -l {UDP_LEN}"),
    }
}

/// `cloudrack-vm migrate`; returns its JSON (also when it failed) and whether it completed.
fn run_migrate(src: &Path, dst: &Path, uri: &str, on_stop: Option<&str>) -> Result<Value, String> {
    let (s, d) = (src.to_string_lossy(), dst.to_string_lossy());
    let mut args = vec![
        "migrate",
        "--src-dir",
        &s,
        "--dst-dir",
        &d,
        "--dst-uri",
        uri,
        "--timeout",
        "60",
    ];
    if let Some(cmd) = on_stop {
        args.extend(["--on-stop", cmd]);
    }
    let f = vm_tool(&args, Duration::from_secs(90))?;
    let v: Value = serde_json::from_str(&f.stdout)
        .map_err(|e| format!("cloudrack-vm migrate printed no JSON ({e}): {} {}", f.stdout, f.stderr))?;
    if v["status"] != "completed" {
        return Err(format!("migration did not complete: {}", v["status"]));
    }
    Ok(v)
}

fn move_repointed(log: &str) -> Vec<f64> {
    log.lines()
        .filter_map(|l| {
            let rest = &l[l.find("move_repointed_ms=")? + "move_repointed_ms=".len()..];
            let num: String = rest
                .trim_start_matches('"')
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            num.parse().ok()
        })
        .collect()
}

/// One measurement: a stream (and, except for the static one, a migration of VM2 under it).
fn measure(bed: &mut Bed, test: &Test, s: &Settings) -> Result<Value, String> {
    if bed.revive_vm2()? {
        eprint!("(new VM2) ");
    }
    bed.reachable()?;
    // The iperf3 server in VM2 (started at boot, it moves with the VM); restarted if it died.
    let restarted = guest(
        &bed.vm2.dir,
        &format!(
            "pidof iperf3 >/dev/null && echo running || {{ iperf3 -s -D -J -i 0.1 -p {IPERF_PORT}; echo restarted; }}"
        ),
        20,
    )?;
    if restarted.contains("restarted") {
        eprint!("(iperf3 server in VM2 had died, restarted) ");
        std::thread::sleep(Duration::from_millis(300));
    }
    // How long a guest command takes to start (python + agent), to place the migration on the
    // stream's clock: half of a no-op's round trip.
    let t = Instant::now();
    guest(&bed.vm1.dir, "true", 10)?;
    let exec_offset = t.elapsed().as_secs_f64() / 2.0;
    if *test == Test::StaticTcp {
        let t0 = epoch_now();
        let out = guest(
            &bed.vm1.dir,
            &iperf_script(test, s.static_secs),
            u64::from(s.static_secs) + 30,
        )?;
        let v: Value = serde_json::from_str(&out).map_err(|e| format!("iperf3 printed no JSON ({e}): {out:.300}"))?;
        if let Some(e) = v["error"].as_str() {
            return Err(format!("iperf3: {e}"));
        }
        let smp = samples(&v, true);
        let src = "server";
        let mbps = v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e6;
        return Ok(json!({
            "mbps": mbps,
            "stream_start_epoch": t0 + exec_offset,
            "samples_from": src,
            "samples": smp.iter().map(|x| json!([x.start, x.end, x.mbps])).collect::<Vec<_>>(),
        }));
    }

    let src_host = bed.vm2_host;
    let dst_host = if src_host == 1 { 2 } else { 1 };
    bed.migrations += 1;
    let tap = format!("vm2t{}", bed.migrations);
    let uri = format!("tcp:{}:{}", bed.underlay_ip(dst_host), 4400 + bed.migrations);
    let spec2 = bed.vm2.spec.clone();
    let incoming = catching(|| Ok(QemuVm::start(bed.host_ns(dst_host), &tap, &spec2, Some(&uri))))?;
    bed.attach(dst_host, &tap, VM2_MAC);
    let mut on_stop_log = None;
    let on_stop = match (&bed.net, bed.sys) {
        (Net::Cr(c), Sys::Cloudrack) => {
            let log = incoming.dir.join("on-stop.log");
            let cmd = format!(
                "{} --ctl {} migrate-in {tap} --mac {VM2_MAC} >>{} 2>&1",
                bin_path("cloudrack-ctl").display(),
                c.ctl_path(dst_host).display(),
                log.display()
            );
            on_stop_log = Some(log);
            Some(cmd)
        }
        _ => None,
    };
    let log_before = move_repointed(&bed.controller_log()).len();
    let is_udp = matches!(test, Test::Udp { .. });
    let udp_err_before = if is_udp { guest_udp_errors(&bed.vm2.dir) } else { None };
    let script = iperf_script(test, s.stream_secs);
    let vm1_dir = bed.vm1.dir.clone();
    let (src_dir, dst_dir) = (bed.vm2.dir.clone(), incoming.dir.clone());
    let timeout = u64::from(s.stream_secs) + 40;
    let t0 = epoch_now();
    let (client, mig, mig_launch) = std::thread::scope(|sc| {
        let h = sc.spawn(|| guest(&vm1_dir, &script, timeout));
        let _ = sleep_interruptible(Duration::from_secs_f64(s.migrate_at));
        let launch = epoch_now();
        let mig = run_migrate(&src_dir, &dst_dir, &uri, on_stop.as_deref());
        let client = h.join().unwrap_or_else(|_| Err("iperf3 client thread panicked".into()));
        (client, mig, launch)
    });
    let taps;
    let mig = match mig {
        Ok(m) => {
            // The source is paused for good: its port goes, then its QEMU.
            let old_tap = std::mem::replace(&mut bed.vm2_tap, tap.clone());
            taps = json!({
                "source": tap_stats(bed.host_ns(src_host), &old_tap),
                "destination": tap_stats(bed.host_ns(dst_host), &tap),
            });
            bed.detach(src_host, &old_tap);
            let mut old = std::mem::replace(&mut bed.vm2, incoming);
            old.stop();
            bed.vm2_host = dst_host;
            m
        }
        Err(e) => {
            bed.detach(dst_host, &tap);
            drop(incoming);
            return Err(e);
        }
    };
    let on_stop_out = on_stop_log.and_then(|p| std::fs::read_to_string(p).ok());
    // The controller logs the move once every switch answered its barrier.
    let mut moves = Vec::new();
    if matches!(bed.net, Net::Cr(_)) {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let all = move_repointed(&bed.controller_log());
            moves = all.get(log_before..).map(|x| x.to_vec()).unwrap_or_default();
            if !moves.is_empty() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let out = client.map_err(|e| {
        if bed.vm2.process_alive() {
            e
        } else {
            let console = cloudrack_tests::tail_file(&bed.vm2.dir.join("console.log"), 40);
            let panic_line = console
                .lines()
                .find(|l| l.contains("BUG:") || l.contains("panic") || l.contains("Oops"))
                .unwrap_or("(no oops on the console)")
                .trim()
                .to_string();
            format!("{e}; VM2's QEMU on host {dst_host} exited after the migration, guest console: {panic_line}")
        }
    })?;
    let v: Value = serde_json::from_str(&out).map_err(|e| format!("iperf3 printed no JSON ({e}): {out:.300}"))?;
    if let Some(e) = v["error"].as_str() {
        return Err(format!("iperf3: {e}"));
    }
    let stream_start = t0 + exec_offset;
    let rel = |ts: Option<f64>| ts.map(|x| x - stream_start);
    // The migration as QEMU saw it: from the source's "setup" to the later of its
    // "completed" and the destination's RESUME (host clock).
    let mig_start = rel(event_ts(&mig, "src", "MIGRATION", Some("setup"))).unwrap_or(mig_launch - stream_start);
    let wall_ms = mig["wall_ms"].as_f64();
    let total_ms = mig["total_time_ms"].as_f64();
    let stop = rel(mig["src_stop_ts"].as_f64());
    let resume = rel(mig["dst_resume_ts"].as_f64());
    let completed = rel(event_ts(&mig, "src", "MIGRATION", Some("completed")));
    let mig_end = [completed, resume]
        .into_iter()
        .flatten()
        .fold(mig_start + total_ms.unwrap_or(0.0) / 1000.0, f64::max);
    let downtime = mig["downtime_ms"].as_f64();
    let pause = mig["pause_ms"].as_f64();
    // TCP: the sender's samples (VM1 does not migrate, so its clock runs on through the
    // pause; the receiver's stops with it). UDP: the receiver's (what arrived, and what was
    // lost by sequence number).
    let server_smp = samples(&v, true);
    let (smp, src) = if is_udp {
        (server_smp.clone(), "server")
    } else {
        (samples(&v, false), "client")
    };
    let before: Vec<f64> = smp
        .iter()
        .filter(|x| x.start >= 0.5 && x.end <= mig_start)
        .map(|x| x.mbps)
        .collect();
    let after_from = resume.unwrap_or(mig_end).max(mig_end) + 0.5;
    let after: Vec<f64> = smp
        .iter()
        .filter(|x| x.start >= after_from && x.end - x.start > 0.05)
        .map(|x| x.mbps)
        .collect();
    let before_mbps = mean(&before);
    let after_mbps = mean(&after);
    // ~zero is judged against what arrived before the migration (a TCG guest may not receive
    // the whole nominal UDP rate).
    let reference = before_mbps.unwrap_or(1.0);
    let (gap_ms, gap_est_ms, gap_at) = longest_gap(&smp, reference);
    let mut m = json!({
        "stream_start_epoch": stream_start,
        "exec_offset_s": exec_offset,
        "samples_from": src,
        "samples": smp.iter().map(|x| json!([x.start, x.end, x.mbps, x.lost, x.packets])).collect::<Vec<_>>(),
        "migration_start_s": mig_start,
        "migration_end_s": mig_end,
        "stop_s": stop,
        "resume_s": resume,
        "from_host": src_host,
        "to_host": dst_host,
        "before_mbps": before_mbps,
        "after_mbps": after_mbps,
        "gap_ms": gap_ms,
        "gap_est_ms": gap_est_ms,
        "gap_at_s": gap_at,
        "downtime_ms": downtime,
        "pause_ms": pause,
        "total_ms": total_ms,
        "migration_wall_ms": wall_ms,
        "move_repointed_ms": moves.first(),
        "move_repointed_all_ms": moves,
        "on_stop_output": on_stop_out,
        "taps": taps,
        "receiver_samples": server_smp.iter().map(|x| json!([x.start, x.end, x.mbps, x.lost, x.packets])).collect::<Vec<_>>(),
        "qemu": mig,
    });
    let traffic_lost_ms = match test {
        Test::Udp { bps, .. } => {
            let total_lost = v["server_output_json"]["end"]["sum"]["lost_packets"]
                .as_f64()
                .or(v["end"]["sum"]["lost_packets"].as_f64());
            // The sending rate actually offered (datagrams per second), else the nominal one.
            let sent = v["end"]["sum"]["packets"].as_f64();
            let secs = v["end"]["sum"]["seconds"].as_f64();
            let nominal_pps = bps / (f64::from(UDP_LEN) * 8.0);
            let pps = match (sent, secs) {
                (Some(n), Some(t)) if n > 0.0 && t > 0.0 => n / t,
                _ => nominal_pps,
            };
            let from = mig_start - 0.5;
            let window: i64 = smp.iter().filter(|x| x.end > from).map(|x| x.lost).sum();
            let window_s: f64 = smp.iter().filter(|x| x.end > from).map(|x| x.end - x.start).sum();
            // Losses that happen anyway (the guest not keeping up): their rate before the
            // migration, subtracted over the window.
            let base: Vec<&Sample> = smp.iter().filter(|x| x.start >= 0.5 && x.end <= mig_start).collect();
            let base_s: f64 = base.iter().map(|x| x.end - x.start).sum();
            let base_lost: i64 = base.iter().map(|x| x.lost).sum();
            let base_rate = if base_s > 0.0 {
                base_lost.max(0) as f64 / base_s
            } else {
                0.0
            };
            let excess = (window as f64 - base_rate * window_s).max(0.0);
            let lost_ms = excess / pps * 1000.0;
            m["udp_lost_total"] = json!(total_lost);
            m["udp_lost_window"] = json!(window);
            m["udp_lost_baseline_per_s"] = json!(base_rate);
            m["udp_lost_excess"] = json!(excess);
            m["udp_sent"] = json!(sent);
            m["udp_sent_pps"] = json!(pps);
            m["udp_lost_ms"] = json!(lost_ms);
            m["udp_lost_window_raw_ms"] = json!(window.max(0) as f64 / pps * 1000.0);
            // Datagrams the migrated guest itself dropped (socket buffer full at the resume burst).
            if let (Some(a), Some(b)) = (udp_err_before, guest_udp_errors(&bed.vm2.dir)) {
                m["guest_udp_in_errors"] = json!(b.0 - a.0);
                m["guest_udp_rcvbuf_errors"] = json!(b.1 - a.1);
                // What the network lost: all losses of the stream minus those inside VM2.
                if let Some(t) = total_lost {
                    let net = (t - (b.0 - a.0) as f64).max(0.0);
                    m["udp_network_lost"] = json!(net);
                    m["udp_network_lost_ms"] = json!(net / pps * 1000.0);
                    m["net_added_outside_vm_ms"] = json!(downtime.map(|d| net / pps * 1000.0 - d));
                }
            }
            lost_ms
        }
        _ => gap_est_ms,
    };
    m["traffic_lost_ms"] = json!(traffic_lost_ms);
    m["net_added_ms"] = json!(downtime.map(|d| traffic_lost_ms - d));
    m["net_added_vs_pause_ms"] = json!(pause.map(|p| traffic_lost_ms - p));
    Ok(m)
}

/// Rows of the table: (JSON key, label). The static test only has "mbps".
const ROWS: &[(&str, &str)] = &[
    ("before_mbps", "throughput before, Mbit/s"),
    ("after_mbps", "throughput after, Mbit/s"),
    ("gap_ms", "longest ~zero run, ms (100 ms samples)"),
    ("gap_est_ms", "traffic missing in the dip, ms"),
    ("udp_lost_window", "datagrams lost (from migration on)"),
    ("udp_lost_excess", "  minus the pre-migration loss rate"),
    ("udp_lost_ms", "  = ms of traffic at the sending rate"),
    (
        "guest_udp_rcvbuf_errors",
        "VM2 socket drops (rcvbuf full), whole stream",
    ),
    ("udp_network_lost_ms", "lost outside VM2 (all lost - VM2 drops), ms"),
    ("downtime_ms", "QEMU downtime, ms"),
    ("pause_ms", "true pause STOP->RESUME, ms"),
    ("total_ms", "total migration time, ms"),
    ("move_repointed_ms", "controller move->re-pointed, ms"),
    ("net_added_ms", "NETWORK-ADDED ms (lost - downtime)"),
    ("net_added_vs_pause_ms", "  lost - true pause, ms"),
    ("net_added_outside_vm_ms", "  lost outside VM2 - downtime, ms"),
];

fn stats(vals: &[f64]) -> Option<Value> {
    if vals.is_empty() {
        return None;
    }
    let mut v = vals.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(json!({ "median": med, "min": v[0], "max": v[n - 1], "n": n }))
}

fn fmt_stat(s: &Option<Value>) -> String {
    match s {
        None => "-".into(),
        Some(v) => {
            let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
            let d = if f("max").abs() >= 100.0 { 0 } else { 1 };
            if v["n"].as_u64() == Some(1) {
                format!("{:.d$}", f("median"))
            } else {
                format!("{:.d$} [{:.d$}..{:.d$}]", f("median"), f("min"), f("max"))
            }
        }
    }
}

pub fn run(a: MigrationArgs) -> Result<i32, String> {
    let s = settings(&a)?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root: it creates network namespaces and QEMU VMs".into());
    }
    for t in ["ip", "python3", "qemu-system-x86_64"] {
        if cloudrack_tests::find_tool(t).is_none() {
            return Err(format!("`{t}` is not installed (bench/run-migration.sh installs it)"));
        }
    }
    catching(|| {
        ensure_guest_image();
        Ok(())
    })?;
    let started = utc_timestamp();
    let t_run = Instant::now();
    let per_sys = s.runs as usize * s.tests.len();
    let total = per_sys * s.systems.len();
    eprintln!(
        "cloudrack-bench migration: {}; {} run(s) of {}; {total} measurements, {} s streams, migration {} s in",
        s.systems.iter().map(|x| x.name()).collect::<Vec<_>>().join(", "),
        s.runs,
        s.tests.iter().map(|t| t.name()).collect::<Vec<_>>().join(", "),
        s.stream_secs,
        s.migrate_at
    );
    let mut step = 0;
    let mut records: Vec<Value> = Vec::new();
    let mut sys_info = serde_json::Map::new();
    for &sys in &s.systems {
        if interrupted() {
            break;
        }
        eprintln!("== {}: setting up ({})", sys.name(), sys.description());
        let t0 = Instant::now();
        let mut bed = match catching(|| Ok(Bed::setup(sys))) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("== {}: setup FAILED: {e}", sys.name());
                sys_info.insert(sys.name().into(), json!({ "setup_error": e }));
                for run in 1..=s.runs {
                    for t in &s.tests {
                        step += 1;
                        records.push(json!({"system": sys.name(), "test": t.name(), "run": run, "ok": false, "error": format!("setup failed: {e}")}));
                    }
                }
                continue;
            }
        };
        eprintln!("== {}: ready in {:.1} s", sys.name(), t0.elapsed().as_secs_f64());
        'runs: for run in 1..=s.runs {
            for t in &s.tests {
                if interrupted() {
                    break 'runs;
                }
                step += 1;
                eprint!("[{step}/{total}] {} {} run {run}/{} ... ", sys.name(), t.name(), s.runs);
                let tm = Instant::now();
                let r = catching(|| measure(&mut bed, t, &s));
                let secs = tm.elapsed().as_secs_f64();
                let mut rec = json!({"system": sys.name(), "test": t.name(), "run": run, "seconds": secs});
                match r {
                    Ok(m) => {
                        eprintln!("{} ({secs:.1} s)", summary(&m));
                        rec["ok"] = json!(true);
                        rec["m"] = m;
                    }
                    Err(e) => {
                        eprintln!("ERROR: {e}");
                        rec["ok"] = json!(false);
                        rec["error"] = json!(e);
                    }
                }
                records.push(rec);
            }
        }
        let log = bed.controller_log();
        let failed = records.iter().any(|r| r["system"] == sys.name() && r["ok"] != true);
        let mut info = json!({ "description": sys.description(), "setup_seconds": t0.elapsed().as_secs_f64() });
        if !log.is_empty() {
            info["controller_move_lines"] = json!(log
                .lines()
                .filter(|l| l.contains("move") || l.contains("igrat"))
                .map(|l| l.to_string())
                .collect::<Vec<_>>());
        }
        if failed {
            let dir = std::env::temp_dir().join("cloudrack-bench-logs").join(format!(
                "migration-{}-{}",
                sys.name(),
                utc_file_stamp()
            ));
            if std::fs::create_dir_all(&dir).is_ok() {
                let _ = std::fs::write(dir.join("controller.log"), &log);
                for (n, vm) in [("vm1", &bed.vm1), ("vm2", &bed.vm2)] {
                    let _ = std::fs::copy(vm.dir.join("console.log"), dir.join(format!("{n}-console.log")));
                }
                eprintln!("   {} logs kept in {}", sys.name(), dir.display());
                info["logs_kept"] = json!(dir);
            }
        }
        eprintln!("== {}: tearing down", sys.name());
        drop(bed);
        sys_info.insert(sys.name().into(), info);
    }

    // Table: per test, per row, per system.
    let mut table = serde_json::Map::new();
    let mut out = String::new();
    let w0 = 40;
    let w = 22;
    for t in &s.tests {
        out += &format!("\n{}\n{:w0$}", t.name(), "");
        for sys in &s.systems {
            out += &format!("{:>w$}", sys.name());
        }
        out += "\n";
        let rows: Vec<(&str, &str)> = if t.name() == "tcp-static" {
            vec![("mbps", "throughput, Mbit/s (no migration)")]
        } else {
            ROWS.iter()
                .copied()
                .filter(|(k, _)| !(k.starts_with("udp_") && *t == Test::Tcp))
                .collect()
        };
        let mut tj = serde_json::Map::new();
        for (key, label) in rows {
            let mut line = format!("{label:w0$}");
            let mut rj = serde_json::Map::new();
            for sys in &s.systems {
                let vals: Vec<f64> = records
                    .iter()
                    .filter(|r| r["system"] == sys.name() && r["test"] == t.name() && r["ok"] == true)
                    .filter_map(|r| r["m"][key].as_f64())
                    .collect();
                let st = stats(&vals);
                line += &format!("{:>w$}", fmt_stat(&st));
                rj.insert(sys.name().into(), st.unwrap_or(Value::Null));
            }
            out += &line;
            out += "\n";
            tj.insert(key.into(), Value::Object(rj));
        }
        let mut fl = format!("{:w0$}", "runs ok / failed");
        for sys in &s.systems {
            let of = |ok: bool| {
                records
                    .iter()
                    .filter(|r| r["system"] == sys.name() && r["test"] == t.name() && (r["ok"] == true) == ok)
                    .count()
            };
            fl += &format!("{:>w$}", format!("{} / {}", of(true), of(false)));
        }
        out += &fl;
        out += "\n";
        table.insert(t.name(), Value::Object(tj));
    }
    let finished = utc_timestamp();
    println!(
        "\nCloud Rack live migration benchmark, {started} .. {finished} ({:.0} s); {} run(s), median [min..max]; \
         QEMU TCG guests, 256 MB, MTU {GUEST_MTU}; UDP payload {UDP_LEN} B",
        t_run.elapsed().as_secs_f64(),
        s.runs
    );
    print!("{out}");
    let errors: Vec<&Value> = records.iter().filter(|r| r["ok"] != true).collect();
    if !errors.is_empty() {
        println!("\nfailed measurements:");
        for r in &errors {
            println!(
                "  {} {} run {}: {}",
                r["system"].as_str().unwrap_or("?"),
                r["test"].as_str().unwrap_or("?"),
                r["run"],
                r["error"]
                    .as_str()
                    .unwrap_or("?")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .chars()
                    .take(240)
                    .collect::<String>()
            );
        }
    }
    println!(
        "\nNETWORK-ADDED = traffic lost (TCP: traffic missing in the sender's dip; UDP: datagrams lost \
         from 0.5 s before the migration on, over the pre-migration loss rate, in ms at the sending \
         rate) minus QEMU's downtime. 'Outside VM2' counts only datagrams not dropped by VM2's own \
         socket (TCG guests fall behind during pre-copy and after RESUME). The issue's target for \
         cloudrack: <= 20 ms (median) at 20 and 100 Mbit/s."
    );
    let doc = json!({
        "bench": "migration",
        "started": started,
        "finished": finished,
        "run_seconds": t_run.elapsed().as_secs_f64(),
        "interrupted": interrupted(),
        "config": {
            "runs": s.runs, "stream_secs": s.stream_secs, "migrate_at_s": s.migrate_at,
            "static_secs": s.static_secs, "guest_mtu": GUEST_MTU, "udp_len": UDP_LEN,
            "tests": s.tests.iter().map(|t| t.name()).collect::<Vec<_>>(),
            "systems": s.systems.iter().map(|x| x.name()).collect::<Vec<_>>(),
            "udp_rates_bps": s.tests.iter().filter_map(|t| match t { Test::Udp { rate, bps } => Some(json!({"name": rate, "bps": bps})), _ => None }).collect::<Vec<_>>(),
        },
        "machine": {
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "loadavg_end": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        },
        "systems": sys_info,
        "results": records,
        "table": table,
    });
    crate::util::write_json(&s.json_path, &doc)?;
    eprintln!("JSON written to {}", s.json_path.display());
    Ok(if interrupted() {
        130
    } else if errors.is_empty() {
        0
    } else {
        1
    })
}

fn summary(m: &Value) -> String {
    let f = |k: &str| m[k].as_f64().map(|x| format!("{x:.1}")).unwrap_or("?".into());
    if m.get("gap_ms").is_none() {
        return format!("{} Mbit/s", f("mbps"));
    }
    let mut s = format!(
        "{} -> {} Mbit/s, gap {} ms (est {}), downtime {} ms, pause {} ms, total {} ms",
        f("before_mbps"),
        f("after_mbps"),
        f("gap_ms"),
        f("gap_est_ms"),
        f("downtime_ms"),
        f("pause_ms"),
        f("total_ms")
    );
    if m.get("udp_lost_ms").is_some() {
        s += &format!(
            ", lost {} dgrams ({} over the baseline) = {} ms",
            m["udp_lost_window"],
            f("udp_lost_excess"),
            f("udp_lost_ms")
        );
    }
    if !m["move_repointed_ms"].is_null() {
        s += &format!(", re-pointed in {} ms", f("move_repointed_ms"));
    }
    s + &format!(", net-added {} ms", f("net_added_ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_gaps() {
        assert_eq!(parse_rate("100M"), Some(100e6));
        assert_eq!(parse_rate("20m"), Some(20e6));
        assert_eq!(parse_rate("x"), None);
        let mk = |i: usize, mbps: f64| Sample {
            start: i as f64 * 0.1,
            end: (i + 1) as f64 * 0.1,
            mbps,
            lost: 0,
            packets: 0,
        };
        let s: Vec<Sample> = [100.0, 40.0, 0.0, 0.0, 0.0, 40.0, 100.0]
            .iter()
            .enumerate()
            .map(|(i, &m)| mk(i, m))
            .collect();
        let (g, e, at) = longest_gap(&s, 100.0);
        assert!((g - 300.0).abs() < 1e-6);
        assert!((e - 420.0).abs() < 1e-6);
        assert!((at.unwrap() - 0.1).abs() < 1e-9);
        assert_eq!(
            move_repointed("x move_repointed_ms=\"1.061\" y\nz move_repointed_ms=2.5"),
            vec![1.061, 2.5]
        );
    }
}
