//! GRE receive over several workers (`--workers 2`): the receiving switch reads GRE on one
//! AF_PACKET fanout socket per worker. Many UDP flows cross the tunnel; every datagram is
//! numbered, and the receiver checks that none arrives twice, that both workers received GRE,
//! and that a 65 000-byte datagram from a VM whose MTU allows it still arrives whole (the first
//! is answered with ICMP "fragmentation needed", the VM learns the path MTU and fragments);
//! and that the raw-socket fallback (`--gre-raw-receive`) still carries traffic. Also: the
//! workers of `--cpu-pin LIST` run only on the listed CPU.

use cloudrack_tests::*;
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

const FLOWS: u16 = 16;
const PER_FLOW: u32 = 200;

#[test]
fn gre_is_spread_over_workers_and_never_duplicated() {
    let _logs = TestLogs::new("gre_is_spread_over_workers_and_never_duplicated");
    let c = Cluster::start_with(2, 2, &[], &["--workers", "2"]);
    let a = c.vm_system(0, "a", "02:00:00:00:0a:01", "10.10.0.1/24", 0);
    let d = c.vm_system(1, "d", "02:00:00:00:0a:04", "10.10.0.4/24", 0);
    for (ns, ifname) in [(&a.ns, "eth0"), (&d.ns, "eth0")] {
        set_mtu(ns, ifname, 65_000);
    }
    set_mtu(&c.net[0].ns, &a.host_if, 65_000);
    set_mtu(&c.net[1].ns, &d.host_if, 65_000);
    assert!(
        ping(&a.ns, "10.10.0.4", 2, Duration::from_secs(10)),
        "no path across the tunnel"
    );
    let s = c.ctl_json(1, &["stats"]);
    assert_eq!(s["gre_receive"], "fanout", "host 1 did not set up fanout: {s}");
    assert_eq!(
        s["gre_claimed_from_host_stack"], true,
        "host 1 did not claim GRE at tc ingress: {s}"
    );

    let dst = Ipv4Addr::new(10, 10, 0, 4);
    let rx =
        d.ns.enter(move || UdpSocket::bind(SocketAddr::from((dst, 9000))).expect("bind"));
    rx.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let senders: Vec<UdpSocket> = (0..FLOWS)
        .map(|_| a.ns.enter(|| UdpSocket::bind("0.0.0.0:0").expect("bind sender")))
        .collect();
    let before: Vec<u64> = worker_gre_rx(&c, 1);

    // Paced a little (a burst per round over all flows) so the receiver's socket never fills:
    // the test is about duplicates, not loss.
    let mut seen = HashSet::new();
    let mut dups = 0u32;
    let mut buf = vec![0u8; 70_000];
    for seq in 0..PER_FLOW {
        for (f, tx) in senders.iter().enumerate() {
            let mut msg = [0u8; 64];
            msg[..2].copy_from_slice(&(f as u16).to_be_bytes());
            msg[2..6].copy_from_slice(&seq.to_be_bytes());
            tx.send_to(&msg, SocketAddr::from((dst, 9000))).expect("send");
        }
        rx.set_nonblocking(true).unwrap();
        while let Ok(n) = rx.recv(&mut buf) {
            if n == 64 && !seen.insert((buf[0], buf[1], buf[2], buf[3], buf[4], buf[5])) {
                dups += 1;
            }
        }
        rx.set_nonblocking(false).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    while let Ok(n) = rx.recv(&mut buf) {
        if n == 64 && !seen.insert((buf[0], buf[1], buf[2], buf[3], buf[4], buf[5])) {
            dups += 1;
        }
    }
    let total = FLOWS as usize * PER_FLOW as usize;
    println!("{} of {total} datagrams arrived, {dups} twice", seen.len());
    assert_eq!(dups, 0, "datagrams delivered twice");
    assert!(seen.len() * 10 >= total * 9, "only {} of {total} arrived", seen.len());

    let after = worker_gre_rx(&c, 1);
    let per_worker: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    println!("GRE packets per worker on host 1: {per_worker:?}");
    assert_eq!(per_worker.len(), 2);
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "one worker got all GRE: {per_worker:?}"
    );
    assert!(
        per_worker.iter().sum::<u64>() < total as u64 * 2,
        "more GRE packets than sent: {per_worker:?}"
    );

    // A 65 000-byte datagram: the first one, DF set, is answered with ICMP "fragmentation
    // needed"; the VM then fragments it to the path MTU and it arrives whole.
    let want: Vec<u8> = (0..65_000 - 42).map(|i| (i as u8).wrapping_mul(7)).collect();
    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut ok = false;
    for _ in 0..5 {
        senders[0].send_to(&want, SocketAddr::from((dst, 9000))).expect("send");
        if let Ok(n) = rx.recv(&mut buf) {
            if n == 64 {
                continue;
            }
            assert_eq!(n, want.len());
            assert!(buf[..n] == want[..], "the 65 000-byte frame arrived corrupted");
            ok = true;
            break;
        }
    }
    assert!(ok, "the 65 000-byte frame never arrived");
    let s = c.ctl_json(0, &["stats"]);
    assert!(
        s["datapath"]["icmp_too_big_sent"].as_u64().unwrap_or(0) >= 1,
        "the VM was never told the path MTU: {s}"
    );
    for h in 0..2 {
        let s = c.ctl_json(h, &["stats"]);
        assert_eq!(s["datapath"]["gre_rx_malformed"], 0, "host {h}: {s}");
    }
}

