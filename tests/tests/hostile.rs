//! Bad input never stops the switch or the controller: thousands of malformed frames,
//! truncated and garbage GRE packets, and garbage OpenFlow are thrown at a running deployment;
//! forwarding between VMs still works afterwards and the drop counters counted what was dropped.

use cloudrack_tests::*;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Send raw IPPROTO_GRE payloads (the kernel adds the IPv4 header) from `ns` to `dst`.
fn send_gre(ns: &Netns, dst: Ipv4Addr, packets: Vec<Vec<u8>>) {
    ns.enter(move || {
        // SAFETY: plain socket calls on a descriptor we own and close.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, 47);
            assert!(fd >= 0, "raw GRE socket");
            let mut sin: libc::sockaddr_in = std::mem::zeroed();
            sin.sin_family = libc::AF_INET as u16;
            sin.sin_addr.s_addr = u32::from(dst).to_be();
            for p in &packets {
                libc::sendto(
                    fd,
                    p.as_ptr() as *const libc::c_void,
                    p.len(),
                    0,
                    &sin as *const libc::sockaddr_in as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                );
            }
            libc::close(fd);
        }
    });
}

fn counter(c: &Cluster, host: usize, name: &str) -> u64 {
    c.ctl_json(host, &["stats"])["datapath"][name].as_u64().unwrap_or(0)
}

#[test]
fn garbage_is_counted_and_forwarding_goes_on() {
    let _logs = TestLogs::new("garbage_is_counted_and_forwarding_goes_on");
    let mut c = Cluster::start_with(2, 2, &[], &["--ofp-listen", "127.0.0.1:6634"]);
    let a = c.vm_system(0, "a", "02:00:00:00:0e:01", "10.14.0.1/24", 0);
    let b = c.vm_system(1, "b", "02:00:00:00:0e:02", "10.14.0.2/24", 0);
    assert!(ping(&a.ns, "10.14.0.2", 2, Duration::from_secs(10)));
    let target = c.net[0].underlay_ip;

    // 1. Garbage GRE from host 1 (which has a real tunnel to host 0) and from a stranger.
    let mut bad = Vec::new();
    for i in 0..1000u32 {
        let p = match i % 5 {
            0 => vec![0x20],                                                       // truncated base header
            1 => vec![0x20, 0x00, 0x65, 0x58, 0, 0],                               // K set, key missing
            2 => vec![0x20, 0x01, 0x65, 0x58, 0, 0, 0, 0],                         // version 1
            3 => vec![0x40, 0x00, 0x65, 0x58, 0, 0, 0, 0],                         // routing bit (crashes pnet)
            _ => [&[0x20, 0x00, 0x08, 0x00, 0, 0, 0, 0][..], &[0u8; 40]].concat(), // not Ethernet
        };
        bad.push(p);
    }
    // C bit with a wrong checksum over a full frame.
    let mut csum = vec![0xa0, 0x00, 0x65, 0x58, 0xde, 0xad, 0, 0, 0, 0, 0, 0];
    csum.extend_from_slice(&[0x55; 60]);
    bad.extend(std::iter::repeat_n(csum, 500));
    send_gre(&c.net[1].ns, target, bad);
    let malformed = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        counter(&c, 0, "gre_rx_malformed") >= 1000 && counter(&c, 0, "gre_rx_bad_checksum") >= 500
    });
    assert!(malformed, "GRE garbage not counted: {}", c.ctl(0, &["stats"]));

    // 2. Frames a VM should never send: multicast source MACs, thousands of them.
    let frame = {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[0x01, 0x00, 0x5e, 0, 0, 1]);
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(60, 0xab);
        f
    };
    a.ns.enter(move || raw_send_many("eth0", &frame, 2000));
    let counted = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        counter(&c, 0, "drop_bad_src_mac") >= 2000
    });
    assert!(counted, "bad source MACs not counted: {}", c.ctl(0, &["stats"]));

    // 3. Garbage OpenFlow at the switch's listener and at the controller.
    let junk: Vec<Vec<u8>> = vec![
        vec![0x04, 0x00, 0x00, 0x04, 0, 0, 0, 1], // length below the header
        vec![0x04, 0x0e, 0x00, 0x10, 0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8], // truncated FLOW_MOD
        vec![0x63, 0x05, 0x00, 0x08, 0, 0, 0, 3], // unknown version
        (0..4000u32).map(|i| (i * 7919 % 251) as u8).collect(), // noise
    ];
    for addr in [
        SocketAddr::from(([127, 0, 0, 1], 6634)),
        SocketAddr::from((target, CONTROLLER_PORT)),
    ] {
        for j in &junk {
            let j = j.clone();
            c.net[0].ns.enter(move || {
                if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                    let _ = s.write_all(&j);
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
        }
    }
    assert!(
        counter(&c, 0, "ofp_rx_malformed") >= 2,
        "switch did not count bad OpenFlow: {}",
        c.ctl(0, &["stats"])
    );
    // The controller speaks TLS: garbage fails the handshake, and is counted there.
    let counted = wait_until(Duration::from_secs(3), Duration::from_millis(100), || {
        let s = &c.controller_status()["server"];
        s["tls_refused"].as_u64().unwrap_or(0) + s["malformed"].as_u64().unwrap_or(0) >= junk.len() as u64
    });
    assert!(
        counted,
        "controller did not count the garbage: {}",
        c.controller_status()
    );
    let ctl = c.controller.as_mut().unwrap();
    assert!(ctl.logs().contains("switch refused: no valid certificate"));
    ctl.assert_running();
    for sw in c.switches.iter_mut().flatten() {
        sw.assert_running();
    }

    // Forwarding still works, for known flows and for a new one.
    assert!(ping(&a.ns, "10.14.0.2", 3, Duration::from_secs(5)), "known flow broke");
    let d = c.vm_system(1, "d", "02:00:00:00:0e:04", "10.14.0.4/24", 0);
    assert!(
        ping(&d.ns, "10.14.0.1", 2, Duration::from_secs(10)),
        "new flow after the garbage"
    );
    let t = tcp_transfer(
        &a.ns,
        &b.ns,
        Ipv4Addr::new(10, 14, 0, 2),
        7201,
        10 * 1024 * 1024,
        Duration::from_secs(60),
    );
    println!(
        "after the garbage: 10 MiB intact in {t:?}; counters: {}",
        c.ctl(0, &["stats", "--json"])
    );
}
