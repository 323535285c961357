//! Every port kind carries every frame size intact, offloads left on: veth (`system`) and
//! switch-owned tap ports, same host and across a GRE tunnel, frames of 64, 1458, 1500, 9000 and
//! 65000 bytes (the VM interfaces get an MTU that allows them), plus offloaded TCP. Across a
//! tunnel, a datagram over the path MTU is first answered with ICMP "fragmentation needed" (the
//! switch does not fragment what the VM sent with DF); the VM learns the path MTU, fragments
//! the retry, and the fragments cross as whole GRE packets.
//! Not a timing test: it checks bytes, not speed.

use cloudrack_tests::*;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

const FRAME_SIZES: [usize; 5] = [64, 1458, 1500, 9000, 65_000];
/// Ethernet + IPv4 + UDP headers.
const UDP_OVERHEAD: usize = 14 + 20 + 8;
const MTU: u32 = 65_000;

fn payload(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Send one UDP datagram per frame size from `src` to `dst_ip` and check each arrives whole.
fn udp_sizes(src: &Netns, dst: &Netns, dst_ip: Ipv4Addr, port: u16, what: &str) {
    let rx = dst.enter(move || UdpSocket::bind(SocketAddr::from((dst_ip, port))).expect("bind"));
    rx.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let tx = src.enter(|| UdpSocket::bind("0.0.0.0:0").expect("bind sender"));
    let mut buf = vec![0u8; 70_000];
    for (k, frame) in FRAME_SIZES.iter().enumerate() {
        let want = payload(frame - UDP_OVERHEAD, k as u8);
        // A datagram can be lost before the first exchange set up the path: retry a few times.
        let mut ok = false;
        for _ in 0..5 {
            tx.send_to(&want, SocketAddr::from((dst_ip, port))).expect("send");
            match rx.recv(&mut buf) {
                Ok(n) => {
                    assert_eq!(
                        n,
                        want.len(),
                        "{what}: frame of {frame} bytes arrived with {n} payload bytes"
                    );
                    assert!(buf[..n] == want[..], "{what}: frame of {frame} bytes arrived corrupted");
                    ok = true;
                    break;
                }
                Err(_) => continue,
            }
        }
        assert!(ok, "{what}: a frame of {frame} bytes never arrived");
        println!("{what}: {frame}-byte frame intact");
    }
}

fn big_mtu(ns: &Netns, ifname: &str) {
    set_mtu(ns, ifname, MTU);
}

#[test]
fn every_port_kind_carries_every_frame_size() {
    let _logs = TestLogs::new("every_port_kind_carries_every_frame_size");
    let c = Cluster::start(2, &[]);
    // Host 0: two veth VMs. Host 1: a veth VM and a tap VM.
    let a = c.vm_system(0, "a", "02:00:00:00:09:01", "10.9.0.1/24", 0);
    let b = c.vm_system(0, "b", "02:00:00:00:09:02", "10.9.0.2/24", 0);
    let d = c.vm_system(1, "d", "02:00:00:00:09:04", "10.9.0.4/24", 0);
    let (t_ns, t_if) = c.vm_tap(1, "t", "02:00:00:00:09:03", "10.9.0.3/24", 0);
    for (vm, host) in [(&a, 0), (&b, 0), (&d, 1)] {
        big_mtu(&vm.ns, "eth0");
        big_mtu(&c.net[host].ns, &vm.host_if);
    }
    big_mtu(&t_ns, &t_if);
    for (ns, ip) in [
        (&a.ns, "10.9.0.2"),
        (&a.ns, "10.9.0.3"),
        (&a.ns, "10.9.0.4"),
        (&t_ns, "10.9.0.2"),
    ] {
        assert!(ping(ns, ip, 2, Duration::from_secs(10)), "no path to {ip}");
    }

    udp_sizes(
        &a.ns,
        &b.ns,
        Ipv4Addr::new(10, 9, 0, 2),
        7001,
        "veth -> veth, same host",
    );
    udp_sizes(&a.ns, &d.ns, Ipv4Addr::new(10, 9, 0, 4), 7002, "veth -> GRE -> veth");
    udp_sizes(&a.ns, &t_ns, Ipv4Addr::new(10, 9, 0, 3), 7003, "veth -> GRE -> tap");
    udp_sizes(&t_ns, &a.ns, Ipv4Addr::new(10, 9, 0, 1), 7004, "tap -> GRE -> veth");
    udp_sizes(&t_ns, &d.ns, Ipv4Addr::new(10, 9, 0, 4), 7005, "tap -> veth, same host");

    // Offloaded TCP (super-frames, partial checksums) along every path, every byte checked.
    let mb = 1024 * 1024;
    for (src, dst, ip, port, what) in [
        (
            &a.ns,
            &b.ns,
            Ipv4Addr::new(10, 9, 0, 2),
            7101,
            "veth -> veth, same host",
        ),
        (&a.ns, &d.ns, Ipv4Addr::new(10, 9, 0, 4), 7102, "veth -> GRE -> veth"),
        (&a.ns, &t_ns, Ipv4Addr::new(10, 9, 0, 3), 7103, "veth -> GRE -> tap"),
        (&t_ns, &a.ns, Ipv4Addr::new(10, 9, 0, 1), 7104, "tap -> GRE -> veth"),
        (&d.ns, &t_ns, Ipv4Addr::new(10, 9, 0, 3), 7105, "veth -> tap, same host"),
    ] {
        let t = tcp_transfer(src, dst, ip, port, 20 * mb, Duration::from_secs(60));
        println!("{what}: 20 MiB of TCP intact in {t:?}");
    }
    for h in 0..2 {
        let s = c.ctl_json(h, &["stats"]);
        assert_eq!(s["datapath"]["drop_offload"], 0, "host {h}: {s}");
        assert_eq!(s["datapath"]["gre_rx_malformed"], 0, "host {h}: {s}");
        assert!(
            s["datapath"]["icmp_too_big_sent"].as_u64().unwrap_or(0) >= 1,
            "host {h} never told a VM the path MTU: {s}"
        );
    }
}
