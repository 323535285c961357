//! The whole datapath without root: a worker, the pipeline, its caches and the output sink,
//! with in-memory ports (`port::mem`). Frames go in through one port's peer end and are read
//! back at the others.

use super::fib::{Fib, LocalPort, PortKind};
use super::{Datapath, DatapathConfig};
use crate::pipeline::{normal_table_miss, Pipeline};
use crate::port::mem::{self, MemPeer};
use cloudrack_wire::ofp::{self, Action, FlowMod, Instruction, Match, Oxm};
use cloudrack_wire::vnet_hdr::VnetHdr;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_millis(500);

fn start() -> Datapath {
    Datapath::start(DatapathConfig {
        workers: 1,
        gre: None,
        gre_fanout: None,
        claim_host_gre: false,
        underlay_ip: std::net::Ipv4Addr::LOCALHOST,
        underlay_mtu: 1500,
        underlay_mtu_cap: None,
        packet_in_rate: 100,
        packet_in_burst: 100,
        cpu_pin: None,
    })
    .expect("datapath")
    .0
}

/// A FIB with memory ports 1..=n in network 0, and their peers.
fn ports(n: u32) -> (Fib, Vec<MemPeer>) {
    let mut fib = Fib::default();
    let mut peers = Vec::new();
    for p in 1..=n {
        let (port, peer) = mem::pair(&format!("mem{p}")).expect("socket pair");
        fib.local.insert(
            p,
            LocalPort {
                port_no: p,
                name: format!("mem{p}"),
                kind: PortKind::System,
                vnet: 0,
                io: Arc::new(port),
                counters: Arc::default(),
                worker: 0,
                bound_macs: Vec::new(),
            },
        );
        peers.push(peer);
    }
    fib.rebuild_flood();
    (fib, peers)
}

fn udp(dst_last: u8) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, dst_last, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0, 0, 30, 0, 1, 0, 0, 64, 17, 0x66, 0xbe, 10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(&[0x13, 0x88, 0x13, 0x89, 0, 10, 0, 0, 0xab, 0xcd]);
    f
}

fn flow(m: Match, actions: Vec<Action>) -> FlowMod {
    FlowMod {
        priority: 10,
        match_: m,
        instructions: vec![Instruction::ApplyActions(actions)],
        ..FlowMod::default()
    }
}

#[test]
fn frames_follow_the_flows_and_a_changed_flow_at_once() {
    let dp = start();
    let (mut fib, peers) = ports(3);
    let mut p = Pipeline::new(100);
    let rewrite = Action::SetField(Oxm::EthDst {
        mac: [2, 0, 0, 0, 0, 9],
        mask: None,
    });
    p.flow_mod(&flow(
        Match::new().with(Oxm::InPort(1)),
        vec![rewrite.clone(), Action::output(2)],
    ))
    .unwrap();
    fib.pipeline = p.clone();
    dp.publish(fib.clone());
    for _ in 0..3 {
        peers[0].send(&VnetHdr::default(), &udp(2)).unwrap();
        let (_, got) = peers[1].recv(WAIT).expect("port 2 got nothing");
        assert_eq!(got[..6], [2, 0, 0, 0, 0, 9], "eth_dst not rewritten");
        assert_eq!(got[6..], udp(2)[6..]);
    }
    assert!(peers[2].recv(Duration::from_millis(50)).is_none());
    // Re-pointed: the very next frame goes to port 3, whatever the worker cached.
    let mut modify = flow(Match::new().with(Oxm::InPort(1)), vec![Action::output(3)]);
    modify.command = ofp::OFPFC_MODIFY;
    p.flow_mod(&modify).unwrap();
    fib.pipeline = p;
    dp.publish(fib);
    peers[0].send(&VnetHdr::default(), &udp(2)).unwrap();
    assert_eq!(peers[2].recv(WAIT).expect("port 3 got nothing").1, udp(2));
    assert!(
        peers[1].recv(Duration::from_millis(50)).is_none(),
        "a stale cached flow forwarded"
    );
    let w = &dp.shared.workers[0];
    assert!(w.upcalls.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    assert!(w.emc_hits.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    dp.stop();
}

#[test]
fn the_l2_service_floods_broadcasts_in_the_network_and_drops_garbage() {
    let dp = start();
    let (mut fib, peers) = ports(3);
    let mut p = Pipeline::new(100);
    p.insert(normal_table_miss());
    fib.pipeline = p;
    dp.publish(fib);
    let mut bcast = udp(2);
    bcast[..6].fill(0xff);
    peers[0].send(&VnetHdr::default(), &bcast).unwrap();
    assert_eq!(peers[1].recv(WAIT).expect("port 2").1, bcast);
    assert_eq!(peers[2].recv(WAIT).expect("port 3").1, bcast);
    assert!(
        peers[0].recv(Duration::from_millis(50)).is_none(),
        "flooded back to its sender"
    );
    // A runt and a multicast source: counted, not sent.
    peers[0].send(&VnetHdr::default(), &[1, 2, 3]).unwrap();
    let mut mcast_src = bcast.clone();
    mcast_src[6] = 1;
    peers[0].send(&VnetHdr::default(), &mcast_src).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let c = &dp.shared.counters;
    assert_eq!(c.drop_runt.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(c.drop_bad_src_mac.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert!(peers[1].recv(Duration::from_millis(50)).is_none());
    // Forwarding goes on.
    peers[0].send(&VnetHdr::default(), &bcast).unwrap();
    assert!(peers[1].recv(WAIT).is_some());
    dp.stop();
}
