//! The working core, end to end in network namespaces: three hosts on a WAN, a switch each, one
//! controller; VMs attached as veth `system` ports and as switch-owned taps. Runs as root.

use cloudrack_tests::*;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const MB: u64 = 1024 * 1024;

fn tunnels(c: &Cluster, host: usize) -> Vec<serde_json::Value> {
    c.ctl_json(host, &["tunnels"]).as_array().cloned().unwrap_or_default()
}

/// Ping across hosts (ARP resolved across hosts with no static entries), a verified 50 MB TCP
/// transfer between a veth VM and a tap VM on different hosts, GRE on the WAN with the key of
/// the virtual network, every GRE packet a whole one (DF, within the MTU, no fragments), and
/// tunnels that exist only once traffic needs them.
#[test]
fn vms_on_three_hosts_talk_over_gre() {
    let _logs = TestLogs::new("vms_on_three_hosts_talk_over_gre");
    let c = Cluster::start(3, &["--tunnel-idle", "60s"]);
    let vnet = 7;
    let a = c.vm_system(0, "a", "02:00:00:00:07:01", "10.7.0.1/24", vnet);
    let (b_ns, _b_if) = c.vm_tap(1, "b", "02:00:00:00:07:02", "10.7.0.2/24", vnet);
    let cc = c.vm_system(2, "c", "02:00:00:00:07:03", "10.7.0.3/24", vnet);
    for h in 0..3 {
        assert!(tunnels(&c, h).is_empty(), "host {h} has a tunnel before any traffic");
    }

    let mut cap = Capture::start(c.net.wan.ns(), c.net.wan.bridge(), "ip proto 47");
    assert!(
        ping(&a.ns, "10.7.0.2", 3, Duration::from_secs(10)),
        "VM a cannot ping tap VM b across hosts"
    );
    assert!(
        ping(&cc.ns, "10.7.0.1", 3, Duration::from_secs(10)),
        "VM c cannot ping VM a across hosts"
    );
    assert!(
        ping(&b_ns, "10.7.0.3", 3, Duration::from_secs(10)),
        "tap VM b cannot ping VM c"
    );

    // Tunnels came up on demand, on both ends, keyed with the network.
    for h in 0..3 {
        let t = tunnels(&c, h);
        assert_eq!(t.len(), 2, "host {h} should have a tunnel to each other host: {t:?}");
        assert!(t.iter().all(|t| t["key"] == vnet), "{t:?}");
    }

    let elapsed = tcp_transfer(
        &a.ns,
        &b_ns,
        Ipv4Addr::new(10, 7, 0, 2),
        5001,
        50 * MB,
        Duration::from_secs(120),
    );
    let mbps = 50.0 * 8.0 * 1.048576 / elapsed.as_secs_f64();
    println!("cross-host TCP (veth VM -> tap VM, offloads on): 50 MiB in {elapsed:?} = {mbps:.0} Mbit/s");
    let elapsed = tcp_transfer(
        &cc.ns,
        &a.ns,
        Ipv4Addr::new(10, 7, 0, 1),
        5002,
        50 * MB,
        Duration::from_secs(120),
    );
    let mbps = 50.0 * 8.0 * 1.048576 / elapsed.as_secs_f64();
    println!("cross-host TCP (veth VM -> veth VM, offloads on): 50 MiB in {elapsed:?} = {mbps:.0} Mbit/s");

    cap.stop();
    // Fields of the outer IPv4 header come first where the inner frame is IPv4 too.
    let keys = cap.decode(
        "gre",
        &[
            "gre.key",
            "gre.proto",
            "eth.type",
            "ip.flags.df",
            "ip.flags.mf",
            "ip.frag_offset",
            "ip.len",
        ],
    );
    let lines: Vec<&str> = keys.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no GRE on the WAN");
    let outer = |f: &str| tshark_num(f.split(',').next().unwrap_or(""));
    for l in &lines {
        let f: Vec<&str> = l.split('\t').collect();
        assert_eq!(
            tshark_num(f[0]),
            Some(vnet as u64),
            "GRE key is not the network id: {l}"
        );
        // Ethernet over GRE, which tshark decodes, and nothing else (no offload format).
        assert_eq!(tshark_num(f[1]), Some(0x6558), "not Ethernet over GRE: {l}");
        assert!(
            f.get(2).is_some_and(|t| !t.is_empty()),
            "inner Ethernet not decoded: {l}"
        );
        // Every packet whole, with DF, within the 1500-byte underlay: the TCP transfers'
        // super-frames were cut into segments, not left to IP fragmentation.
        assert_eq!(outer(f[3]), Some(1), "outer DF not set: {l}");
        assert_eq!((outer(f[4]), outer(f[5])), (Some(0), Some(0)), "an outer fragment: {l}");
        assert!(outer(f[6]).is_some_and(|n| n <= 1500), "over the underlay MTU: {l}");
    }
    println!(
        "GRE on the WAN: {} packets, all key {vnet}, Ethernet over GRE, DF set, none over 1500 bytes",
        lines.len()
    );

    // Nothing malformed was counted along the way.
    for h in 0..3 {
        let s = c.ctl_json(h, &["stats"]);
        assert_eq!(s["datapath"]["gre_rx_malformed"], 0, "host {h}: {s}");
        assert_eq!(s["datapath"]["drop_offload"], 0, "host {h}: {s}");
    }
}

