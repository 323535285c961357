//! OpenFlow 1.3.5 conformance over the wire, from the specification, with a scripted
//! controller and a real switch: FLOW_REMOVED (6.5, 7.4.2), PACKET_IN reasons and contents
//! (6.1.2, 7.4.1), the errors the spec names with the offending message's start (7.4.4),
//! barrier ordering (6.2), PACKET_OUT through the tables (7.3.7), group and meter statistics
//! (5.6, 5.7, 7.3.5).

use cloudrack_tests::*;
use cloudrack_wire::ofp::{self, Action, Body, FlowMod, Instruction, Match, MeterBand, MeterMod, Oxm};
use std::net::TcpListener;
use std::time::Duration;

/// A switch on one host with two VMs (ports 1 and 2), connected to a scripted controller that
/// starts by deleting every flow.
struct Bench {
    c: Cluster,
    peer: OfPeer,
    vms: Vec<Vm>,
}

fn setup(name: &str) -> Bench {
    let c = Cluster::new(HostNet::new(1), &["--plain-tcp"]);
    let l = c.net[0].ns.enter(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = format!("tcp:127.0.0.1:{}", l.local_addr().unwrap().port());
    let mut c = c;
    let sw = c.spawn_switch_as(0, &addr, Cluster::dpid(0), &[], &[]);
    c.switches.push(Some(sw));
    let mut peer = OfPeer::accept(&l);
    let vms = (1..=2)
        .map(|i| {
            c.vm_system(
                0,
                &format!("{name}{i}"),
                &format!("02:00:00:00:6c:0{i}"),
                &format!("10.108.0.{i}/24"),
                0,
            )
        })
        .collect();
    delete_all(&mut peer);
    Bench { c, peer, vms }
}

fn delete_all(p: &mut OfPeer) {
    p.request(Body::FlowMod(FlowMod {
        command: ofp::OFPFC_DELETE,
        table_id: ofp::OFPTT_ALL,
        ..FlowMod::default()
    }))
    .expect("delete all flows");
}

fn add(p: &mut OfPeer, fm: FlowMod) -> Result<(), (u16, u16)> {
    p.request(Body::FlowMod(fm))
}

fn apply(actions: Vec<Action>) -> Vec<Instruction> {
    vec![Instruction::ApplyActions(actions)]
}

/// A UDP frame from VM 1 to VM 2 of `len` bytes.
fn frame(len: usize) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0x6c, 2, 2, 0, 0, 0, 0x6c, 1, 0x08, 0x00];
    let ip_len = (len - 14) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&ip_len.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0, 0, 64, 17, 0, 0, 10, 108, 0, 1, 10, 108, 0, 2]);
    f.extend_from_slice(&[0x13, 0x88, 0x13, 0x89]);
    f.extend_from_slice(&(ip_len - 20).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.resize(len, 0xab);
    f
}

fn send_from_vm1(b: &Bench, f: &[u8], n: usize) {
    b.vms[0].ns.enter(|| raw_send_many("eth0", f, n));
}

