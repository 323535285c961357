//! A standby, an election, a takeover: the registries loaded from the store, reconciled with
//! what the switches answer, traffic held meanwhile; and a registering switch reconciled.

use super::*;

#[test]
fn a_standby_changes_nothing_until_elected_then_takes_over_from_the_store() {
    let changes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let m_at = loc(2, 5);
    let store = FixedStore {
        snapshot: Snapshot {
            locations: vec![LocationRecord {
                vnet: NET,
                mac: VM_M,
                at: m_at,
                port_gone: false,
            }],
            ..Default::default()
        },
        changes: changes.clone(),
    };
    let mut r = rig_with(App::with_store(config(), Box::new(store), Role::Standby), 2);
    r.app.handle(Event::Leader {
        generation: 41,
        name: "other".into(),
    });
    // Told who is master, a standby declares itself SLAVE with that generation.
    for d in 1..=2 {
        let bodies = r.drain(d);
        assert!(asks_role(&bodies, ofp::OFPCR_ROLE_SLAVE, 41), "{bodies:?}");
    }
    // Traffic reaches a standby only by mistake: it acts on none of it and writes nothing.
    r.packet_in(1, 1, VM_M, VM_A);
    assert!(r.drain(1).is_empty() && r.drain(2).is_empty());
    assert!(changes.lock().unwrap().is_empty(), "a standby wrote to the store");
    assert_eq!(r.app.commander.locate(NET, &VM_A), None);

    r.app.handle(Event::Elected { generation: 42 });
    let mut asked = Vec::new();
    for d in 1..=2 {
        let msgs = r.rx[d - 1].take_messages();
        let bodies: Vec<Body> = msgs.iter().map(|m| m.body.clone()).collect();
        assert!(
            asks_role(&bodies, ofp::OFPCR_ROLE_MASTER, 42),
            "no MASTER request to {d}: {bodies:?}"
        );
        asked.push(questions(&msgs));
    }
    assert_eq!(
        r.app.commander.locate(NET, &VM_M),
        Some(m_at),
        "location loaded from the store"
    );
    // The first frame to the VM the store knew goes straight there once the switches
    // have said what they have: no flood.
    r.packet_in(1, 1, VM_M, VM_A);
    assert!(r.drain(2).is_empty(), "acted on traffic before reconciling");
    r.answer(1, asked[0], &[1], &[]);
    r.answer(2, asked[1], &[5], &[]);
    assert_eq!(r.app.counters.unknown_destinations, 0);
    assert!(flows(&r.drain(2)).contains(&(VM_M, 5)));
    let changes = changes.lock().unwrap();
    assert!(changes.iter().any(|c| matches!(c, Change::Host { dpid: Dpid(1), .. })));
    assert!(changes.iter().any(|c| matches!(c, Change::HostUp { dpid: Dpid(2) })));
    assert!(changes
        .iter()
        .any(|c| matches!(c, Change::Location { mac, at, .. } if *mac == VM_A && at.dpid == Dpid(1))));
    assert!(changes.iter().any(|c| matches!(c, Change::Tunnel(_))));
}

#[test]
fn losing_the_election_lease_stops_the_controller() {
    let mut r = rig_with(App::with_store(config(), Box::new(MemoryStore), Role::Standby), 1);
    assert!(r.app.must_stop().is_none());
    r.app.handle(Event::Elected { generation: 1 });
    r.app.handle(Event::LeadershipLost {
        reason: "lease expired".into(),
    });
    assert_eq!(r.app.must_stop(), Some("lease expired"));
}

/// The scenario of issue 14: M's port on host 2 was deleted while nobody was master, M
/// moved to host 3 and its announcement was lost. The new master loads M at host 2.
#[test]
fn a_takeover_releases_macs_whose_port_is_gone_and_finds_the_vm_again() {
    let (mut r, changes, asked) = taken_over(vec![at(2, 5)]);
    // Nothing is concluded until every switch has answered.
    r.answer(1, asked[0], &[1, T, T + 1], &[(VM_M, T), (VM_A, 1)]);
    r.answer(2, asked[1], &[T], &[(VM_A, T)]);
    assert!(!r.app.commander.released(NET, &VM_M));
    r.answer(3, asked[2], &[9, T], &[]);
    assert!(r.app.commander.released(NET, &VM_M), "port 5 of host 2 is gone");
    assert!(changes.lock().unwrap().contains(&Change::LocationReleased {
        vnet: NET,
        mac: VM_M,
        at: loc(2, 5),
    }));
    assert_eq!(r.app.counters.macs_released, 1);
    assert_eq!(r.app.commander.locate(NET, &VM_A), Some(loc(1, 1)));
    // Host 1's flow to M leads into host 2's void: deleted, so its traffic comes to us.
    assert_eq!(deletes(&r.drain(1)), vec![(VM_M, T)]);
    r.packet_in(1, 1, VM_M, VM_A);
    assert_eq!(r.app.counters.unknown_destinations, 1, "flooded to find M");
    let floods = |bodies: Vec<Body>| {
        bodies
            .iter()
            .any(|b| matches!(b, Body::PacketOut(po) if po.actions.contains(&Action::output(ofp::OFPP_FLOOD))))
    };
    r.app.handle(Event::Message {
        conn: 3,
        msg: Message::new(5, TccsMsg::PortVnet { port_no: 9, vnet: 0 }.to_body()),
    });
    r.packet_in(1, 1, VM_M, VM_A);
    assert!(floods(r.drain(3)), "host 3 floods it to its ports");
    // M answers from its new port, unbound: taken as the move it is, not refused.
    r.packet_in(3, 9, VM_A, VM_M);
    assert_eq!(r.app.counters.moves_refused, 0);
    assert_eq!(r.app.commander.locate(NET, &VM_M), Some(loc(3, 9)));
    assert!(!r.app.commander.released(NET, &VM_M));
    assert!(flows(&r.drain(3)).contains(&(VM_M, 9)));
}

