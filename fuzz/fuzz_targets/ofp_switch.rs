//! Arbitrary bytes as what a controller (or ovs-ofctl) sends the switch: framed by
//! `ofp_stream::MsgReader`, decoded by the OpenFlow codec, experimenter bodies by the TCCS codec,
//! FLOW_MOD / GROUP_MOD / METER_MOD into the pipeline, PACKET_OUT and a few fixed packets
//! through its translation and executor, flow-stats requests answered from it.
//!
//! Invariants checked beyond "never panics":
//! - `MsgReader` frames and decodes exactly like `frame_len` + `Message::decode`, and ends with
//!   `InvalidData` after a length below 8, `UnexpectedEof` otherwise.
//! - A decoded message re-encodes to the received bytes, and decodes again to itself.
//! - A decoded TCCS message encodes to a record that decodes to it again.
//! - Everything the switch would answer with (errors, flow stats, flow-removed, TCCS) encodes and
//!   decodes to itself, and a flow reported in flow stats, sent back as an ADD (what a restarted
//!   controller does), makes the same entry.
//! - Translating and executing any pipeline the messages built never panics, outputs only to
//!   real ports, and the megaflow mask always covers the ingress.

#![no_main]

use cloudrack_fuzz::split_messages;
use cloudrack_vswitch::ofp::agent::MIN_FRAME;
use cloudrack_vswitch::ofp::translate;
use cloudrack_vswitch::pipeline::actions::{compile_actions, Context};
use cloudrack_vswitch::pipeline::execute::{execute, ExecDrop, Scratch, Sink, ToController};
use cloudrack_vswitch::pipeline::key::{extract, off};
use cloudrack_vswitch::pipeline::table::FlowEntry;
use cloudrack_vswitch::pipeline::xlate::{translate, translate_packet_out, Origin, PortRole, Ports};
use cloudrack_vswitch::pipeline::{FlowFilter, Pipeline, Removed};
use cloudrack_wire::ofp::{self, Body, Message, MultipartReplyBody, MultipartRequestBody};
use cloudrack_wire::ofp_stream::{Incoming, MsgReader};
use cloudrack_wire::tccs::{TccsMsg, TCCS_EXPERIMENTER};
use cloudrack_wire::vnet_hdr::VnetHdr;
use libfuzzer_sys::fuzz_target;
use std::io::{Cursor, ErrorKind};

fuzz_target!(|data: &[u8]| {
    let (msgs, bad_len) = split_messages(data);
    let mut reader = MsgReader::new(Cursor::new(data));
    let mut table = Pipeline::new(16);
    for raw in msgs {
        let incoming = reader
            .next_message()
            .unwrap_or_else(|e| panic!("MsgReader failed ({e}) where a whole message was"));
        let decoded = Message::decode(raw);
        match (&incoming, &decoded) {
            (Incoming::Message(m), Ok(d)) => assert_eq!(m, d, "MsgReader and decode disagree"),
            (Incoming::Malformed { raw: r, error }, Err(e)) => {
                assert_eq!((r.as_slice(), error), (raw, e), "MsgReader and decode disagree")
            }
            _ => panic!("MsgReader gave {incoming:?}, decode gave {decoded:?}"),
        }
        match decoded {
            Ok(m) => handle(raw, m, &mut table),
            // The session answers OFPBRC_BAD_LEN with the start of the message.
            Err(_) => round_trip(&Message::error_reply_to(
                raw,
                ofp::OFPET_BAD_REQUEST,
                ofp::OFPBRC_BAD_LEN,
            )),
        }
    }
    let end = reader
        .next_message()
        .expect_err("MsgReader found a message after the last whole one");
    let want = if bad_len {
        ErrorKind::InvalidData
    } else {
        ErrorKind::UnexpectedEof
    };
    assert_eq!(end.kind(), want, "{end}");
});

