//! Tenants and hostile VMs, end to end in namespaces (runs as root):
//! - two virtual networks that use the same MACs and the same IPs on the same hosts stay apart,
//!   unicast and broadcast, on the VMs' wires and on the WAN;
//! - a VM that sends with another VM's MAC (gratuitous ARP, RARP as QEMU announces, unicast)
//!   takes none of its traffic; only a port bound to the VM may take its MAC over;
//! - a VM inventing source MACs is capped and rate-limited while a ping next to it goes on.

use cloudrack_tests::*;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Send `n` UDP datagrams carrying `mark` from `ns` to `dst:9999` (no receiver needed: the
/// captures look for the mark).
fn udp_mark(ns: &Netns, dst: Ipv4Addr, mark: &'static str, n: usize) {
    ns.enter(move || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("udp socket");
        for _ in 0..n {
            let _ = s.send_to(mark.as_bytes(), SocketAddr::from((dst, 9999)));
            std::thread::sleep(Duration::from_millis(5));
        }
    });
}

/// Lines tshark prints for `filter` in a capture (empty lines dropped).
fn matching(cap: &mut Capture, filter: &str, fields: &[&str]) -> Vec<String> {
    cap.decode(filter, fields)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

fn arping(ns: &Netns, ip: &str) {
    // No reply is expected: the request itself is the broadcast under test.
    let _ = ns.exec(&["arping", "-c", "3", "-w", "2", "-I", "eth0", ip]);
}

#[test]
fn two_tenants_with_the_same_macs_and_ips_stay_apart() {
    let _logs = TestLogs::new("two_tenants_with_the_same_macs_and_ips_stay_apart");
    let c = Cluster::start(3, &[]);
    let (one, two) = (101u32, 102u32);
    const MAC_A: &str = "02:00:00:00:50:01";
    const MAC_B: &str = "02:00:00:00:50:02";
    // Tenant one on hosts 0 and 1; tenant two on hosts 0, 1 and 2, with the same addresses.
    let t1a = c.vm_system(0, "t1a", MAC_A, "10.50.0.1/24", one);
    let t1b = c.vm_system(1, "t1b", MAC_B, "10.50.0.2/24", one);
    let t2a = c.vm_system(0, "t2a", MAC_A, "10.50.0.1/24", two);
    let t2b = c.vm_system(1, "t2b", MAC_B, "10.50.0.2/24", two);
    let t2c = c.vm_system(2, "t2c", "02:00:00:00:50:03", "10.50.0.3/24", two);

    let mut wan = Capture::start(c.net.wan.ns(), c.net.wan.bridge(), "ip proto 47");
    let mut caps: Vec<(&str, Capture)> = [
        ("t1a", &t1a),
        ("t1b", &t1b),
        ("t2a", &t2a),
        ("t2b", &t2b),
        ("t2c", &t2c),
    ]
    .into_iter()
    .map(|(n, vm)| (n, Capture::start(&vm.ns, "eth0", "")))
    .collect();

    assert!(
        ping(&t1a.ns, "10.50.0.2", 3, Duration::from_secs(10)),
        "tenant one: a -> b"
    );
    assert!(
        ping(&t2a.ns, "10.50.0.2", 3, Duration::from_secs(10)),
        "tenant two: a -> b"
    );
    assert!(
        ping(&t2c.ns, "10.50.0.1", 3, Duration::from_secs(10)),
        "tenant two: c -> a"
    );
    udp_mark(&t1a.ns, Ipv4Addr::new(10, 50, 0, 2), "cloudrack-tenant-one", 20);
    udp_mark(&t2a.ns, Ipv4Addr::new(10, 50, 0, 2), "cloudrack-tenant-two", 20);
    udp_mark(&t1b.ns, Ipv4Addr::new(10, 50, 0, 1), "cloudrack-tenant-one", 20);
    // Broadcasts: ARP for addresses nobody has, one per tenant.
    arping(&t1a.ns, "10.50.0.91");
    arping(&t2b.ns, "10.50.0.92");
    // Both tenants move data between the same IPs at once, every byte checked.
    let ip_b = Ipv4Addr::new(10, 50, 0, 2);
    std::thread::scope(|sc| {
        let h = sc.spawn(|| tcp_transfer(&t1a.ns, &t1b.ns, ip_b, 7301, 8 << 20, Duration::from_secs(60)));
        tcp_transfer(&t2a.ns, &t2b.ns, ip_b, 7301, 8 << 20, Duration::from_secs(60));
        h.join().expect("tenant one's transfer");
    });

    let mark = |t: &str| format!("frame contains \"cloudrack-tenant-{t}\"");
    let arp_for = |ip: &str| format!("arp.dst.proto_ipv4 == {ip}");
    for (name, cap) in caps.iter_mut() {
        let (own, other, own_arp, other_arp) = if name.starts_with("t1") {
            ("one", "two", "10.50.0.91", "10.50.0.92")
        } else {
            ("two", "one", "10.50.0.92", "10.50.0.91")
        };
        let leaked = matching(
            cap,
            &format!("{} || {}", mark(other), arp_for(other_arp)),
            &["frame.number"],
        );
        assert!(
            leaked.is_empty(),
            "{name} saw {} frames of the other tenant",
            leaked.len()
        );
        // Positive controls: the capture works and each tenant's own traffic arrives.
        if *name == "t1b" || *name == "t2b" {
            assert!(
                !matching(cap, &mark(own), &["frame.number"]).is_empty(),
                "{name} got none of its own"
            );
        }
        if *name != "t1a" && *name != "t2b" {
            assert!(
                !matching(cap, &arp_for(own_arp), &["frame.number"]).is_empty(),
                "{name} missed its own tenant's broadcast"
            );
        }
    }

    // On the WAN: each tenant's frames only under its own GRE key, and tenant one never goes to
    // host 2, which has no port in its network.
    let host2 = c.net[2].underlay_ip.to_string();
    for (t, key) in [("one", one), ("two", two)] {
        let lines = matching(&mut wan, &mark(t), &["gre.key", "ip.dst"]);
        assert!(!lines.is_empty(), "no GRE carried tenant {t}");
        for l in &lines {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(
                tshark_num(f[0]),
                Some(key as u64),
                "tenant {t} under the wrong key: {l}"
            );
        }
    }
    let keys = matching(&mut wan, &format!("ip.dst == {host2}"), &["gre.key"]);
    assert!(
        keys.iter().all(|k| tshark_num(k) == Some(two as u64)),
        "host 2 got GRE of a network it has no port in: {keys:?}"
    );

    // The switches keep each network's entries apart: the same MAC, two places.
    let flows = c.ctl_json(0, &["flows"]);
    let out = |vnet: u32| {
        flows
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["mac"] == MAC_B && f["vnet"] == vnet)
            .map(|f| f["out_port"].clone())
            .unwrap_or_else(|| panic!("host 0 has no entry for {MAC_B} in network {vnet}: {flows}"))
    };
    assert_ne!(out(one), out(two), "both networks share an entry");
}