/// The dead master saw M move to host 3 and re-pointed the switches; the store still says
/// host 2, whose port is gone. The switches are right.
#[test]
fn a_takeover_takes_a_move_the_store_missed_from_the_switches() {
    let (mut r, changes, asked) = taken_over(vec![at(2, 5)]);
    r.answer(1, asked[0], &[1, T, T + 1], &[(VM_M, T + 1)]);
    r.answer(2, asked[1], &[T], &[]);
    r.answer(3, asked[2], &[9, T], &[(VM_M, 9)]);
    assert_eq!(r.app.commander.locate(NET, &VM_M), Some(loc(3, 9)));
    assert!(!r.app.commander.released(NET, &VM_M));
    assert!(changes.lock().unwrap().contains(&Change::Location {
        vnet: NET,
        mac: VM_M,
        at: loc(3, 9),
    }));
    assert!(deletes(&r.drain(1)).is_empty(), "host 1 already leads to host 3");
    assert_eq!(r.app.counters.macs_adopted, 1);
}

/// A flow to a port its switch no longer has goes; a flow through the tunnel to a host the
/// MAC is not on is re-pointed; a location loaded as released stays released.
#[test]
fn a_takeover_deletes_flows_to_missing_ports_and_repoints_stale_ones() {
    let gone = LocationRecord {
        mac: VM_X,
        port_gone: true,
        ..at(2, 6)
    };
    let (mut r, _changes, asked) = taken_over(vec![at(3, 9), gone]);
    assert!(r.app.commander.released(NET, &VM_X), "loaded as released");
    r.answer(1, asked[0], &[1, T, T + 1], &[(VM_M, T), (VM_X, T)]);
    r.answer(2, asked[1], &[T], &[(VM_A, 77)]);
    r.answer(3, asked[2], &[9, T], &[(VM_M, 9)]);
    let h1 = r.drain(1);
    assert!(flows(&h1).contains(&(VM_M, T + 1)), "re-pointed to host 3: {h1:?}");
    assert_eq!(deletes(&h1), vec![(VM_X, T)], "X's old host is a void");
    assert_eq!(deletes(&r.drain(2)), vec![(VM_A, 77)]);
    assert_eq!(r.app.counters.stale_flows_deleted, 2);
    assert_eq!(r.app.counters.flows_repointed, 1);
}

/// A switch registering with a master: what it no longer has is released there too, and a
/// switch that cannot describe its ports releases nothing. Without a store, its flows
/// teach where its VMs are (a restarted controller).
#[test]
fn a_registering_switch_is_reconciled() {
    let mut r = rig(2);
    r.packet_in(2, 5, BROADCAST, VM_M);
    r.drain_all();
    // Switch 2 comes back without port 5, with a VM on port 6 the controller never saw.
    let reg = TccsMsg::Register {
        dpid: 2,
        underlay_ip: Ipv4Addr::new(198, 18, 0, 2),
        underlay_mac: [2, 0, 0, 0, 1, 2],
    };
    r.app.handle(Event::Message {
        conn: 2,
        msg: Message::new(2, reg.to_body()),
    });
    let asked = questions(&r.rx[1].take_messages());
    r.answer(2, asked, &[6], &[(VM_X, 6)]);
    assert!(r.app.commander.released(NET, &VM_M));
    assert_eq!(r.app.commander.locate(NET, &VM_X), Some(loc(2, 6)));

    // Switch 1 refuses the PORT_DESC request: its VM stays where it is.
    r.packet_in(1, 1, BROADCAST, VM_A);
    let reg = TccsMsg::Register {
        dpid: 1,
        underlay_ip: Ipv4Addr::new(198, 18, 0, 1),
        underlay_mac: [2, 0, 0, 0, 1, 1],
    };
    r.app.handle(Event::Message {
        conn: 1,
        msg: Message::new(2, reg.to_body()),
    });
    let (ports_xid, flows_xid) = questions(&r.rx[0].take_messages());
    let refusal = Body::error_reply(ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_BAD_MULTIPART, &[]);
    r.app.handle(Event::Message {
        conn: 1,
        msg: Message::new(ports_xid, refusal),
    });
    r.app.handle(Event::Message {
        conn: 1,
        msg: Message::new(
            flows_xid,
            Body::MultipartReply {
                flags: 0,
                body: MultipartReplyBody::Flow(vec![]),
            },
        ),
    });
    assert_eq!(r.app.counters.reconciliations, 2);
    assert!(!r.app.commander.released(NET, &VM_A));
}