#[test]
fn flow_removed_is_sent_for_timeouts_and_deletes_only_when_asked() {
    let _logs = TestLogs::new("flow_removed_is_sent_for_timeouts_and_deletes_only_when_asked");
    let mut b = setup("fr");
    let with = |cookie: u64, idle: u16, hard: u16, flags: u16, port: u32| FlowMod {
        cookie,
        priority: 10 + cookie as u16,
        idle_timeout: idle,
        hard_timeout: hard,
        flags,
        match_: Match::new().with(Oxm::InPort(port)),
        instructions: apply(vec![Action::output(1)]),
        ..FlowMod::default()
    };
    add(&mut b.peer, with(1, 1, 0, ofp::OFPFF_SEND_FLOW_REM, 7)).unwrap();
    add(&mut b.peer, with(2, 0, 2, ofp::OFPFF_SEND_FLOW_REM, 8)).unwrap();
    add(&mut b.peer, with(3, 1, 0, 0, 9)).unwrap();
    add(&mut b.peer, with(4, 0, 0, ofp::OFPFF_SEND_FLOW_REM, 10)).unwrap();
    let removed = |p: &mut OfPeer, cookie: u64| {
        p.wait_within(
            "FLOW_REMOVED",
            Duration::from_secs(5),
            |m| matches!(m, Body::FlowRemoved(r) if r.cookie == cookie),
        )
        .map(|m| match m.body {
            Body::FlowRemoved(r) => r,
            _ => unreachable!(),
        })
    };
    let r = removed(&mut b.peer, 1).expect("no FLOW_REMOVED for the idle entry");
    assert_eq!((r.reason, r.priority, r.idle_timeout), (ofp::OFPRR_IDLE_TIMEOUT, 11, 1));
    assert_eq!(r.match_.in_port(), Some(7));
    let r = removed(&mut b.peer, 2).expect("no FLOW_REMOVED for the hard-timeout entry");
    assert_eq!(r.reason, ofp::OFPRR_HARD_TIMEOUT);
    assert!(r.duration_sec >= 2, "{r:?}");
    b.peer
        .request(Body::FlowMod(FlowMod {
            command: ofp::OFPFC_DELETE_STRICT,
            priority: 14,
            match_: Match::new().with(Oxm::InPort(10)),
            ..FlowMod::default()
        }))
        .unwrap();
    let r = removed(&mut b.peer, 4).expect("no FLOW_REMOVED for the deleted entry");
    assert_eq!(r.reason, ofp::OFPRR_DELETE);
    // Entry 3 expired too, without the flag: nothing was sent for it.
    let flows = b.c.ctl_json(0, &["flows"]);
    assert!(flows.as_array().unwrap().is_empty(), "{flows}");
    assert!(
        removed(&mut b.peer, 3).is_none(),
        "FLOW_REMOVED without OFPFF_SEND_FLOW_REM"
    );
}

#[test]
fn packet_in_carries_reason_table_cookie_and_max_len() {
    let _logs = TestLogs::new("packet_in_carries_reason_table_cookie_and_max_len");
    let mut b = setup("pi");
    // Table 0 sends port 1's traffic to table 1; there, UDP goes to the controller with at
    // most 64 bytes; everything else misses into table 1's table-miss entry.
    add(
        &mut b.peer,
        FlowMod {
            priority: 5,
            match_: Match::new().with(Oxm::InPort(1)),
            instructions: vec![Instruction::GotoTable(1)],
            ..FlowMod::default()
        },
    )
    .unwrap();
    add(
        &mut b.peer,
        FlowMod {
            table_id: 1,
            cookie: 0x77,
            priority: 9,
            match_: Match::new().with(Oxm::EthType(0x0800)).with(Oxm::IpProto(17)),
            instructions: apply(vec![Action::Output {
                port: ofp::OFPP_CONTROLLER,
                max_len: 64,
            }]),
            ..FlowMod::default()
        },
    )
    .unwrap();
    add(
        &mut b.peer,
        FlowMod {
            table_id: 1,
            cookie: 0x55,
            priority: 0,
            instructions: apply(vec![Action::output(ofp::OFPP_CONTROLLER)]),
            ..FlowMod::default()
        },
    )
    .unwrap();
    send_from_vm1(&b, &frame(200), 1);
    let m = b
        .peer
        .wait_for("PACKET_IN", |m| matches!(m, Body::PacketIn(p) if p.cookie == 0x77));
    let Body::PacketIn(p) = m.body else { unreachable!() };
    assert_eq!((p.reason, p.table_id, p.total_len), (ofp::OFPR_ACTION, 1, 200));
    assert_eq!(p.data.len(), 64, "max_len not honoured");
    assert_eq!(p.data, frame(200)[..64]);
    assert_eq!(p.match_.in_port(), Some(1));
    // A frame that only the table-miss entry takes is reported as a miss (6.1.2).
    let mut arp = frame(60);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    send_from_vm1(&b, &arp, 1);
    let m = b.peer.wait_for(
        "PACKET_IN",
        |m| matches!(m, Body::PacketIn(p) if p.cookie == 0x55 && p.data.get(12..14) == Some(&[0x08, 0x06][..])),
    );
    let Body::PacketIn(p) = m.body else { unreachable!() };
    assert_eq!((p.reason, p.table_id), (ofp::OFPR_NO_MATCH, 1));
    assert_eq!(p.data.len(), 60);
}