/// A gratuitous ARP claiming `mac`/`ip`, a RARP from `mac` (QEMU's announce after a migration)
/// and unicast frames from `mac` to `peer_mac`, all sent from `ifname` in `ns`.
fn spoof(ns: &Netns, ifname: &str, mac: [u8; 6], ip: Ipv4Addr, peer_mac: [u8; 6], unicast: usize) {
    send_garp(ns, ifname, mac, ip);
    let ifname = ifname.to_string();
    ns.enter(move || {
        let mut rarp = vec![0xff; 6];
        rarp.extend_from_slice(&mac);
        rarp.extend_from_slice(&[0x80, 0x35, 0, 1, 0x08, 0, 6, 4, 0, 3]);
        rarp.extend_from_slice(&mac);
        rarp.extend_from_slice(&[0; 4]);
        rarp.extend_from_slice(&mac);
        rarp.extend_from_slice(&[0; 4]);
        rarp.resize(60, 0);
        raw_send_many(&ifname, &rarp, 3);
        let mut f = peer_mac.to_vec();
        f.extend_from_slice(&mac);
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(60, 0x5a);
        raw_send_many(&ifname, &f, unicast);
    });
}

fn dp_counter(c: &Cluster, host: usize, name: &str) -> u64 {
    c.ctl_json(host, &["stats"])["datapath"][name].as_u64().unwrap_or(0)
}