/// A switch that never answers does not hold the others' round back for ever.
#[test]
fn a_silent_switch_is_left_out_after_the_timeout() {
    let (mut r, _changes, asked) = taken_over(vec![at(2, 5)]);
    r.answer(1, asked[0], &[1], &[]);
    r.answer(2, asked[1], &[T], &[]);
    r.app.tick();
    assert!(!r.app.commander.released(NET, &VM_M));
    for round in r.app.reconciler.finished(Instant::now() + crate::reconcile::TIMEOUT) {
        r.app.reconcile(round);
    }
    assert!(r.app.commander.released(NET, &VM_M));
    assert_eq!(r.app.counters.reconcile_unanswered, 1);
}

/// Tunnels as the switches have them: one the registry knew that a switch lost is
/// forgotten (its other end deleted); one a switch has that the registry never knew is
/// deleted; the next flow gets a tunnel that exists.
#[test]
fn a_takeover_forgets_lost_tunnels_and_deletes_unknown_ones() {
    let (mut r, changes, asked) = taken_over(vec![at(3, 9)]);
    // Host 2 lost its end of the 1-2 tunnel; host 3 has one the registry does not know.
    r.answer(1, asked[0], &[1, T, T + 1], &[]);
    r.answer(2, asked[1], &[], &[]);
    r.answer(3, asked[2], &[9, T, T + 7], &[]);
    let tunnel_dels = |bodies: Vec<Body>| -> Vec<u32> {
        bodies
            .iter()
            .filter_map(|b| match TccsMsg::from_body(b) {
                Some(Ok(TccsMsg::TunnelDel { port_no, .. })) => Some(port_no),
                _ => None,
            })
            .collect()
    };
    assert_eq!(tunnel_dels(r.drain(1)), vec![T], "host 1's end of the lost tunnel");
    assert_eq!(tunnel_dels(r.drain(3)), vec![T + 7]);
    assert!(r.app.tccs.between(Dpid(1), Dpid(2), NET).is_none());
    assert!(changes
        .lock()
        .unwrap()
        .iter()
        .any(|c| matches!(c, Change::TunnelGone(t) if t.b == Dpid(2))));
    assert_eq!(r.app.counters.tunnels_forgotten, 1);
    assert_eq!(r.app.counters.unknown_tunnels_deleted, 1);
    // A frame between hosts 1 and 2 brings a new tunnel up (not a port that is gone).
    r.packet_in(2, 4, BROADCAST, VM_X);
    r.drain_all();
    r.packet_in(1, 1, VM_X, VM_A);
    assert_eq!(tunnel_adds(&r.drain(1)).len(), 1);
}

/// Frames that arrive while a new master reconciles are handled after it, in order.
#[test]
fn traffic_waits_for_the_takeover_to_reconcile() {
    let (mut r, _changes, asked) = taken_over(vec![at(2, 5)]);
    r.packet_in(3, 9, BROADCAST, VM_M); // M announces itself where it moved to
    assert_eq!(r.app.held.len(), 1);
    r.answer(1, asked[0], &[1, T, T + 1], &[]);
    r.answer(2, asked[1], &[T], &[]);
    r.answer(3, asked[2], &[9, T], &[]);
    assert!(r.app.held.is_empty());
    assert_eq!(r.app.counters.moves_refused, 0, "M's old port was gone first");
    assert_eq!(r.app.commander.locate(NET, &VM_M), Some(loc(3, 9)));
}

/// The registry lost a MAC (its etcd records expired, say): a flow towards a host that
/// does not deliver it goes, and one towards the host that does stays.
#[test]
fn a_takeover_drops_flows_to_hosts_that_do_not_deliver_an_unknown_mac() {
    let (mut r, _changes, asked) = taken_over(vec![]);
    r.answer(1, asked[0], &[1, T, T + 1], &[(VM_M, T), (VM_X, T + 1)]);
    r.answer(2, asked[1], &[T], &[]);
    r.answer(3, asked[2], &[9, T], &[(VM_X, 9)]);
    assert_eq!(deletes(&r.drain(1)), vec![(VM_M, T)]);
    assert_eq!(r.app.commander.locate(NET, &VM_M), None);
    assert_eq!(r.app.commander.locate(NET, &VM_X), Some(loc(3, 9)));
}
