//! Learning, tunnels on demand, moves, broadcasts, and what a spoofing or MAC-inventing VM
//! gets.

use super::*;

#[test]
fn first_packet_brings_up_a_tunnel_and_flows_on_both_ends() {
    let mut r = rig(2);
    r.packet_in(2, 5, BROADCAST, VM_M); // M announces itself on host 2, port 5
    r.drain_all();
    r.packet_in(1, 1, VM_M, VM_A); // A (host 1, port 1) sends to M
    let h1 = r.drain(1);
    let h2 = r.drain(2);
    let t1 = tunnel_adds(&h1);
    let t2 = tunnel_adds(&h2);
    assert_eq!(t1.len(), 1, "{h1:?}");
    assert_eq!(t2.len(), 1, "{h2:?}");
    assert_eq!(t1[0].0, Ipv4Addr::new(198, 18, 0, 2));
    assert!(
        flows(&h1).contains(&(VM_M, t1[0].1)),
        "host 1 forwards to M through its tunnel"
    );
    assert!(
        flows(&h2).contains(&(VM_A, t2[0].1)),
        "host 2 forwards replies to A through its tunnel"
    );
    assert!(flows(&h2).contains(&(VM_M, 5)), "host 2 delivers to M locally");
    // The first frame itself is delivered by PACKET_OUT at M's host.
    assert!(h2
        .iter()
        .any(|b| matches!(b, Body::PacketOut(po) if po.actions.contains(&Action::output(5)))));
}

#[test]
fn a_migration_notice_repoints_every_holder_and_the_old_host() {
    let mut r = rig(3);
    r.packet_in(2, 5, BROADCAST, VM_M);
    r.packet_in(1, 1, VM_M, VM_A);
    r.drain_all();
    // The destination (host 3, port 9) declared the VM, and announces it at the source's STOP.
    r.bind(3, 9, VM_M);
    let notice = TccsMsg::MigrationNotify {
        vnet: 0,
        mac: VM_M.0,
        dst_dpid: 3,
        phase: cloudrack_wire::tccs::MIGRATION_STOPPED,
        dst_port: 9,
    };
    r.app.handle(Event::Message {
        conn: 3,
        msg: Message::new(4, notice.to_body()),
    });
    let (h1, h2, h3) = (r.drain(1), r.drain(2), r.drain(3));
    assert!(flows(&h3).contains(&(VM_M, 9)), "destination delivers locally: {h3:?}");
    let to3 = |bodies: &[Body]| {
        tunnel_adds(bodies)
            .iter()
            .find(|(ip, _)| *ip == Ipv4Addr::new(198, 18, 0, 3))
            .map(|t| t.1)
    };
    let p1 = to3(&h1).expect("host 1 gets a tunnel to host 3");
    let p2 = to3(&h2).expect("the old host gets a tunnel to host 3");
    assert!(flows(&h1).contains(&(VM_M, p1)), "{h1:?}");
    assert!(flows(&h2).contains(&(VM_M, p2)), "{h2:?}");
    assert_eq!(r.app.commander.locate(NET, &VM_M), Some(loc(3, 9)));
    // Every switch answers the barrier: the move is complete and timed.
    for (d, bodies) in [(1u64, &h1), (2, &h2), (3, &h3)] {
        assert!(
            bodies.iter().any(|b| matches!(b, Body::BarrierRequest)),
            "no barrier to {d}"
        );
    }
    assert!(r.app.move_times_ms.is_empty());
    let xids: Vec<(Dpid, u32)> = r.app.moves[0].waiting.iter().copied().collect();
    for (d, xid) in xids {
        r.app.handle(Event::Message {
            conn: d.0,
            msg: Message::new(xid, Body::BarrierReply),
        });
    }
    assert_eq!(r.app.move_times_ms.len(), 1);
    // The VM's own announce afterwards changes nothing.
    r.packet_in(3, 9, BROADCAST, VM_M);
    assert!(flows(&r.drain(1)).is_empty());
}

