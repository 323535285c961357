//! The systems under test, each built in namespaces of its own with VMs (namespaces with an
//! `eth0`) attached:
//!
//! * `cloudrack`: two hosts on a WAN, the controller and a `cloudrack-switch` per host; VMs are
//!   veth `system` ports, offloads at their defaults (as real guests have them);
//! * `ovs`: Open vSwitch userspace datapath per host (br-phy owns the underlay address, br-int
//!   has a keyed `type=gre` port to the other host, NORMAL forwarding); VM offloads off, which
//!   OVS's AF_PACKET ports need;
//! * `kernel`: a Linux bridge per host joined by VXLAN (this kernel has no GRE module);
//! * `bridge`: one Linux bridge with both VMs on it.
//!
//! `cloudrack` and `ovs` also have a second VM on host 0 for same-host measurements.

use cloudrack_tests::{ping, vm_ns, wait_until, Cluster, HostNet, Netns, OvsHost, TestLogs, Vm, Wan};
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cpu::DatapathCpu;
use crate::util::{last_lines, utc_file_stamp};

/// Virtual network id: cloudrack's vnet, OVS's GRE key, the VXLAN id.
pub const VNET: u32 = 7;
const BRIDGE: &str = "brvm";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum System {
    Cloudrack,
    Ovs,
    Kernel,
    Bridge,
}

impl System {
    pub const ALL: [System; 4] = [System::Cloudrack, System::Ovs, System::Kernel, System::Bridge];

    pub fn name(self) -> &'static str {
        match self {
            System::Cloudrack => "cloudrack",
            System::Ovs => "ovs",
            System::Kernel => "kernel",
            System::Bridge => "bridge",
        }
    }

    pub fn parse(s: &str) -> Option<System> {
        System::ALL.into_iter().find(|x| x.name() == s)
    }

    pub fn description(self) -> &'static str {
        match self {
            System::Cloudrack => {
                "cloudrack-switch per host + cloudrack-controller, GRE between hosts; \
                 VM veths as system ports, VM offloads at defaults"
            }
            System::Ovs => {
                "Open vSwitch userspace datapath (ovs-vswitchd --disable-system, netdev bridges), \
                 br-phy with the underlay IP, br-int with type=gre key=7, NORMAL; VM offloads off"
            }
            System::Kernel => {
                "Linux bridge per host + VXLAN (id 7, UDP 4789) between hosts, br_netfilter off; \
                 VM offloads at defaults"
            }
            System::Bridge => "one Linux bridge, both VMs on it, br_netfilter off; VM offloads at defaults",
        }
    }

    /// Where its VM pairs are.
    pub fn placements(self) -> &'static [Placement] {
        match self {
            System::Cloudrack | System::Ovs => &[Placement::Cross, Placement::Same],
            System::Kernel => &[Placement::Cross],
            System::Bridge => &[Placement::Same],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Placement {
    /// Client VM on host 0, server VM on host 1.
    Cross,
    /// Both VMs on host 0.
    Same,
}

impl Placement {
    pub fn name(self) -> &'static str {
        match self {
            Placement::Cross => "cross-host",
            Placement::Same => "same-host",
        }
    }
}

/// Knobs that shape the testbeds.
#[derive(Debug, Clone)]
pub struct TestbedOptions {
    /// MTU of every WAN link (VMs keep 1500).
    pub wan_mtu: u32,
    /// `--workers` for cloudrack-switch (its default if `None`).
    pub workers: Option<u32>,
    /// Hosts in subnets of their own behind a router limited to this rate (tc's syntax, e.g.
    /// `1gbit`), segmenting in software what they send, instead of one bridge; loss is set
    /// on the router per measurement (`Testbed::wan`).
    pub routed_rate: Option<String>,
}

/// The two hosts of a testbed: on one WAN bridge, or behind a rate-limited router with the
/// hosts' WAN links segmenting in software (so the router sees wire-sized packets).
fn two_hosts(opts: &TestbedOptions) -> HostNet {
    let Some(rate) = &opts.routed_rate else {
        return HostNet::with_wan_mtu(2, opts.wan_mtu);
    };
    let net = HostNet::routed(2, opts.wan_mtu);
    net.wan.limit_rate(rate);
    for h in &net.hosts {
        cloudrack_tests::segment_in_software(&h.ns, &h.wan_if);
    }
    net
}

/// The VM pair of one placement: client → server.
pub struct Pair<'a> {
    pub client: &'a Netns,
    pub server: &'a Netns,
    pub server_ip: Ipv4Addr,
}