/// Encodes and decodes a message the switch would send: it must encode and come back equal.
fn round_trip(m: &Message) {
    let bytes = m
        .try_encode()
        .unwrap_or_else(|e| panic!("the switch would send an unencodable message ({e}): {m:?}"));
    assert_eq!(Message::decode(&bytes).as_ref(), Ok(m), "encode/decode asymmetry");
}

/// Ports 1-4 local (network 0), 0x4000 a tunnel.
struct P;
impl Ports for P {
    fn role(&self, port: u32) -> PortRole {
        match port {
            1..=4 => PortRole::Local { vnet: 0 },
            0x4000 => PortRole::Tunnel {
                key: 0,
                is_static: false,
            },
            _ => PortRole::Unknown,
        }
    }
    fn local_in(&self, vnet: u32) -> &[u32] {
        if vnet == 0 {
            &[1, 2, 3, 4]
        } else {
            &[]
        }
    }
    fn static_tunnels_in(&self, _: u32) -> &[u32] {
        &[]
    }
}

/// Checks where packets go.
struct Out;
impl Sink for Out {
    fn output(&mut self, port: u32, frame: &mut [u8], _: &mut VnetHdr) {
        assert!(P.live(port), "output to port {port}, which does not exist");
        assert!(!frame.is_empty());
    }
    fn controller(&mut self, _: &[u8], _: &ToController) {}
    fn dropped(&mut self, _: ExecDrop) {}
}

/// A few packets of each kind through whatever pipeline the messages built.
fn run_packets(p: &Pipeline) {
    const FRAMES: &[&[u8]] = &[
        // IPv4 UDP 10.0.0.1:1234 -> 10.0.0.2:53, TTL 2.
        &[
            2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0, 0x45, 0, 0, 36, 0, 1, 0, 0, 2, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0,
            2, 4, 210, 0, 53, 0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8,
        ],
        // ARP request, broadcast.
        &[
            255, 255, 255, 255, 255, 255, 2, 0, 0, 0, 0, 1, 8, 6, 0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0,
            1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2,
        ],
        // VLAN 10, IPv6 TCP.
        &[
            2, 0, 0, 0, 0, 3, 2, 0, 0, 0, 0, 1, 0x81, 0, 0, 10, 0x86, 0xdd, 0x60, 0, 0, 0, 0, 20, 6, 1, 0xfd, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 80, 1, 187, 0, 0,
            0, 0, 0, 0, 0, 0, 0x50, 2, 0, 0, 0, 0, 0, 0,
        ],
    ];
    for (i, f) in FRAMES.iter().enumerate() {
        let in_port = 1 + i as u32;
        let (key, _) = extract(f, in_port, 0);
        let x = translate(p, &P, &key, Origin::Port);
        assert!(
            x.mask.get(off::IN_PORT).iter().all(|b| *b == 0xff),
            "megaflow mask without in_port"
        );
        assert!(x.tables.len() <= 254, "looked up {} tables", x.tables.len());
        let mut frame = f.to_vec();
        execute(
            &x.ops,
            &mut frame,
            &VnetHdr::default(),
            &mut Scratch::default(),
            &mut Out,
        );
    }
}