#[test]
fn a_spoofed_mac_steals_nothing_and_goes_nowhere() {
    let mut r = rig(3);
    r.packet_in(2, 5, BROADCAST, VM_M);
    r.packet_in(1, 1, VM_M, VM_A);
    r.drain_all();
    // Host 3's port 7 is not bound to M: its gratuitous ARP, and a unicast, with M's MAC.
    r.packet_in(3, 7, BROADCAST, VM_M);
    r.packet_in(3, 7, VM_A, VM_M);
    let (h1, h2, h3) = (r.drain(1), r.drain(2), r.drain(3));
    assert_eq!(r.app.commander.locate(NET, &VM_M), Some(loc(2, 5)));
    for (d, bodies) in [(1, &h1), (2, &h2), (3, &h3)] {
        assert!(bodies.is_empty(), "host {d} was told something: {bodies:?}");
    }
    assert_eq!(r.app.counters.moves_refused, 2);
    // Bound, the same port takes it over (a migration's destination).
    r.bind(3, 7, VM_M);
    r.packet_in(3, 7, BROADCAST, VM_M);
    assert_eq!(r.app.commander.locate(NET, &VM_M), Some(loc(3, 7)));
    assert!(!flows(&r.drain(1)).is_empty(), "the holder was re-pointed");
}

#[test]
fn a_port_inventing_macs_is_capped() {
    let mut r = rig(2);
    r.app.commander.limits.macs_per_port = 10;
    for i in 0..1000u32 {
        let b = i.to_be_bytes();
        r.packet_in(1, 1, BROADCAST, Mac([2, 0xee, b[0], b[1], b[2], b[3]]));
    }
    assert_eq!(r.app.commander.len(), 10);
    assert_eq!(r.app.counters.macs_refused_full, 990);
    // Other ports still learn.
    r.packet_in(2, 5, BROADCAST, VM_M);
    assert_eq!(r.app.commander.locate(NET, &VM_M), Some(loc(2, 5)));
}

#[test]
fn broadcasts_are_relayed_only_to_hosts_in_the_network() {
    let mut r = rig(3);
    for (d, vnet) in [(2u64, 0u32), (3, 7)] {
        let pv = TccsMsg::PortVnet { port_no: 1, vnet };
        r.app.handle(Event::Message {
            conn: d,
            msg: Message::new(5, pv.to_body()),
        });
    }
    r.packet_in(1, 1, BROADCAST, VM_A);
    let relayed = |bodies: Vec<Body>| bodies.iter().any(|b| matches!(b, Body::PacketOut(_)));
    assert!(relayed(r.drain(2)), "host 2 has a port in network 0");
    assert!(!relayed(r.drain(3)), "host 3 has none");
}

#[test]
fn a_notice_from_another_switch_is_ignored() {
    let mut r = rig(3);
    r.packet_in(2, 5, BROADCAST, VM_M);
    let notice = TccsMsg::MigrationNotify {
        vnet: 0,
        mac: VM_M.0,
        dst_dpid: 3,
        phase: 2,
        dst_port: 9,
    };
    r.app.handle(Event::Message {
        conn: 1,
        msg: Message::new(4, notice.to_body()),
    });
    assert_eq!(r.app.commander.locate(NET, &VM_M), Some(loc(2, 5)));
}

/// A tunnel end deleted on a switch: the tunnel is forgotten (a standby too, so it will not
/// send flows into it after a takeover) and the master deletes the other end.
#[test]
fn a_deleted_tunnel_end_is_forgotten() {
    let mut r = rig(2);
    r.packet_in(2, 5, BROADCAST, VM_M);
    r.packet_in(1, 1, VM_M, VM_A);
    let t = r
        .app
        .tccs
        .between(Dpid(1), Dpid(2), NET)
        .expect("a tunnel between 1 and 2");
    r.drain_all();
    let gone = Body::PortStatus {
        reason: ofp::OFPPR_DELETE,
        desc: ofp::PortDesc::live(t.port_a.0, [0; 6], "gre-198.18.0.2"),
    };
    r.app.handle(Event::Message {
        conn: 1,
        msg: Message::new(0, gone),
    });
    assert!(r.app.tccs.between(Dpid(1), Dpid(2), NET).is_none());
    let dels: Vec<u32> = r
        .drain(2)
        .iter()
        .filter_map(|b| match TccsMsg::from_body(b) {
            Some(Ok(TccsMsg::TunnelDel { port_no, .. })) => Some(port_no),
            _ => None,
        })
        .collect();
    assert_eq!(dels, vec![t.port_b.0]);
}
