//! The whole datapath with real I/O, for instruction counting under callgrind (see
//! bench/PROFILE.md): one worker forwards N 64-byte frames from one veth port to another.
//!
//!   valgrind --tool=callgrind --separate-threads=yes target/release/examples/forward N
//!
//! Needs root: it runs in a network namespace of its own (unshare), with two veth pairs
//! in0/in1 and out0/out1. The switch owns in0 and out0 as `system` ports; the main thread
//! writes N frames into in1 (as fast as it can, so the worker's queue holds many at once) and
//! waits until the worker has sent them all out of out0. The worker's thread (callgrind's
//! thread 2) holds the datapath's instructions: divide by N, after subtracting an N = 0 run.

use cloudrack_vswitch::dp::fib::{Fib, LocalPort, PortKind};
use cloudrack_vswitch::dp::{Datapath, DatapathConfig};
use cloudrack_vswitch::pipeline::{normal_table_miss, Pipeline};
use cloudrack_vswitch::port::afpacket::AfPacketPort;
use cloudrack_vswitch::port::PortIo;
use cloudrack_wire::ofp::{Action, FlowMod, Instruction, Match, Oxm};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SRC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const DST: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn ip(args: &[&str]) {
    let ok = std::process::Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ip {args:?} failed");
}

fn port(port_no: u32, name: &str) -> LocalPort {
    LocalPort {
        port_no,
        name: name.into(),
        kind: PortKind::System,
        vnet: 0,
        io: Arc::new(AfPacketPort::open(name).expect("open port")),
        counters: Arc::default(),
        worker: 0,
        bound_macs: Vec::new(),
    }
}

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    // SAFETY: called before any other thread exists; later threads inherit the namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        eprintln!("forward: needs root (unshare(CLONE_NEWNET) failed)");
        std::process::exit(2);
    }
    ip(&["link", "set", "lo", "up"]);
    for (a, b) in [("in0", "in1"), ("out0", "out1")] {
        ip(&["link", "add", a, "type", "veth", "peer", "name", b]);
        ip(&["link", "set", a, "up"]);
        ip(&["link", "set", b, "up"]);
    }
    let (dp, _channels) = Datapath::start(DatapathConfig {
        workers: 1,
        gre: None,
        gre_fanout: None,
        claim_host_gre: false,
        underlay_ip: std::net::Ipv4Addr::LOCALHOST,
        underlay_mtu: 1500,
        underlay_mtu_cap: None,
        packet_in_rate: 0,
        packet_in_burst: 0,
        cpu_pin: None,
    })
    .expect("datapath");
    let mut fib = Fib::default();
    let out = port(2, "out0");
    let out_counters = out.counters.clone();
    fib.local.insert(1, port(1, "in0"));
    fib.local.insert(2, out);
    let mut pipeline = Pipeline::new(100);
    pipeline.insert(normal_table_miss());
    for (mac, p) in [(SRC, 1), (DST, 2)] {
        pipeline
            .flow_mod(&FlowMod {
                priority: 100,
                match_: Match::new()
                    .with(Oxm::TunnelId { id: 0, mask: None })
                    .with(Oxm::EthDst { mac, mask: None }),
                instructions: vec![Instruction::ApplyActions(vec![Action::output(p)])],
                ..FlowMod::default()
            })
            .expect("flow");
    }
    fib.pipeline = pipeline;
    fib.rebuild_flood();
    dp.publish(fib);
    std::thread::sleep(Duration::from_millis(300));

    let tx = AfPacketPort::open("in1").expect("sender");
    let mut frame = [0u8; 64];
    frame[..6].copy_from_slice(&DST);
    frame[6..12].copy_from_slice(&SRC);
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    let none = Default::default();
    let start = Instant::now();
    let mut sent = 0;
    while sent < n {
        if tx.send(&none, &frame).is_ok() {
            sent += 1;
        } else {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while out_counters.tx_packets.load(Relaxed) < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let fwd = out_counters.tx_packets.load(Relaxed);
    let w = dp.shared.workers[0].snapshot();
    println!(
        "forward: {fwd} of {n} frames in {:?}; worker {}",
        start.elapsed(),
        serde_json::to_string(&w).unwrap_or_default()
    );
    dp.stop();
}