enum Inner {
    Cloudrack(Box<Cluster>),
    Ovs {
        hosts: Vec<OvsHost>,
        _net: HostNet,
    },
    /// Only kept alive: the kernel forwards by itself.
    Linux {
        _net: HostNet,
    },
}

/// A system set up and ready to measure. Dropping it removes everything: the VMs first, then
/// the daemons, the hosts and the WAN; the logs directory last.
pub struct Testbed {
    pub system: System,
    /// client (host 0), cross-host server (host 1, if any), same-host server (host 0, if any).
    vms: Vec<Vm>,
    pairs: Vec<(Placement, usize, usize)>,
    inner: Inner,
    dp_cpu: DatapathCpu,
    logs: TestLogs,
}

fn mac(i: u8) -> String {
    format!("02:00:00:77:00:{i:02x}")
}

fn cidr(i: u8) -> String {
    format!("10.77.0.{i}/24")
}

const CLIENT: u8 = 1;
const REMOTE: u8 = 2;
const LOCAL: u8 = 3;

impl Testbed {
    /// Builds `system`. Panics (as the harness does) if anything fails; whatever was created
    /// until then is removed while unwinding, and the logs of the daemons are printed.
    pub fn setup(system: System, opts: &TestbedOptions) -> Testbed {
        let logs = TestLogs::new(&format!("bench-{}", system.name()));
        match system {
            System::Cloudrack => setup_cloudrack(opts, logs),
            System::Ovs => setup_ovs(opts, logs),
            System::Kernel => setup_kernel(opts, logs),
            System::Bridge => setup_bridge(logs),
        }
    }

