//! Differential testing against Open vSwitch (userspace datapath): many random flow tables,
//! installed by the same ovs-ofctl commands into both switches; random packets sent into the
//! same port of each; what comes out of every port compared, byte for byte.
//!
//! CLOUDRACK_DIFF_SEED replays a run; CLOUDRACK_DIFF_CASES (default 40 tables) and
//! CLOUDRACK_DIFF_PACKETS (default 60 per table) make it longer.

use cloudrack_tests::differential::{collect, random_case, random_packet, same_outputs, Outputs, PortTap, Rng};
use cloudrack_tests::*;
use std::time::{Duration, Instant};

const PORTS: u32 = 4;
const OFP_LISTEN: &str = "127.0.0.1:6635";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// No IPv6 on the test's links: the kernel's own router solicitations and DAD would be noise.
fn quiet(ns: &Netns) {
    for k in [
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1",
    ] {
        ns.run(&["sysctl", "-qw", k]);
    }
}

#[test]
fn same_flows_and_packets_give_the_same_outputs_as_open_vswitch() {
    let _logs = TestLogs::new("same_flows_and_packets_give_the_same_outputs_as_open_vswitch");
    require_tool("ovs-vswitchd");
    require_tool("ovs-ofctl");
    let cases = env_or("CLOUDRACK_DIFF_CASES", 40);
    let per_case = env_or("CLOUDRACK_DIFF_PACKETS", 60);
    let seed = env_or(
        "CLOUDRACK_DIFF_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    );
    println!("differential: seed {seed} (CLOUDRACK_DIFF_SEED={seed} replays it)");
    let mut rng = Rng::new(seed);

    // Ours: ports 1-4 are the switch ends cN of veth pairs whose other ends dN the test uses.
    let c = Cluster::standalone("tcp:127.0.0.1:1", OFP_LISTEN);
    let host = &c.net[0].ns;
    quiet(host);
    for i in 1..=PORTS {
        host.ip(&[
            "link",
            "add",
            &format!("c{i}"),
            "type",
            "veth",
            "peer",
            "name",
            &format!("d{i}"),
        ]);
        link_up(host, &format!("c{i}"));
        link_up(host, &format!("d{i}"));
        let out = c.ctl(0, &["add-port", &format!("c{i}"), "--kind", "system", "--vnet", "0"]);
        assert!(
            out.contains(&format!("number {i}")),
            "port c{i} is not number {i}: {out}"
        );
    }
    // Open vSwitch: the same four ports, numbered alike.
    let peer = Netns::new("ovsdiff");
    quiet(&peer);
    let ovs = OvsHost::start(&peer);
    ovs.add_bridge("br0");
    for i in 1..=PORTS {
        let p = format!("p{i}");
        peer.ip(&["link", "add", &p, "type", "veth", "peer", "name", &format!("x{i}")]);
        link_up(&peer, &p);
        link_up(&peer, &format!("x{i}"));
        ovs.vsctl(&[
            "add-port",
            "br0",
            &p,
            "--",
            "set",
            "Interface",
            &p,
            &format!("ofport_request={i}"),
        ]);
    }
    let ours_taps: Vec<PortTap> = host.enter(|| (1..=PORTS).map(|i| PortTap::open(&format!("d{i}"))).collect());
    let ovs_taps: Vec<PortTap> = peer.enter(|| (1..=PORTS).map(|i| PortTap::open(&format!("x{i}"))).collect());
    let ours = format!("tcp:{OFP_LISTEN}");
    let ofctl_ours = |args: &[&str]| {
        let mut a = vec!["ovs-ofctl", "-O", "OpenFlow13"];
        a.extend_from_slice(args);
        host.exec(&a)
    };
    let ofctl_ovs = |args: &[&str]| {
        let mut a = vec!["-O", "OpenFlow13"];
        a.extend_from_slice(args);
        ovs.try_ofctl(&a)
    };

    let started = Instant::now();
    let mut compared = 0u64;
    let mut forwarded = 0u64;
    let mut failures: Vec<String> = Vec::new();
    for case_no in 0..cases {
        let case = random_case(&mut rng, PORTS);
        for (t_ours, t_ovs) in [(ours.as_str(), "br0")] {
            ofctl_ours(&["del-flows", t_ours]);
            ofctl_ours(&["del-groups", t_ours]);
            ofctl_ovs(&["del-flows", t_ovs]);
            ofctl_ovs(&["del-groups", t_ovs]);
            for (what, cmd) in case
                .groups
                .iter()
                .map(|g| ("add-group", g))
                .chain(case.flows.iter().map(|f| ("add-flow", f)))
            {
                let a = ofctl_ours(&[what, t_ours, cmd]);
                let b = ofctl_ovs(&[what, t_ovs, cmd]);
                if a.status.success() != b.status.success() {
                    failures.push(format!(
                        "case {case_no}: `{what} {cmd}` accepted by {} only: ours: {} / ovs: {}",
                        if a.status.success() { "us" } else { "Open vSwitch" },
                        String::from_utf8_lossy(&a.stderr).trim(),
                        String::from_utf8_lossy(&b.stderr).trim()
                    ));
                }
            }
        }
        // Open vSwitch caches datapath flows of the previous table: start it clean.
        ovs.appctl(&["revalidator/purge"]);
        for t in ours_taps.iter().chain(&ovs_taps) {
            t.drain();
        }
        let mut sent = Vec::new();
        for p in 0..per_case {
            let id = (case_no * 1000 + p) as u32;
            let frame = random_packet(&mut rng, id);
            let in_port = 1 + rng.below(PORTS as u64) as usize;
            assert!(ours_taps[in_port - 1].send(&frame), "send into our port {in_port}");
            assert!(
                ovs_taps[in_port - 1].send(&frame),
                "send into Open vSwitch port {in_port}"
            );
            sent.push((id, in_port, frame));
            if p % 16 == 15 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let (mut a, mut b) = (Outputs::new(), Outputs::new());
        // Collect until both have been quiet for a while.
        let mut last = (usize::MAX, usize::MAX);
        for _ in 0..40 {
            std::thread::sleep(Duration::from_millis(25));
            collect(&ours_taps, &mut a);
            collect(&ovs_taps, &mut b);
            let now = (a.values().map(Vec::len).sum(), b.values().map(Vec::len).sum());
            if now == last {
                break;
            }
            last = now;
        }
        for (id, in_port, frame) in &sent {
            compared += 1;
            let (x, y) = (a.remove(id).unwrap_or_default(), b.remove(id).unwrap_or_default());
            forwarded += !y.is_empty() as u64;
            if !same_outputs(&x, &y) {
                let ports = |v: &[(u32, Vec<u8>)]| v.iter().map(|(p, _)| *p).collect::<Vec<_>>();
                let differing: Vec<String> = x
                    .iter()
                    .zip(&y)
                    .filter(|((_, fa), (_, fb))| fa != fb)
                    .map(|((p, fa), (_, fb))| format!("port {p}: ours {} / ovs {}", hex(fa), hex(fb)))
                    .collect();
                failures.push(format!(
                    "case {case_no} packet {id} in port {in_port}: ours to {:?}, Open vSwitch to {:?}\n  packet {}\n  {}\n  flows:\n    {}\n  groups: {:?}",
                    ports(&x),
                    ports(&y),
                    hex(frame),
                    differing.join("\n  "),
                    case.flows.join("\n    "),
                    case.groups
                ));
            }
        }
    }
    println!(
        "differential: {cases} flow tables, {compared} packets compared ({forwarded} forwarded somewhere by Open vSwitch), {} mismatches, in {:.1} s",
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    for f in failures.iter().take(5) {
        println!("MISMATCH {f}");
    }
    assert!(
        failures.is_empty(),
        "{} mismatches with Open vSwitch (seed {seed}); first: {}",
        failures.len(),
        failures[0]
    );
    assert!(
        forwarded > compared / 4,
        "too few packets were forwarded for the comparison to mean much"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