/// A tunnel exists only after traffic needs it and is gone on both ends after the idle time.
#[test]
fn idle_tunnels_are_released_on_both_ends() {
    let _logs = TestLogs::new("idle_tunnels_are_released_on_both_ends");
    let c = Cluster::start(2, &["--tunnel-idle", "2s"]);
    let a = c.vm_system(0, "a", "02:00:00:00:00:01", "10.0.0.1/24", 0);
    let _b = c.vm_system(1, "b", "02:00:00:00:00:02", "10.0.0.2/24", 0);
    assert!(tunnels(&c, 0).is_empty() && tunnels(&c, 1).is_empty());
    assert!(ping(&a.ns, "10.0.0.2", 2, Duration::from_secs(10)));
    assert_eq!(tunnels(&c, 0).len(), 1);
    assert_eq!(tunnels(&c, 1).len(), 1);
    let started = Instant::now();
    let gone = wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        tunnels(&c, 0).is_empty() && tunnels(&c, 1).is_empty()
    });
    assert!(gone, "tunnels still there: {:?} / {:?}", tunnels(&c, 0), tunnels(&c, 1));
    println!(
        "tunnel released on both ends {:?} after traffic stopped (idle limit 2 s)",
        started.elapsed()
    );
    // And traffic brings it back.
    assert!(ping(&a.ns, "10.0.0.2", 2, Duration::from_secs(10)));
    assert_eq!(tunnels(&c, 0).len(), 1);
}

/// A VM's NIC moves from host B to host C with the same MAC and IP and announces itself with
/// one gratuitous ARP; traffic from host A reaches it again. Prints move→reachable.
#[test]
fn vm_moves_between_hosts() {
    let _logs = TestLogs::new("vm_moves_between_hosts");
    let mut c = Cluster::start(3, &[]);
    let a = c.vm_system(0, "a", "02:00:00:00:00:0a", "10.0.0.10/24", 0);
    let m = c.vm_system(1, "m", "02:00:00:00:00:0b", "10.0.0.11/24", 0);
    assert!(ping(&a.ns, "10.0.0.11", 3, Duration::from_secs(10)));

    // Move: the NIC on host B goes away, a new one with the same MAC/IP appears on host C.
    c.move_vm_system(&m, 1, 2);

    let moved_at = Instant::now();
    announce(&m);
    let reachable = wait_until(Duration::from_secs(10), Duration::from_millis(1), || {
        ping(&a.ns, "10.0.0.11", 1, Duration::from_millis(200))
    });
    let took = moved_at.elapsed();
    if !reachable {
        eprintln!("host C: {}\n{}", c.ctl(2, &["show"]), c.ctl(2, &["stats"]));
        eprintln!("host B: {}", c.ctl(1, &["flows"]));
    }
    assert!(reachable, "VM not reachable after its move");
    println!("move -> reachable from host A: {:.1} ms", took.as_secs_f64() * 1000.0);
    let ctl = c.controller.as_mut().unwrap();
    assert!(
        ctl.wait_for_log("MAC move re-pointed on every switch", Duration::from_secs(5)),
        "controller logged no re-point"
    );
    for line in ctl.logs().lines().filter(|l| l.contains("move_repointed_ms")) {
        println!("controller: {}", line.trim());
    }
    // The old host's entry now points into a tunnel to host C.
    let flows = c.ctl_json(1, &["flows"]);
    let entry = flows
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["mac"] == "02:00:00:00:00:0b")
        .cloned();
    let entry = entry.unwrap_or_else(|| panic!("old host has no entry for the moved MAC: {flows}"));
    assert!(
        entry["out_port"].as_u64().unwrap() >= 0x4000,
        "old host still points at a local port: {entry}"
    );
    c.kill_controller();
}