#[test]
fn errors_name_the_spec_code_and_echo_the_request() {
    let _logs = TestLogs::new("errors_name_the_spec_code_and_echo_the_request");
    let mut b = setup("er");
    let cases: Vec<(FlowMod, (u16, u16))> = vec![
        (
            FlowMod {
                table_id: 2,
                instructions: vec![Instruction::GotoTable(1)],
                ..FlowMod::default()
            },
            (ofp::OFPET_BAD_INSTRUCTION, ofp::OFPBIC_BAD_TABLE_ID),
        ),
        (
            FlowMod {
                instructions: apply(vec![Action::Group(99)]),
                ..FlowMod::default()
            },
            (ofp::OFPET_BAD_ACTION, ofp::OFPBAC_BAD_OUT_GROUP),
        ),
        (
            FlowMod {
                match_: Match::new().with(Oxm::TcpDst(80)),
                ..FlowMod::default()
            },
            (ofp::OFPET_BAD_MATCH, ofp::OFPBMC_BAD_PREREQ),
        ),
        (
            FlowMod {
                table_id: 254,
                ..FlowMod::default()
            },
            (ofp::OFPET_FLOW_MOD_FAILED, ofp::OFPFMFC_BAD_TABLE_ID),
        ),
        (
            FlowMod {
                instructions: vec![Instruction::Meter(5)],
                ..FlowMod::default()
            },
            (ofp::OFPET_METER_MOD_FAILED, ofp::OFPMMFC_UNKNOWN_METER),
        ),
    ];
    for (fm, want) in cases {
        let raw = ofp::Message::new(0, Body::FlowMod(fm.clone())).encode();
        let xid = b.peer.send(Body::FlowMod(fm));
        let m = b.peer.wait_for("ERROR", |m| matches!(m, Body::Error { .. }));
        let Body::Error { typ, code, data } = m.body else {
            unreachable!()
        };
        assert_eq!((typ, code), want);
        assert_eq!(m.xid, xid, "the error does not carry the request's xid");
        // 7.4.4: at least 64 bytes of the failed request (all of it when shorter).
        let n = raw.len().min(64);
        assert_eq!(data[8..n], raw[8..n], "the error does not echo the request");
    }
    // CHECK_OVERLAP: the same priority, overlapping matches.
    add(
        &mut b.peer,
        FlowMod {
            priority: 50,
            match_: Match::new().with(Oxm::InPort(1)),
            ..FlowMod::default()
        },
    )
    .unwrap();
    let overlap = add(
        &mut b.peer,
        FlowMod {
            priority: 50,
            flags: ofp::OFPFF_CHECK_OVERLAP,
            match_: Match::new().with(Oxm::EthType(0x0806)),
            ..FlowMod::default()
        },
    );
    assert_eq!(overlap, Err((ofp::OFPET_FLOW_MOD_FAILED, ofp::OFPFMFC_OVERLAP)));
}