fn worker_gre_rx(c: &Cluster, host: usize) -> Vec<u64> {
    let s = c.ctl_json(host, &["stats"]);
    s["per_worker"]
        .as_array()
        .unwrap_or_else(|| panic!("no per_worker in {s}"))
        .iter()
        .map(|w| w["gre_rx_packets"].as_u64().unwrap_or(0))
        .collect()
}

/// The fallback (also taken when fanout cannot be set up): one raw socket, one worker.
#[test]
fn gre_raw_receive_still_works() {
    let _logs = TestLogs::new("gre_raw_receive_still_works");
    let c = Cluster::start_with(2, 2, &[], &["--workers", "2", "--gre-raw-receive"]);
    let a = c.vm_system(0, "a", "02:00:00:00:0b:01", "10.11.0.1/24", 0);
    let _d = c.vm_system(1, "d", "02:00:00:00:0b:04", "10.11.0.4/24", 0);
    assert!(
        ping(&a.ns, "10.11.0.4", 3, Duration::from_secs(10)),
        "no path across the tunnel"
    );
    let s = c.ctl_json(1, &["stats"]);
    assert_eq!(s["gre_receive"], "raw socket", "{s}");
    assert_eq!(
        s["gre_claimed_from_host_stack"], false,
        "the raw socket needs the IP stack: {s}"
    );
    let per_worker = worker_gre_rx(&c, 1);
    assert!(per_worker[0] > 0 && per_worker[1] == 0, "{per_worker:?}");
}

/// `--cpu-pin LIST`: every datapath worker thread of the switch may run only on the listed CPU.
#[test]
fn workers_are_pinned_to_the_listed_cpu() {
    let _logs = TestLogs::new("workers_are_pinned_to_the_listed_cpu");
    let last = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) - 1;
    let cpu = last.to_string();
    let c = Cluster::start_with(1, 1, &[], &["--workers", "2", "--cpu-pin", &cpu]);
    let pid = c.switches[0].as_ref().expect("switch").pid();
    let mut pinned = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("dp-worker") {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).unwrap();
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(str::trim)
            .unwrap_or("?")
            .to_string();
        pinned.push((comm.trim().to_string(), allowed));
    }
    assert_eq!(pinned.len(), 2, "worker threads: {pinned:?}");
    assert!(
        pinned.iter().all(|(_, a)| *a == cpu),
        "not all on CPU {cpu}: {pinned:?}"
    );
}