    pub fn pair(&self, placement: Placement) -> Option<Pair<'_>> {
        let &(_, c, s) = self.pairs.iter().find(|(p, _, _)| *p == placement)?;
        Some(Pair {
            client: &self.vms[c].ns,
            server: &self.vms[s].ns,
            server_ip: self.vms[s].ip,
        })
    }

    pub fn datapath_cpu(&self) -> &DatapathCpu {
        &self.dp_cpu
    }

    /// The WAN between the hosts (the router of a routed testbed, where loss is set).
    pub fn wan(&self) -> &Wan {
        match &self.inner {
            Inner::Cloudrack(c) => &c.net.wan,
            Inner::Ovs { _net, .. } | Inner::Linux { _net } => &_net.wan,
        }
    }

    /// Datapath threads that forward frames, where that number means something.
    pub fn workers(&mut self) -> Option<u32> {
        match &mut self.inner {
            Inner::Cloudrack(c) => c
                .try_ctl_json(0, &["stats"])
                .and_then(|v| v["workers"].as_u64())
                .map(|w| w as u32),
            Inner::Ovs { hosts, .. } => {
                // Non-DPDK ports are polled by the main thread unless PMD threads exist.
                let pid = hosts[0].vswitchd().pid();
                Some(pmd_threads(pid).max(1))
            }
            Inner::Linux { .. } => None,
        }
    }

    /// Fails if a daemon of the system has exited.
    pub fn health(&mut self) -> Result<(), String> {
        match &mut self.inner {
            Inner::Cloudrack(c) => {
                for (i, sw) in c.switches.iter_mut().enumerate() {
                    if let Some(sw) = sw {
                        if let Some(st) = sw.try_status() {
                            return Err(format!(
                                "cloudrack-switch on host {i} exited ({st}); log: {}",
                                last_lines(&sw.log_tail(8), 8)
                            ));
                        }
                    }
                }
                if let Some(ctl) = c.controller.as_mut() {
                    if let Some(st) = ctl.try_status() {
                        return Err(format!(
                            "cloudrack-controller exited ({st}); log: {}",
                            last_lines(&ctl.log_tail(8), 8)
                        ));
                    }
                }
                Ok(())
            }
            Inner::Ovs { hosts, .. } => {
                for (i, h) in hosts.iter_mut().enumerate() {
                    if let Some(st) = h.vswitchd().try_status() {
                        return Err(format!("ovs-vswitchd on host {i} exited ({st})"));
                    }
                }
                Ok(())
            }
            Inner::Linux { .. } => Ok(()),
        }
    }

    /// Pings server from client until it answers (ARP learnt, flows installed).
    pub fn warm_up(&self, placement: Placement) -> Result<(), String> {
        let pair = self
            .pair(placement)
            .ok_or_else(|| format!("{} has no {} pair", self.system.name(), placement.name()))?;
        let ip = pair.server_ip.to_string();
        let ok = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
            ping(pair.client, &ip, 3, Duration::from_secs(5))
        });
        if ok {
            Ok(())
        } else {
            Err(format!(
                "VM {} cannot ping VM {ip} ({}) within 20 s; {}",
                cidr(CLIENT),
                placement.name(),
                self.brief_state()
            ))
        }
    }

    /// A one-line picture of the switch state, for error messages.
    fn brief_state(&self) -> String {
        match &self.inner {
            Inner::Cloudrack(c) => {
                let mut s = String::new();
                for i in 0..c.net.len() {
                    let flows = c
                        .try_ctl_json(i, &["flows"])
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "?".into());
                    let tunnels = c
                        .try_ctl_json(i, &["tunnels"])
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "?".into());
                    s += &format!("host {i} flows {flows} tunnels {tunnels}; ");
                }
                s
            }
            _ => String::new(),
        }
    }

    /// Counters and state worth keeping with the results (drops, tunnels, flow counts).
    pub fn diagnostics(&mut self) -> Value {
        match &mut self.inner {
            Inner::Cloudrack(c) => {
                let hosts: Vec<Value> = (0..c.net.len())
                    .map(|i| {
                        json!({
                            "stats": c.try_ctl_json(i, &["stats"]),
                            "tunnels": c.try_ctl_json(i, &["tunnels"]),
                            "flows": c.try_ctl_json(i, &["flows"]),
                        })
                    })
                    .collect();
                json!({ "hosts": hosts })
            }
            Inner::Ovs { hosts, .. } => {
                let hosts: Vec<Value> = hosts
                    .iter()
                    .map(|h| {
                        let appctl = |args: &[&str]| best_effort(|| h.appctl(args)).unwrap_or_else(|e| e);
                        json!({
                            "pmd_stats": appctl(&["dpif-netdev/pmd-stats-show"]),
                            "datapath_flows": appctl(&["dpctl/dump-flows"]).lines().count(),
                        })
                    })
                    .collect();
                json!({ "hosts": hosts })
            }
            Inner::Linux { .. } => Value::Null,
        }
    }

    /// Non-zero cloudrack datapath drop counters, summed over hosts (empty for other systems).
    pub fn drop_counters(&self) -> Vec<(String, u64)> {
        let Inner::Cloudrack(c) = &self.inner else {
            return Vec::new();
        };
        let mut sum: std::collections::BTreeMap<String, u64> = Default::default();
        for i in 0..c.net.len() {
            if let Some(Value::Object(m)) = c.try_ctl_json(i, &["stats"]).map(|v| v["datapath"].clone()) {
                for (k, v) in m {
                    let n = v.as_u64().unwrap_or(0);
                    if n > 0 && (k.starts_with("drop") || k.contains("error") || k.contains("full")) {
                        *sum.entry(k).or_default() += n;
                    }
                }
            }
        }
        sum.into_iter().collect()
    }

    /// Copies the daemons' logs somewhere that survives the run; returns where.
    pub fn keep_logs(&self) -> Option<PathBuf> {
        let dest = std::env::temp_dir().join("cloudrack-bench-logs").join(format!(
            "{}-{}",
            self.system.name(),
            utc_file_stamp()
        ));
        std::fs::create_dir_all(dest.parent()?).ok()?;
        let o = std::process::Command::new("cp")
            .arg("-a")
            .arg(self.logs.dir())
            .arg(&dest)
            .output()
            .ok()?;
        o.status.success().then_some(dest)
    }
}

/// Runs a harness call that may panic, as a `Result` (for best-effort diagnostics).
fn best_effort<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    crate::util::catching(|| Ok(f()))
}

fn pmd_threads(pid: u32) -> u32 {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm"))
                .map(|c| c.starts_with("pmd"))
                .unwrap_or(false)
        })
        .count() as u32
}

fn setup_cloudrack(opts: &TestbedOptions, logs: TestLogs) -> Testbed {
    // Cluster::start builds a 1500-byte WAN; this is the same sequence with our WAN.
    let net = two_hosts(opts);
    let mut c = Cluster::new(net, &[]);
    c.start_controller();
    let workers = opts.workers.map(|w| w.to_string());
    let mut extra: Vec<&str> = Vec::new();
    if let Some(w) = &workers {
        extra.extend(["--workers", w.as_str()]);
    }
    for i in 0..2 {
        let sw = c.spawn_switch(i, &extra);
        c.switches.push(Some(sw));
    }
    for i in 0..2 {
        let path = c.ctl_path(i);
        assert!(
            wait_until(Duration::from_secs(10), Duration::from_millis(50), || { path.exists() }),
            "cloudrack-switch {i} did not open its management socket"
        );
    }
    c.wait_connected();
    let a = c.vm_system(0, "a", &mac(CLIENT), &cidr(CLIENT), VNET);
    let b = c.vm_system(1, "b", &mac(REMOTE), &cidr(REMOTE), VNET);
    let l = c.vm_system(0, "c", &mac(LOCAL), &cidr(LOCAL), VNET);
    let pids = c.switches.iter().flatten().map(|p| p.pid()).collect::<Vec<_>>();
    Testbed {
        system: System::Cloudrack,
        vms: vec![a, b, l],
        pairs: vec![(Placement::Cross, 0, 1), (Placement::Same, 0, 2)],
        inner: Inner::Cloudrack(Box::new(c)),
        dp_cpu: DatapathCpu::Processes {
            what: "cloudrack-switch on both hosts".into(),
            pids,
        },
        logs,
    }
}

