//! Arbitrary bytes as what a controller (or ovs-ofctl) sends the switch: framed by
//! `ofp_stream::MsgReader`, decoded by the OpenFlow codec, experimenter bodies by the TCCS codec,
//! and FLOW_MOD / PACKET_OUT / flow-stats requests through the switch's translation
//! (`ofp::translate`) into a flow table.
//!
//! Invariants checked beyond "never panics":
//! - `MsgReader` frames and decodes exactly like `frame_len` + `Message::decode`, and ends with
//!   `InvalidData` after a length below 8, `UnexpectedEof` otherwise.
//! - A decoded message re-encodes to the received bytes, and decodes again to itself.
//! - A decoded TCCS message encodes to a record that decodes to it again.
//! - Everything the switch would answer with (errors, flow stats, flow-removed, TCCS) encodes and
//!   decodes to itself, and a flow reported in flow stats translates back to the same flow.

#![no_main]

use cloudrack_fuzz::split_messages;
use cloudrack_vswitch::flow_table::{FlowKey, FlowTable};
use cloudrack_vswitch::ofp::translate::{self, FlowOp};
use cloudrack_vswitch::switch::{FlowRemovedReason, PacketOutTarget};
use cloudrack_wire::ofp::{self, Body, Message, MultipartReplyBody, MultipartRequestBody, Oxm};
use cloudrack_wire::ofp_stream::{Incoming, MsgReader};
use cloudrack_wire::tccs::{TccsMsg, TCCS_EXPERIMENTER};
use libfuzzer_sys::fuzz_target;
use std::io::{Cursor, ErrorKind};

fuzz_target!(|data: &[u8]| {
    let (msgs, bad_len) = split_messages(data);
    let mut reader = MsgReader::new(Cursor::new(data));
    let mut table = FlowTable::with_capacity(8);
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

fn handle(raw: &[u8], m: Message, table: &mut FlowTable) {
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
        Body::FlowMod(fm) => match translate::flow_mod(fm, port_ok) {
            Ok(op) => apply(fm, op, table),
            Err(e) => error(e),
        },
        Body::PacketOut(po) => match translate::packet_out_targets(po) {
            Ok(targets) => {
                for t in targets {
                    let port = match t {
                        PacketOutTarget::Port(p) => Some(p),
                        PacketOutTarget::Flood { in_port, .. } => in_port,
                        PacketOutTarget::Table { in_port, .. } => Some(in_port),
                    };
                    assert!(port.is_none_or(|p| p <= ofp::OFPP_MAX), "{t:?} names a reserved port");
                }
            }
            Err(e) => error(e),
        },
        Body::MultipartRequest {
            body: MultipartRequestBody::Flow(req) | MultipartRequestBody::Aggregate(req),
            ..
        } => match translate::stats_filter(req) {
            Ok(filter) => {
                let stats = table.filtered(&filter).map(translate::flow_stats).collect();
                for reply in ofp::split_multipart_reply(m.xid, MultipartReplyBody::Flow(stats)) {
                    round_trip(&reply);
                }
            }
            Err(e) => error(e),
        },
        _ => {}
    }
}

fn port_ok(p: u32) -> bool {
    p < 8 || (0x4000..0x4010).contains(&p)
}

fn apply(fm: &ofp::FlowMod, op: FlowOp, table: &mut FlowTable) {
    match op {
        FlowOp::Add(flow) => {
            assert_eq!(
                Some(flow.key.mac),
                fm.match_.eth_dst(),
                "flow key is not the match's eth_dst"
            );
            if let Some(p) = flow.out_port {
                assert!(p <= ofp::OFPP_MAX && port_ok(p), "flow outputs to port {p}");
            }
            let key = flow.key;
            let _ = table.add(flow);
            if let Some(f) = table.get(&key) {
                same_flow_back(&translate::flow_stats(f), key, f.out_port);
            }
        }
        FlowOp::Modify {
            filter,
            strict,
            out_port,
        } => {
            table.modify(&filter, strict, out_port);
        }
        FlowOp::Delete { filter, strict } => {
            for f in table.delete(&filter, strict) {
                let removed = translate::flow_removed(&f, FlowRemovedReason::Delete);
                round_trip(&Message::new(0, Body::FlowRemoved(removed)));
            }
        }
        FlowOp::TableMiss => {}
    }
    assert_eq!(table.compile().len(), table.len(), "compiled MAC table lost flows");
}

/// A flow as flow stats report it, sent back as an ADD (what a restarted controller does),
/// must translate to the same flow.
fn same_flow_back(stats: &ofp::FlowStats, key: FlowKey, out_port: Option<u32>) {
    let reply = Message::new(
        1,
        Body::MultipartReply {
            flags: 0,
            body: MultipartReplyBody::Flow(vec![stats.clone()]),
        },
    );
    round_trip(&reply);
    assert_eq!(stats.match_.eth_dst(), Some(key.mac));
    assert!(stats.match_.fields.contains(&Oxm::TunnelId {
        id: u64::from(key.vnet),
        mask: None
    }));
    let fm = ofp::FlowMod {
        cookie: stats.cookie,
        cookie_mask: 0,
        table_id: 0,
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
    match translate::flow_mod(&fm, port_ok) {
        Ok(FlowOp::Add(again)) => assert_eq!((again.key, again.out_port), (key, out_port)),
        other => panic!("a reported flow translates back to {other:?}"),
    }
}