/// Killing the controller does not stop established flows; after it restarts, a new flow works.
#[test]
fn controller_restart_keeps_established_flows() {
    let _logs = TestLogs::new("controller_restart_keeps_established_flows");
    let mut c = Cluster::start(2, &[]);
    let a = c.vm_system(0, "a", "02:00:00:00:00:21", "10.0.0.21/24", 0);
    let b = c.vm_system(1, "b", "02:00:00:00:00:22", "10.0.0.22/24", 0);
    assert!(ping(&a.ns, "10.0.0.22", 2, Duration::from_secs(10)));

    c.kill_controller();
    let gone = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        c.try_ctl_json(0, &["show"])
            .is_some_and(|v| v["controller_connected"] == false)
    });
    assert!(gone, "switch did not notice the controller's death");
    assert!(
        ping(&a.ns, "10.0.0.22", 3, Duration::from_secs(5)),
        "established flow stopped without the controller"
    );
    tcp_transfer(
        &b.ns,
        &a.ns,
        Ipv4Addr::new(10, 0, 0, 21),
        5003,
        5 * MB,
        Duration::from_secs(60),
    );

    c.start_controller();
    c.wait_connected();
    // A VM that never talked before.
    let d = c.vm_system(1, "d", "02:00:00:00:00:23", "10.0.0.23/24", 0);
    assert!(
        ping(&a.ns, "10.0.0.23", 2, Duration::from_secs(10)),
        "new flow after the controller restart"
    );
    assert!(ping(&d.ns, "10.0.0.21", 2, Duration::from_secs(10)));
}

/// A port whose interface disappears (a deleted veth, a VM gone) is dropped with a log line;
/// the switch keeps running and forwarding for everyone else.
#[test]
fn vanished_interface_is_dropped_and_the_switch_keeps_running() {
    let _logs = TestLogs::new("vanished_interface_is_dropped");
    let mut c = Cluster::start(2, &[]);
    let a = c.vm_system(0, "a", "02:00:00:00:00:41", "10.0.0.41/24", 0);
    let b = c.vm_system(1, "b", "02:00:00:00:00:42", "10.0.0.42/24", 0);
    assert!(ping(&a.ns, "10.0.0.42", 2, Duration::from_secs(10)));

    b.ns.ip(&["link", "del", "eth0"]);
    let dropped = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        c.ctl_json(1, &["show"])["ports"]
            .as_array()
            .is_some_and(|p| p.is_empty())
    });
    assert!(dropped, "the vanished port is still listed: {}", c.ctl(1, &["show"]));
    let sw = c.switches[1].as_mut().unwrap();
    sw.assert_running();
    assert!(sw.wait_for_log("port removed", Duration::from_secs(2)));

    let d = c.vm_system(1, "d", "02:00:00:00:00:43", "10.0.0.43/24", 0);
    assert!(
        ping(&d.ns, "10.0.0.41", 2, Duration::from_secs(10)),
        "the switch stopped forwarding"
    );
}