/// OVS's AF_PACKET ports need frames with real checksums and MTU-sized segments.
fn offloads_off(vm: &Vm) {
    vm.ns
        .run(&["ethtool", "-K", "eth0", "tx", "off", "tso", "off", "gso", "off"]);
}

fn setup_ovs(opts: &TestbedOptions, logs: TestLogs) -> Testbed {
    let net = two_hosts(opts);
    let mut hosts = Vec::new();
    for i in 0..2 {
        let h = &net[i];
        let o = OvsHost::start(&h.ns);
        o.setup_underlay(&h.wan_if, &h.underlay_cidr);
        o.add_bridge("br-int");
        o.add_gre_port("br-int", "gre0", &net[1 - i].underlay_ip.to_string(), VNET);
        hosts.push(o);
    }
    let mut vms = Vec::new();
    for (host, name, i) in [(0, "a", CLIENT), (1, "b", REMOTE), (0, "c", LOCAL)] {
        let vm = vm_ns(&net[host], name, &mac(i), &cidr(i));
        offloads_off(&vm);
        hosts[host].add_port("br-int", &vm.host_if);
        vms.push(vm);
    }
    let pids = hosts.iter_mut().map(|h| h.vswitchd().pid()).collect();
    Testbed {
        system: System::Ovs,
        vms,
        pairs: vec![(Placement::Cross, 0, 1), (Placement::Same, 0, 2)],
        inner: Inner::Ovs { hosts, _net: net },
        dp_cpu: DatapathCpu::Processes {
            what: "ovs-vswitchd on both hosts".into(),
            pids,
        },
        logs,
    }
}

fn add_bridge(ns: &Netns) {
    ns.ip(&["link", "add", BRIDGE, "type", "bridge", "stp_state", "0"]);
    cloudrack_tests::bridge_netfilter_off(ns);
    ns.ip(&["link", "set", "dev", BRIDGE, "up"]);
}

fn enslave(ns: &Netns, ifname: &str) {
    ns.ip(&["link", "set", "dev", ifname, "master", BRIDGE]);
}

fn setup_kernel(opts: &TestbedOptions, logs: TestLogs) -> Testbed {
    let net = two_hosts(opts);
    let id = VNET.to_string();
    for i in 0..2 {
        let h = &net[i];
        add_bridge(&h.ns);
        let local = h.underlay_ip.to_string();
        let remote = net[1 - i].underlay_ip.to_string();
        h.ns.ip(&[
            "link", "add", "vx0", "type", "vxlan", "id", &id, "local", &local, "remote", &remote, "dstport", "4789",
            "dev", &h.wan_if,
        ]);
        enslave(&h.ns, "vx0");
        h.ns.ip(&["link", "set", "dev", "vx0", "up"]);
    }
    let mut vms = Vec::new();
    for (host, name, i) in [(0, "a", CLIENT), (1, "b", REMOTE)] {
        let vm = vm_ns(&net[host], name, &mac(i), &cidr(i));
        enslave(&net[host].ns, &vm.host_if);
        vms.push(vm);
    }
    Testbed {
        system: System::Kernel,
        vms,
        pairs: vec![(Placement::Cross, 0, 1)],
        inner: Inner::Linux { _net: net },
        dp_cpu: DatapathCpu::Softirq,
        logs,
    }
}

fn setup_bridge(logs: TestLogs) -> Testbed {
    let net = HostNet::new(1);
    add_bridge(&net[0].ns);
    let mut vms = Vec::new();
    for (name, i) in [("a", CLIENT), ("c", LOCAL)] {
        let vm = vm_ns(&net[0], name, &mac(i), &cidr(i));
        enslave(&net[0].ns, &vm.host_if);
        vms.push(vm);
    }
    Testbed {
        system: System::Bridge,
        vms,
        pairs: vec![(Placement::Same, 0, 1)],
        inner: Inner::Linux { _net: net },
        dp_cpu: DatapathCpu::Softirq,
        logs,
    }
}