fn out_port_for(c: &Cluster, host: usize, mac: &str) -> serde_json::Value {
    let flows = c.ctl_json(host, &["flows"]);
    flows
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["mac"] == mac)
        .map(|f| f["out_port"].clone())
        .unwrap_or_else(|| panic!("host {host} has no entry for {mac}: {flows}"))
}

#[test]
fn a_vm_sending_with_another_vms_mac_steals_nothing() {
    let _logs = TestLogs::new("a_vm_sending_with_another_vms_mac_steals_nothing");
    let mut c = Cluster::start(3, &[]);
    const P_MAC: &str = "02:00:00:00:5a:01";
    const V_MAC: &str = "02:00:00:00:5a:02";
    let v_ip = Ipv4Addr::new(10, 60, 0, 2);
    let p = c.vm_system(0, "p", P_MAC, "10.60.0.1/24", 0);
    let v = c.vm_system(1, "v", V_MAC, "10.60.0.2/24", 0);
    // The attacker on an unbound port, and a second one on a port bound to its own MAC.
    let x = c.vm_system(2, "x", "02:00:00:00:5a:66", "10.60.0.66/24", 0);
    let y = c.vm_system_bound(2, "y", "02:00:00:00:5a:77", "10.60.0.77/24", 0);
    assert!(ping(&p.ns, "10.60.0.2", 3, Duration::from_secs(10)));
    assert!(ping(&x.ns, "10.60.0.1", 2, Duration::from_secs(10)));
    assert!(ping(&y.ns, "10.60.0.1", 2, Duration::from_secs(10)));
    let before = out_port_for(&c, 0, V_MAC);

    let mut at_x = Capture::start(&x.ns, "eth0", "icmp");
    let spoofed_before = dp_counter(&c, 2, "drop_spoofed");
    for (who, vm) in [("unbound x", &x), ("bound y", &y)] {
        spoof(&vm.ns, "eth0", mac_bytes(V_MAC), v_ip, mac_bytes(P_MAC), 200);
        // Traffic to V still reaches V, right away and later.
        let s = ping_stats(&p.ns, "10.60.0.2", 10, Duration::from_secs(3));
        assert_eq!(s.received, 10, "after {who}'s spoofing, P -> V lost pings: {s:?}");
    }
    tcp_transfer(&p.ns, &v.ns, v_ip, 7302, 4 << 20, Duration::from_secs(60));
    assert_eq!(
        out_port_for(&c, 0, V_MAC),
        before,
        "host 0's entry for V was re-pointed"
    );
    let stolen = matching(&mut at_x, "icmp.type == 8 && ip.dst == 10.60.0.2", &["frame.number"]);
    assert!(
        stolen.is_empty(),
        "the attacker received {} pings meant for V",
        stolen.len()
    );
    // The bound port dropped the spoofed frames itself; the controller refused the unbound one.
    assert!(
        dp_counter(&c, 2, "drop_spoofed") >= spoofed_before + 200,
        "host 2 did not count spoofed frames: {}",
        c.ctl(2, &["stats"])
    );
    let ctl = c.controller.as_mut().unwrap();
    assert!(
        ctl.wait_for_log("refused a MAC at this port", Duration::from_secs(3)),
        "controller logged no refusal"
    );
    assert!(!ctl.logs().contains("MAC moved"), "the controller moved a MAC");
    let status = wait_for_status(&c, |s| s["counters"]["moves_refused"].as_u64() > Some(0));
    println!("controller after the spoofing: {}", status["counters"]);

    // A real move: V's destination port on host 2 is bound to V first; V's old NIC goes quiet
    // (as a migrated VM's source does) and V announces itself from host 2.
    let v2 = c.vm_system_bound(2, "v2", V_MAC, "10.60.0.2/24", 0);
    v.ns.ip(&["link", "set", "eth0", "down"]);
    let moved = Instant::now();
    announce(&v2);
    let reachable = wait_until(Duration::from_secs(10), Duration::from_millis(5), || {
        ping(&p.ns, "10.60.0.2", 1, Duration::from_millis(300))
    });
    assert!(reachable, "V not reachable at its bound destination");
    println!(
        "bound move -> reachable: {:.1} ms",
        moved.elapsed().as_secs_f64() * 1000.0
    );
    assert_ne!(
        out_port_for(&c, 0, V_MAC),
        before,
        "host 0 still points at V's old host"
    );
}