#[test]
fn packet_out_through_the_tables_groups_and_meters_count() {
    let _logs = TestLogs::new("packet_out_through_the_tables_groups_and_meters_count");
    let mut b = setup("po");
    // Group 1 (all) to port 2, a 10-packet/s meter, and a flow for port 1's UDP through both.
    b.peer
        .request(Body::GroupMod(ofp::GroupMod {
            command: ofp::OFPGC_ADD,
            group_type: ofp::OFPGT_ALL,
            group_id: 1,
            buckets: vec![ofp::Bucket {
                weight: 0,
                watch_port: ofp::OFPP_ANY,
                watch_group: ofp::OFPG_ANY,
                actions: vec![Action::output(2)],
            }],
        }))
        .unwrap();
    b.peer
        .request(Body::MeterMod(MeterMod {
            command: ofp::OFPMC_ADD,
            flags: ofp::OFPMF_PKTPS | ofp::OFPMF_STATS,
            meter_id: 1,
            bands: vec![MeterBand::drop(10, 0)],
        }))
        .unwrap();
    add(
        &mut b.peer,
        FlowMod {
            priority: 20,
            match_: Match::new()
                .with(Oxm::InPort(1))
                .with(Oxm::EthType(0x0800))
                .with(Oxm::IpProto(17)),
            instructions: vec![Instruction::Meter(1), Instruction::ApplyActions(vec![Action::Group(1)])],
            ..FlowMod::default()
        },
    )
    .unwrap();
    let tx2 = |b: &Bench| {
        b.c.ctl_json(0, &["show"])["ports"][1]["counters"]["tx_packets"]
            .as_u64()
            .unwrap()
    };
    // PACKET_OUT with output TABLE, as if from port 1: the flow above takes it.
    let before = tx2(&b);
    b.peer
        .request(Body::PacketOut(ofp::PacketOut {
            buffer_id: ofp::OFP_NO_BUFFER,
            in_port: 1,
            actions: vec![Action::output(ofp::OFPP_TABLE)],
            data: frame(100),
        }))
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(2), Duration::from_millis(20), || tx2(&b)
            == before + 1),
        "PACKET_OUT to TABLE did not follow the flow to port 2"
    );
    // 200 frames at once through the meter: about its burst (10) passes.
    send_from_vm1(&b, &frame(100), 200);
    std::thread::sleep(Duration::from_millis(300));
    let passed = tx2(&b) - before - 1;
    assert!((5..=30).contains(&passed), "{passed} of 200 passed a 10 packet/s meter");
    let stats = b.c.ctl_json(0, &["stats"]);
    assert!(stats["datapath"]["drop_meter"].as_u64().unwrap() >= 170, "{stats}");
    // Group and meter statistics count what went through.
    let xid = b.peer.send(Body::MultipartRequest {
        flags: 0,
        body: ofp::MultipartRequestBody::Unknown {
            typ: ofp::OFPMP_GROUP,
            data: ofp::id_request(ofp::OFPG_ALL),
        },
    });
    let m = b
        .peer
        .wait_for("group stats", |m| matches!(m, Body::MultipartReply { .. }));
    assert_eq!(m.xid, xid);
    let Body::MultipartReply {
        body: ofp::MultipartReplyBody::Unknown { data, .. },
        ..
    } = m.body
    else {
        panic!("{:?}", m.body)
    };
    let g = ofp::GroupStats::decode_list(&data).unwrap();
    assert_eq!((g[0].group_id, g[0].ref_count), (1, 1));
    assert_eq!(g[0].packet_count, passed + 1, "{g:?}");
    b.peer.send(Body::MultipartRequest {
        flags: 0,
        body: ofp::MultipartRequestBody::Unknown {
            typ: ofp::OFPMP_METER,
            data: ofp::id_request(1),
        },
    });
    let m = b
        .peer
        .wait_for("meter stats", |m| matches!(m, Body::MultipartReply { .. }));
    let Body::MultipartReply {
        body: ofp::MultipartReplyBody::Unknown { data, .. },
        ..
    } = m.body
    else {
        panic!("{:?}", m.body)
    };
    let s = ofp::MeterStats::decode_list(&data).unwrap();
    assert_eq!(s[0].packet_in_count, 201, "{s:?}");
    assert_eq!(s[0].bands[0].0, 201 - passed - 1, "{s:?}");
}
