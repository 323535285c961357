//! Round trips of programmatically built messages: OpenFlow messages the switch and controller
//! construct themselves, and every TCCS message carried inside an OpenFlow experimenter message.

use std::net::Ipv4Addr;

use cloudrack_wire::ofp::*;
use cloudrack_wire::tccs::*;

/// Encodes, decodes, and checks that both directions agree; returns the wire bytes.
fn round_trip(msg: &Message) -> Vec<u8> {
    let bytes = msg.encode();
    assert_eq!(frame_len(&bytes), Ok(Some(bytes.len())));
    let decoded = Message::decode(&bytes).unwrap_or_else(|e| panic!("{msg:?}: {e}"));
    assert_eq!(&decoded, msg);
    assert_eq!(decoded.encode(), bytes);
    bytes
}

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];

#[test]
fn flow_mod_with_tunnel_id_and_eth_dst() {
    let msg = Message::new(
        0x11,
        Body::FlowMod(FlowMod {
            cookie: 1,
            priority: 100,
            flags: OFPFF_SEND_FLOW_REM,
            match_: Match::new()
                .with(Oxm::TunnelId { id: 5, mask: None })
                .with(Oxm::EthDst { mac: MAC_A, mask: None }),
            instructions: vec![Instruction::ApplyActions(vec![Action::output(3)])],
            ..FlowMod::default()
        }),
    );
    let bytes = round_trip(&msg);
    // Laid out by hand from the spec (7.3.4.2, 7.2.2, 7.2.4, 7.2.5).
    let expected = hex("04 0e 0068 00000011
         0000000000000001 0000000000000000 00 00 0000 0000 0064
         ffffffff ffffffff ffffffff 0001 0000
         0001 001a 80004c08 0000000000000005 80000606 020000000001 000000000000
         0004 0018 00000000 0000 0010 00000003 0000 000000000000");
    assert_eq!(bytes, expected);
    let Body::FlowMod(fm) = &Message::decode(&bytes).unwrap().body else {
        panic!("not a flow mod");
    };
    assert_eq!(fm.match_.tunnel_id(), Some(5));
    assert_eq!(fm.match_.eth_dst(), Some(MAC_A));
}

#[test]
fn packet_out_with_set_tunnel_id_and_flood() {
    let frame: Vec<u8> = (0..60).collect();
    let msg = Message::new(
        0x22,
        Body::PacketOut(PacketOut {
            buffer_id: OFP_NO_BUFFER,
            in_port: OFPP_CONTROLLER,
            actions: vec![
                Action::SetField(Oxm::TunnelId { id: 7, mask: None }),
                Action::output(OFPP_FLOOD),
            ],
            data: frame.clone(),
        }),
    );
    let bytes = round_trip(&msg);
    let mut expected = hex("04 0d 0074 00000022
         ffffffff fffffffd 0020 000000000000
         0019 0010 80004c08 0000000000000007
         0000 0010 fffffffb 0000 000000000000");
    expected.extend_from_slice(&frame);
    assert_eq!(bytes, expected);
}

#[test]
fn flow_stats_reply() {
    let flows = vec![
        FlowStats {
            table_id: 0,
            duration_sec: 12,
            duration_nsec: 500,
            priority: 100,
            idle_timeout: 300,
            flags: OFPFF_SEND_FLOW_REM,
            cookie: 0xabcd,
            packet_count: 42,
            byte_count: 4200,
            match_: Match::new()
                .with(Oxm::InPort(1))
                .with(Oxm::EthDst { mac: MAC_A, mask: None }),
            instructions: vec![Instruction::ApplyActions(vec![
                Action::SetField(Oxm::TunnelId { id: 9, mask: None }),
                Action::output(0x100),
            ])],
            ..FlowStats::default()
        },
        FlowStats {
            priority: 0,
            match_: Match::new(),
            instructions: vec![Instruction::ApplyActions(vec![Action::output(OFPP_CONTROLLER)])],
            ..FlowStats::default()
        },
    ];
    let msg = Message::new(
        3,
        Body::MultipartReply {
            flags: 0,
            body: MultipartReplyBody::Flow(flows.clone()),
        },
    );
    let bytes = round_trip(&msg);
    // Entry lengths: 48 fixed + 24 match + 8 + 16 + 16 instruction; 48 + 8 + 24.
    assert_eq!(flows[0].encoded_len(), 112);
    assert_eq!(flows[1].encoded_len(), 80);
    assert_eq!(bytes.len(), 16 + 112 + 80);
    assert_eq!(&bytes[16..18], &[0, 112]);
    assert_eq!(&bytes[8..12], &[0, 1, 0, 0]);
}

#[test]
fn port_desc_reply() {
    let ports = vec![
        PortDesc {
            port_no: OFPP_LOCAL,
            hw_addr: [0x66, 0xc2, 0x9d, 0x33, 0x97, 0x45],
            config: OFPPC_PORT_DOWN,
            state: OFPPS_LINK_DOWN,
            ..PortDesc::default()
        }
        .with_name("br0"),
        PortDesc {
            port_no: 1,
            hw_addr: MAC_A,
            state: OFPPS_LIVE,
            curr: OFPPF_10GB_FD | OFPPF_COPPER,
            curr_speed: 10_000_000,
            ..PortDesc::default()
        }
        .with_name("vm1"),
        PortDesc {
            port_no: 0x100,
            state: OFPPS_LIVE,
            ..PortDesc::default()
        }
        .with_name("gre-10.0.0.2-k5"),
    ];
    let msg = Message::new(
        2,
        Body::MultipartReply {
            flags: 0,
            body: MultipartReplyBody::PortDesc(ports),
        },
    );
    let bytes = round_trip(&msg);
    assert_eq!(bytes.len(), 16 + 3 * 64);
    assert_eq!(&bytes[16 + 16..16 + 20], b"br0\0");
}

#[test]
fn every_modelled_message_round_trips() {
    let flow_req = FlowStatsRequest {
        table_id: 0,
        out_port: 1,
        match_: Match::new().with(Oxm::EthType(0x0800)),
        ..FlowStatsRequest::default()
    };
    let bodies = vec![
        Body::hello(&[4]),
        Body::Hello {
            version: 4,
            elements: vec![
                HelloElement::version_bitmap(&[1, 4, 5]),
                HelloElement::Unknown {
                    typ: 7,
                    data: vec![1, 2, 3],
                },
            ],
        },
        Body::error_reply(OFPET_BAD_REQUEST, OFPBRC_BAD_TYPE, &[4, 15, 0, 8, 0, 0, 0, 1]),
        Body::EchoRequest(b"ping".to_vec()),
        Body::EchoReply(vec![]),
        Body::Experimenter {
            experimenter: 0x2320,
            exp_type: 99,
            data: vec![1, 2, 3],
        },
        Body::FeaturesRequest,
        Body::FeaturesReply {
            datapath_id: 0x0000_0200_0000_0001,
            n_buffers: 0,
            n_tables: 1,
            auxiliary_id: 0,
            capabilities: OFPC_FLOW_STATS | OFPC_TABLE_STATS | OFPC_PORT_STATS,
            reserved: 0,
        },
        Body::GetConfigRequest,
        Body::GetConfigReply(SwitchConfig {
            flags: OFPC_FRAG_NORMAL,
            miss_send_len: OFPCML_NO_BUFFER,
        }),
        Body::SetConfig(SwitchConfig {
            flags: OFPC_FRAG_DROP,
            miss_send_len: OFP_DEFAULT_MISS_SEND_LEN,
        }),
        Body::PacketIn(PacketIn {
            buffer_id: OFP_NO_BUFFER,
            total_len: 4,
            reason: OFPR_ACTION,
            table_id: 0,
            cookie: 7,
            match_: Match::new()
                .with(Oxm::InPort(0x100))
                .with(Oxm::TunnelId { id: 5, mask: None }),
            data: vec![1, 2, 3, 4],
        }),
        Body::FlowRemoved(FlowRemoved {
            cookie: 1,
            priority: 10,
            reason: OFPRR_IDLE_TIMEOUT,
            idle_timeout: 60,
            packet_count: 1,
            byte_count: 64,
            match_: Match::new().with(Oxm::EthSrc {
                mac: MAC_A,
                mask: Some([0xff, 0xff, 0xff, 0, 0, 0]),
            }),
            ..FlowRemoved::default()
        }),
        Body::PortStatus {
            reason: OFPPR_DELETE,
            desc: PortDesc {
                port_no: 7,
                ..PortDesc::default()
            }
            .with_name("tap7"),
        },
        Body::PacketOut(PacketOut {
            buffer_id: 12,
            in_port: 1,
            actions: vec![],
            data: vec![],
        }),
        Body::FlowMod(FlowMod {
            command: OFPFC_DELETE,
            table_id: OFPTT_ALL,
            match_: Match::new().with(Oxm::Metadata {
                value: 1,
                mask: Some(1),
            }),
            ..FlowMod::default()
        }),
        Body::FlowMod(FlowMod {
            instructions: vec![
                Instruction::WriteMetadata {
                    metadata: 5,
                    mask: u64::MAX,
                },
                Instruction::WriteActions(vec![Action::PushVlan(0x8100), Action::Group(1)]),
                Instruction::ClearActions,
                Instruction::Meter(1),
                Instruction::GotoTable(1),
            ],
            ..FlowMod::default()
        }),
        Body::PortMod(PortMod {
            port_no: 1,
            hw_addr: MAC_A,
            config: OFPPC_NO_FWD,
            mask: OFPPC_NO_FWD,
            advertise: 0,
        }),
        Body::TableMod(TableMod { table_id: 0, config: 0 }),
        Body::MultipartRequest {
            flags: 0,
            body: MultipartRequestBody::Desc,
        },
        Body::MultipartRequest {
            flags: 0,
            body: MultipartRequestBody::Flow(flow_req.clone()),
        },
        Body::MultipartRequest {
            flags: OFPMPF_REQ_MORE,
            body: MultipartRequestBody::Aggregate(flow_req),
        },
        Body::MultipartRequest {
            flags: 0,
            body: MultipartRequestBody::Table,
        },
        Body::MultipartRequest {
            flags: 0,
            body: MultipartRequestBody::PortStats { port_no: 1 },
        },
        Body::MultipartRequest {
            flags: 0,
            body: MultipartRequestBody::PortDesc,
        },
        Body::MultipartRequest {
            flags: 0,
            body: MultipartRequestBody::Unknown {
                typ: OFPMP_TABLE_FEATURES,
                data: vec![],
            },
        },
        Body::MultipartReply {
            flags: 0,
            body: MultipartReplyBody::Desc(Box::new(DescStats::new(
                "Cloud Rack",
                "userspace",
                "0.1.0",
                "None",
                "rack1",
            ))),
        },
        Body::MultipartReply {
            flags: 0,
            body: MultipartReplyBody::Aggregate {
                packet_count: 1,
                byte_count: 2,
                flow_count: 3,
            },
        },
        Body::MultipartReply {
            flags: OFPMPF_REPLY_MORE,
            body: MultipartReplyBody::Table(vec![TableStats {
                table_id: 0,
                active_count: 3,
                lookup_count: 15,
                matched_count: 15,
            }]),
        },
        Body::MultipartReply {
            flags: 0,
            body: MultipartReplyBody::PortStats(vec![PortStats {
                port_no: 1,
                rx_packets: 10,
                rx_bytes: 852,
                rx_frame_err: u64::MAX,
                duration_sec: 4,
                ..PortStats::default()
            }]),
        },
        Body::BarrierRequest,
        Body::BarrierReply,
        Body::RoleRequest(RoleMsg {
            role: OFPCR_ROLE_MASTER,
            generation_id: 1,
        }),
        Body::RoleReply(RoleMsg {
            role: OFPCR_ROLE_SLAVE,
            generation_id: 2,
        }),
        Body::GetAsyncRequest,
        Body::GetAsyncReply(AsyncConfig::default()),
        Body::SetAsync(AsyncConfig {
            packet_in_mask: [1 << OFPR_NO_MATCH | 1 << OFPR_ACTION, 0],
            port_status_mask: [7, 7],
            flow_removed_mask: [0xf, 0],
        }),
        Body::MeterMod(MeterMod {
            command: OFPMC_ADD,
            flags: OFPMF_PKTPS,
            meter_id: 1,
            bands: vec![MeterBand::drop(10, 0)],
        }),
        Body::GroupMod(GroupMod {
            command: OFPGC_ADD,
            group_type: OFPGT_FF,
            group_id: 2,
            buckets: vec![Bucket {
                weight: 0,
                watch_port: 3,
                watch_group: OFPG_ANY,
                actions: vec![Action::output(3)],
            }],
        }),
        Body::Unknown {
            version: OFP_VERSION,
            typ: OFPT_QUEUE_GET_CONFIG_REQUEST,
            body: vec![0, 0, 0, 1, 0, 0, 0, 0],
        },
    ];
    for (i, body) in bodies.into_iter().enumerate() {
        let msg = Message::new(i as u32, body);
        let bytes = round_trip(&msg);
        assert_eq!(bytes[1], msg.msg_type());
        assert_eq!(bytes[0], msg.version());
    }
}

fn all_tccs_messages() -> Vec<TccsMsg> {
    let remote_ip = Ipv4Addr::new(10, 0, 0, 2);
    vec![
        TccsMsg::Register {
            dpid: 0x0000_0200_0000_0001,
            underlay_ip: Ipv4Addr::new(10, 0, 0, 1),
            underlay_mac: [0x52, 0x54, 0, 0, 0, 1],
        },
        TccsMsg::TunnelAdd {
            remote_dpid: 2,
            remote_ip,
            key: 5,
            port_no: 0x100,
            idle_timeout_s: 300,
        },
        TccsMsg::TunnelDel {
            remote_ip,
            key: 5,
            port_no: 0x100,
        },
        TccsMsg::TunnelIdle {
            remote_ip,
            key: 5,
            port_no: 0x100,
            idle_ms: 301_000,
        },
        TccsMsg::TunnelReport {
            remote_dpid: 2,
            remote_ip,
            key: 5,
            port_no: 0x100,
            idle_timeout_s: 0,
            is_static: true,
        },
        TccsMsg::TunnelReport {
            remote_dpid: u64::MAX,
            remote_ip: Ipv4Addr::BROADCAST,
            key: u32::MAX,
            port_no: u32::MAX,
            idle_timeout_s: u32::MAX,
            is_static: false,
        },
        TccsMsg::PortVnet { port_no: 3, vnet: 42 },
        TccsMsg::MigrationNotify {
            vnet: 42,
            mac: MAC_A,
            dst_dpid: 3,
            phase: MIGRATION_STARTED,
            dst_port: 0,
        },
        TccsMsg::MigrationNotify {
            vnet: 42,
            mac: MAC_A,
            dst_dpid: 3,
            phase: MIGRATION_FAILED,
            dst_port: 7,
        },
    ]
}

#[test]
fn every_tccs_message_round_trips_through_openflow() {
    let mut seen_types = Vec::new();
    for (xid, tccs) in all_tccs_messages().into_iter().enumerate() {
        let msg = tccs.to_message(xid as u32);
        let bytes = round_trip(&msg);
        // Experimenter header: type 4, then experimenter id and exp_type.
        assert_eq!(bytes[1], OFPT_EXPERIMENTER);
        assert_eq!(&bytes[8..12], &TCCS_EXPERIMENTER.to_be_bytes());
        assert_eq!(&bytes[12..16], &tccs.exp_type().to_be_bytes());
        assert_eq!(bytes[16], TCCS_VERSION);
        assert_eq!((bytes.len() - 16) % 8, 0, "records are 8-byte multiples");
        let decoded = Message::decode(&bytes).unwrap();
        assert_eq!(TccsMsg::from_body(&decoded.body), Some(Ok(tccs.clone())));
        assert_eq!(TccsMsg::decode(tccs.exp_type(), &tccs.encode()), Ok(tccs.clone()));
        seen_types.push(tccs.exp_type());
    }
    seen_types.sort_unstable();
    seen_types.dedup();
    assert_eq!(seen_types, (1..=7).collect::<Vec<u32>>());
}

#[test]
fn truncated_tccs_records_are_rejected() {
    for tccs in all_tccs_messages() {
        let data = tccs.encode();
        // MigrationNotify grew from 24 to 32 bytes; a 24-byte record is the older layout.
        let minimum = if matches!(tccs, TccsMsg::MigrationNotify { .. }) {
            24
        } else {
            data.len()
        };
        for n in 0..minimum {
            assert_eq!(
                TccsMsg::decode(tccs.exp_type(), &data[..n]),
                Err(TccsError::Truncated),
                "{tccs:?} cut at {n}"
            );
        }
    }
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn random_bodies_of_every_type_never_panic() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut decoded = 0;
    for typ in 0..=31u8 {
        for _ in 0..400 {
            let len = 8 + (rng.next() % 120) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Bias towards plausible TLV lengths so nested decoders get exercised.
            for chunk in buf.chunks_mut(8).skip(1) {
                if rng.next().is_multiple_of(3) && chunk.len() >= 4 {
                    chunk[2] = 0;
                    chunk[3] = [0, 4, 8, 16, 24][(rng.next() % 5) as usize];
                }
            }
            buf[0] = OFP_VERSION;
            buf[1] = typ;
            buf[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            if let Ok(msg) = Message::decode(&buf) {
                assert_eq!(msg.encode(), buf, "{msg:?}");
                decoded += 1;
            }
        }
    }
    assert!(decoded > 1000, "only {decoded} random messages decoded");
}

#[test]
fn long_replies_are_split() {
    let flows: Vec<FlowStats> = (0..1500)
        .map(|i| FlowStats {
            priority: i as u16,
            match_: Match::new().with(Oxm::InPort(i)),
            instructions: vec![Instruction::ApplyActions(vec![Action::output(1)])],
            ..FlowStats::default()
        })
        .collect();
    let too_big = Message::new(
        9,
        Body::MultipartReply {
            flags: 0,
            body: MultipartReplyBody::Flow(flows.clone()),
        },
    );
    assert_eq!(too_big.try_encode(), Err(OfpError::TooLong));
    let parts = split_multipart_reply(9, MultipartReplyBody::Flow(flows.clone()));
    assert!(parts.len() >= 2);
    let mut rejoined = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let bytes = round_trip(part);
        assert_eq!(part.xid, 9);
        let Body::MultipartReply {
            flags,
            body: MultipartReplyBody::Flow(f),
        } = &part.body
        else {
            panic!("not a flow stats reply");
        };
        assert_eq!(*flags, if i + 1 < parts.len() { OFPMPF_REPLY_MORE } else { 0 });
        assert!(bytes.len() <= 65535);
        rejoined.extend(f.iter().cloned());
    }
    assert_eq!(rejoined, flows);
}