/// Waits up to 5 s for a controller state report that satisfies `ok`; returns the last one.
fn wait_for_status(c: &Cluster, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        last = c.controller_status();
        ok(&last)
    });
    assert!(ok(&last), "controller state never got there: {last}");
    last
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn a_mac_flood_is_capped_and_a_ping_next_to_it_goes_on() {
    let _logs = TestLogs::new("a_mac_flood_is_capped_and_a_ping_next_to_it_goes_on");
    let cap = 100;
    let c = Cluster::start(2, &["--max-macs-per-port", &cap.to_string()]);
    let f = c.vm_system(0, "f", "02:00:00:00:5f:01", "10.61.0.1/24", 0);
    let p = c.vm_system(0, "p", "02:00:00:00:5f:02", "10.61.0.2/24", 0);
    let _q = c.vm_system(1, "q", "02:00:00:00:5f:03", "10.61.0.3/24", 0);
    assert!(ping(&p.ns, "10.61.0.3", 3, Duration::from_secs(10)));
    let ctl_pid = c.controller.as_ref().unwrap().pid();
    let rss_before = rss_kib(ctl_pid);

    // R has not talked yet: its first conversation, during the flood, needs the controller.
    let r = c.vm_system(1, "r", "02:00:00:00:5f:04", "10.61.0.4/24", 0);

    // The flood: 3 s of frames from ever-new source MACs, broadcast and unicast to Q.
    let (sent, s, fresh) = std::thread::scope(|sc| {
        let flooder = sc.spawn(|| {
            f.ns.enter(|| {
                let q_mac = mac_bytes("02:00:00:00:5f:03");
                let started = Instant::now();
                let mut i = 0u32;
                let mut sent = 0;
                while started.elapsed() < Duration::from_secs(3) {
                    let batch = (0..2000).map(|_| {
                        i += 1;
                        let b = i.to_be_bytes();
                        let dst = if i.is_multiple_of(2) { q_mac } else { [0xff; 6] };
                        let mut fr = dst.to_vec();
                        fr.extend_from_slice(&[0x02, 0xf1, b[0], b[1], b[2], b[3]]);
                        fr.extend_from_slice(&[0x08, 0x00]);
                        fr.resize(60, 0);
                        fr
                    });
                    sent += raw_send_each("eth0", batch);
                }
                sent
            })
        });
        let fresh = sc.spawn(|| {
            std::thread::sleep(Duration::from_millis(500));
            ping(&r.ns, "10.61.0.2", 2, Duration::from_secs(2))
        });
        // Next to it, P pings Q every 100 ms.
        let s = ping_stats(&p.ns, "10.61.0.3", 25, Duration::from_secs(4));
        (flooder.join().expect("flooder"), s, fresh.join().expect("fresh ping"))
    });
    println!("flood: {sent} frames from new source MACs; ping next to it: {s:?}; new flow during it: {fresh}");
    assert!(
        sent > 10_000,
        "the flood was too weak to prove anything ({sent} frames)"
    );
    assert!(
        s.received * 10 >= s.sent * 9,
        "the ping next to the flood lost more than 10%: {s:?}"
    );
    assert!(fresh, "a new conversation during the flood did not get through");

    assert!(
        dp_counter(&c, 0, "packet_in_rate_limited") > 0,
        "the switch rate-limited nothing: {}",
        c.ctl(0, &["stats"])
    );
    let status = wait_for_status(&c, |s| s["counters"]["macs_refused_full"].as_u64() > Some(0));
    let locations = status["locations"].as_u64().unwrap_or(u64::MAX);
    assert!(
        locations <= cap as u64 + 10,
        "the controller holds {locations} locations, cap {cap} per port"
    );
    let rss_after = rss_kib(ctl_pid);
    println!(
        "controller: {locations} locations, counters {}, RSS {rss_before} -> {rss_after} KiB",
        status["counters"]
    );
    assert!(
        rss_after < rss_before + 32 * 1024,
        "controller memory grew by {} KiB under the flood",
        rss_after - rss_before
    );
    let flows = c.ctl_json(0, &["stats"])["flows"].as_u64().unwrap_or(u64::MAX);
    assert!(flows <= cap as u64 + 10, "host 0 holds {flows} flows");
}