fn handle(raw: &[u8], m: Message, table: &mut Pipeline) {
    let bytes = m.try_encode().expect("a decoded message does not encode");
    assert_eq!(bytes, raw, "decode then encode is not byte-exact: {m:?}");
    assert_eq!(Message::decode(&bytes).as_ref(), Ok(&m));
    let error = |e: translate::OfpErr| round_trip(&Message::error_reply_to(raw, e.0, e.1));
    match &m.body {
        Body::Hello { version, elements } => {
            let _ = ofp::negotiate_version(*version, elements, &[ofp::OFP_VERSION]);
        }
        Body::Experimenter {
            experimenter,
            exp_type,
            data,
        } => {
            let tccs = TccsMsg::decode(*exp_type, data);
            if *experimenter == TCCS_EXPERIMENTER {
                assert_eq!(TccsMsg::from_body(&m.body), Some(tccs.clone()));
            }
            if let Ok(t) = tccs {
                assert_eq!(t.exp_type(), *exp_type);
                assert_eq!(
                    TccsMsg::decode(t.exp_type(), &t.encode()).as_ref(),
                    Ok(&t),
                    "TCCS encode/decode asymmetry"
                );
                assert_eq!(TccsMsg::from_body(&t.to_body()), Some(Ok(t.clone())));
                round_trip(&t.to_message(m.xid));
            }
        }
        Body::FlowMod(fm) => match table.flow_mod(fm) {
            Ok(out) => {
                for e in out.removed {
                    let removed = translate::flow_removed(&e, Removed::Delete);
                    round_trip(&Message::new(0, Body::FlowRemoved(removed)));
                }
                if fm.command == ofp::OFPFC_ADD {
                    for e in table.flows(&FlowFilter::default()) {
                        same_flow_back(&translate::flow_stats(&e), &e, table);
                    }
                }
                run_packets(table);
            }
            Err(e) => error(e),
        },
        Body::GroupMod(gm) => match table.group_mod(gm) {
            Ok(_) => run_packets(table),
            Err(e) => error(e),
        },
        Body::MeterMod(mm) => match table.meter_mod(mm) {
            Ok(_) => run_packets(table),
            Err(e) => error(e),
        },
        // The agent refuses a PACKET_OUT shorter than an Ethernet header before it gets here.
        Body::PacketOut(po) if po.data.len() < MIN_FRAME => error((ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_BAD_PACKET)),
        Body::PacketOut(po) => match compile_actions(&po.actions, Context::PacketOut, &*table) {
            Ok(acts) => {
                let (key, _) = extract(&po.data, po.in_port, 0);
                let x = translate_packet_out(table, &P, &key, &acts);
                let mut frame = po.data.clone();
                execute(
                    &x.ops,
                    &mut frame,
                    &VnetHdr::default(),
                    &mut Scratch::default(),
                    &mut Out,
                );
            }
            Err(e) => error(e),
        },
        Body::MultipartRequest {
            body: MultipartRequestBody::Flow(req) | MultipartRequestBody::Aggregate(req),
            ..
        } => match translate::stats_filter(req) {
            Ok(filter) => {
                let stats = table.flows(&filter).iter().map(|e| translate::flow_stats(e)).collect();
                for reply in ofp::split_multipart_reply(m.xid, MultipartReplyBody::Flow(stats)) {
                    round_trip(&reply);
                }
            }
            Err(e) => error(e),
        },
        _ => {}
    }
}

/// A flow as flow stats report it, sent back as an ADD (what a restarted controller does),
/// must make the same entry: it replaces itself, match and instructions unchanged.
fn same_flow_back(stats: &ofp::FlowStats, e: &FlowEntry, table: &Pipeline) {
    let reply = Message::new(
        1,
        Body::MultipartReply {
            flags: 0,
            body: MultipartReplyBody::Flow(vec![stats.clone()]),
        },
    );
    round_trip(&reply);
    let fm = ofp::FlowMod {
        cookie: stats.cookie,
        cookie_mask: 0,
        table_id: stats.table_id,
        command: ofp::OFPFC_ADD,
        idle_timeout: stats.idle_timeout,
        hard_timeout: stats.hard_timeout,
        priority: stats.priority,
        buffer_id: ofp::OFP_NO_BUFFER,
        out_port: ofp::OFPP_ANY,
        out_group: ofp::OFPG_ANY,
        flags: stats.flags,
        match_: stats.match_.clone(),
        instructions: stats.instructions.clone(),
    };
    let mut p = table.clone();
    p.flow_mod(&fm)
        .unwrap_or_else(|err| panic!("a reported flow is refused when sent back: {err:?}"));
    assert_eq!(p.n_flows(), table.n_flows(), "a reported flow did not replace itself");
    let again = p
        .table(e.table_id)
        .flows
        .find_exact(&e.m.mask, &e.m.value, e.priority)
        .expect("the flow sent back is not where it was");
    assert_eq!(again.insts, e.insts, "instructions changed");
}
