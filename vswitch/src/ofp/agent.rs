//! The switch's side of OpenFlow 1.3 and TCCS, without I/O: a message in, the replies out.
//! What a message does to a switch goes through [`SwitchOps`]; the real switch's sessions
//! (`session.rs`) and the scale bench's simulated switches implement it, so both speak the
//! protocol through this one piece of code and cannot drift apart.

use super::translate::OfpErr;
use cloudrack_wire::ofp::{self, Body, Message, MultipartReplyBody, MultipartRequestBody};
use cloudrack_wire::tccs::TccsMsg;
use tracing::{debug, warn};

/// The shortest frame a PACKET_OUT may carry: an Ethernet header.
pub const MIN_FRAME: usize = 14;

/// Bytes of entries per multipart reply message (the length field is 16 bits).
pub const MULTIPART_CHUNK: usize = 60_000;

/// A multipart answer, before it is cut into replies.
pub enum Answer {
    /// One reply body.
    One(MultipartReplyBody),
    /// Flow statistics, as many replies as they need.
    Flows(Vec<ofp::FlowStats>),
    /// Entries of a body the codec keeps raw (table features, groups, meters), as many replies
    /// as they need.
    Raw { typ: u16, entries: Vec<Vec<u8>> },
}

/// What the protocol asks of a switch.
pub trait SwitchOps {
    fn dpid(&self) -> u64;
    /// The TCCS messages that register this switch with a controller: sent once per controller
    /// connection, right after the first FEATURES_REPLY.
    fn registration(&mut self) -> Vec<Body>;
    /// A ROLE_REQUEST: the role granted, or the error.
    fn role(&mut self, role: u32, generation_id: u64) -> Result<u32, OfpErr>;
    /// Whether this connection is a slave's (which may look, not touch).
    fn is_slave(&self) -> bool;
    fn flow_mod(&mut self, fm: &ofp::FlowMod) -> Result<(), OfpErr>;
    fn group_mod(&mut self, gm: &ofp::GroupMod) -> Result<(), OfpErr>;
    fn meter_mod(&mut self, mm: &ofp::MeterMod) -> Result<(), OfpErr>;
    fn packet_out(&mut self, po: &ofp::PacketOut) -> Result<(), OfpErr>;
    /// Everything handled so far takes effect before the barrier reply.
    fn barrier(&mut self);
    fn multipart(&mut self, req: MultipartRequestBody) -> Result<Answer, OfpErr>;
    /// A TCCS message from the controller (tunnels to add or delete).
    fn tccs(&mut self, msg: TccsMsg) -> Result<(), OfpErr>;
    /// Every message, before it is handled (somewhere to count them).
    fn seen(&mut self, _m: &Message) {}
}

/// One connection's protocol state.
pub struct Agent {
    /// A controller we connected to (it gets our registration), or a tool that connected to
    /// our listener.
    controller: bool,
    registered: bool,
    just_registered: bool,
}

impl Agent {
    pub fn new(controller: bool) -> Agent {
        Agent {
            controller,
            registered: false,
            just_registered: false,
        }
    }

    /// True once, after the message that registered this connection: the caller has sent
    /// the registration and may now treat the connection as a controller's.
    pub fn take_just_registered(&mut self) -> bool {
        std::mem::take(&mut self.just_registered)
    }

    /// Handle one message (`raw`: its bytes, for error replies); returns the replies, in
    /// order.
    pub fn on_message(&mut self, m: Message, raw: &[u8], ops: &mut impl SwitchOps) -> Vec<Message> {
        ops.seen(&m);
        let xid = m.xid;
        let mut out = Vec::new();
        let error = |(typ, code): OfpErr| Message::new(xid, Body::error_reply(typ, code, raw));
        match m.body {
            Body::Hello { version, elements } => {
                if ofp::negotiate_version(version, &elements, &[ofp::OFP_VERSION]).is_none() {
                    warn!(version, "peer does not speak OpenFlow 1.3");
                    out.push(error((ofp::OFPET_HELLO_FAILED, ofp::OFPHFC_INCOMPATIBLE)));
                }
            }
            Body::EchoRequest(data) => out.push(Message::new(xid, Body::EchoReply(data))),
            Body::EchoReply(_) | Body::BarrierReply => {}
            Body::Error { typ, code, data } => {
                warn!(typ, code, len = data.len(), "OpenFlow error from peer");
            }
            Body::FeaturesRequest => {
                out.push(Message::new(
                    xid,
                    Body::FeaturesReply {
                        datapath_id: ops.dpid(),
                        n_buffers: 0,
                        n_tables: crate::pipeline::actions::N_TABLES,
                        auxiliary_id: 0,
                        capabilities: ofp::OFPC_FLOW_STATS
                            | ofp::OFPC_TABLE_STATS
                            | ofp::OFPC_PORT_STATS
                            | ofp::OFPC_GROUP_STATS,
                        reserved: 0,
                    },
                ));
                if self.controller && !self.registered {
                    out.extend(ops.registration().into_iter().map(|b| Message::new(0, b)));
                    self.registered = true;
                    self.just_registered = true;
                }
            }
            Body::GetConfigRequest => out.push(Message::new(
                xid,
                Body::GetConfigReply(ofp::SwitchConfig {
                    flags: 0,
                    miss_send_len: ofp::OFPCML_NO_BUFFER,
                }),
            )),
            Body::SetConfig(_) | Body::SetAsync(_) => {}
            Body::BarrierRequest => {
                ops.barrier();
                out.push(Message::new(xid, Body::BarrierReply));
            }
            Body::RoleRequest(r) => match ops.role(r.role, r.generation_id) {
                Ok(role) => out.push(Message::new(
                    xid,
                    Body::RoleReply(ofp::RoleMsg {
                        role,
                        generation_id: r.generation_id,
                    }),
                )),
                Err(e) => {
                    warn!(
                        role = r.role,
                        generation_id = r.generation_id,
                        "role request refused (stale or bad)"
                    );
                    out.push(error(e));
                }
            },
            // A slave controller may look, not touch.
            Body::FlowMod(_)
            | Body::GroupMod(_)
            | Body::MeterMod(_)
            | Body::PacketOut(_)
            | Body::Experimenter { .. }
                if ops.is_slave() =>
            {
                debug!(
                    msg_type = m.body.msg_type(),
                    "modification from a slave controller refused"
                );
                out.push(error((ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_IS_SLAVE)));
            }
            Body::FlowMod(fm) => out.extend(ops.flow_mod(&fm).err().map(error)),
            Body::GroupMod(gm) => out.extend(ops.group_mod(&gm).err().map(error)),
            Body::MeterMod(mm) => out.extend(ops.meter_mod(&mm).err().map(error)),
            Body::PacketOut(po) => {
                // No buffers here: every PACKET_IN carries its whole frame.
                let r = if po.buffer_id != ofp::OFP_NO_BUFFER {
                    Err((ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_BUFFER_UNKNOWN))
                } else if po.data.len() < MIN_FRAME {
                    Err((ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_BAD_PACKET))
                } else {
                    ops.packet_out(&po)
                };
                out.extend(r.err().map(error));
            }
            Body::MultipartRequest { body, .. } => match ops.multipart(body) {
                Ok(answer) => out.extend(multipart_replies(xid, answer)),
                Err(e) => out.push(error(e)),
            },
            Body::Experimenter { .. } => {
                let r = match TccsMsg::from_body(&m.body) {
                    None => Err((ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_BAD_EXPERIMENTER)),
                    Some(Err(e)) => {
                        warn!(error = %e, "bad TCCS message");
                        Err((ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_BAD_EXP_TYPE))
                    }
                    Some(Ok(msg)) => ops.tccs(msg),
                };
                out.extend(r.err().map(error));
            }
            other => {
                debug!(msg_type = other.msg_type(), "unsupported OpenFlow message");
                out.push(error((ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_BAD_TYPE)));
            }
        }
        out
    }
}

/// The replies for a multipart answer: entries cut into messages under the 16-bit length, all
/// but the last flagged REPLY_MORE.
pub fn multipart_replies(xid: u32, answer: Answer) -> Vec<Message> {
    let reply = |flags, body| Message::new(xid, Body::MultipartReply { flags, body });
    match answer {
        Answer::One(body) => vec![reply(0, body)],
        Answer::Flows(stats) => {
            let mut out = Vec::new();
            let mut chunk = Vec::new();
            let mut size = 0;
            for s in stats {
                // Entry header, match and instructions, as encoded.
                let len = 56
                    + s.match_.fields.iter().map(|o| o.to_bytes().len() + 8).sum::<usize>()
                    + ofp::Instruction::encode_list(&s.instructions).len();
                if size + len > MULTIPART_CHUNK && !chunk.is_empty() {
                    out.push(reply(
                        ofp::OFPMPF_REPLY_MORE,
                        MultipartReplyBody::Flow(std::mem::take(&mut chunk)),
                    ));
                    size = 0;
                }
                size += len;
                chunk.push(s);
            }
            out.push(reply(0, MultipartReplyBody::Flow(chunk)));
            out
        }
        Answer::Raw { typ, entries } => {
            let mut out = Vec::new();
            let mut data = Vec::new();
            for e in entries {
                if data.len() + e.len() > MULTIPART_CHUNK && !data.is_empty() {
                    let body = MultipartReplyBody::Unknown {
                        typ,
                        data: std::mem::take(&mut data),
                    };
                    out.push(reply(ofp::OFPMPF_REPLY_MORE, body));
                }
                data.extend_from_slice(&e);
            }
            out.push(reply(0, MultipartReplyBody::Unknown { typ, data }));
            out
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// A switch that records what it was asked.
    #[derive(Default)]
    struct Rec {
        flow_mods: usize,
        barriers: usize,
        slave: bool,
        tccs: Vec<TccsMsg>,
    }

    impl SwitchOps for Rec {
        fn dpid(&self) -> u64 {
            0x42
        }
        fn registration(&mut self) -> Vec<Body> {
            vec![TccsMsg::PortVnet { port_no: 1, vnet: 0 }.to_body()]
        }
        fn role(&mut self, role: u32, _: u64) -> Result<u32, OfpErr> {
            self.slave = role == ofp::OFPCR_ROLE_SLAVE;
            Ok(role)
        }
        fn is_slave(&self) -> bool {
            self.slave
        }
        fn flow_mod(&mut self, _: &ofp::FlowMod) -> Result<(), OfpErr> {
            self.flow_mods += 1;
            Ok(())
        }
        fn group_mod(&mut self, _: &ofp::GroupMod) -> Result<(), OfpErr> {
            Err((ofp::OFPET_GROUP_MOD_FAILED, ofp::OFPGMFC_EPERM))
        }
        fn meter_mod(&mut self, _: &ofp::MeterMod) -> Result<(), OfpErr> {
            Ok(())
        }
        fn packet_out(&mut self, _: &ofp::PacketOut) -> Result<(), OfpErr> {
            Ok(())
        }
        fn barrier(&mut self) {
            self.barriers += 1;
        }
        fn multipart(&mut self, _: MultipartRequestBody) -> Result<Answer, OfpErr> {
            Ok(Answer::Raw {
                typ: ofp::OFPMP_GROUP_DESC,
                entries: vec![vec![0; 40_000], vec![0; 40_000]],
            })
        }
        fn tccs(&mut self, msg: TccsMsg) -> Result<(), OfpErr> {
            self.tccs.push(msg);
            Ok(())
        }
    }

    fn run(a: &mut Agent, ops: &mut Rec, body: Body) -> Vec<Message> {
        let m = Message::new(7, body);
        let raw = m.encode();
        a.on_message(m, &raw, ops)
    }

    #[test]
    fn a_controller_connection_registers_once_after_the_features_reply() {
        let mut a = Agent::new(true);
        let mut ops = Rec::default();
        let r = run(&mut a, &mut ops, Body::FeaturesRequest);
        assert!(matches!(r[0].body, Body::FeaturesReply { datapath_id: 0x42, .. }));
        assert_eq!(r.len(), 2, "features reply, then the registration");
        assert!(a.take_just_registered());
        assert!(!a.take_just_registered());
        assert_eq!(run(&mut a, &mut ops, Body::FeaturesRequest).len(), 1);
        // A tool's connection never registers.
        let mut tool = Agent::new(false);
        assert_eq!(run(&mut tool, &mut ops, Body::FeaturesRequest).len(), 1);
    }

    #[test]
    fn slaves_may_not_modify_and_errors_echo_the_request() {
        let mut a = Agent::new(true);
        let mut ops = Rec::default();
        run(
            &mut a,
            &mut ops,
            Body::RoleRequest(ofp::RoleMsg {
                role: ofp::OFPCR_ROLE_SLAVE,
                generation_id: 1,
            }),
        );
        let r = run(&mut a, &mut ops, Body::FlowMod(ofp::FlowMod::default()));
        assert!(matches!(
            r[0].body,
            Body::Error {
                typ: ofp::OFPET_BAD_REQUEST,
                code: ofp::OFPBRC_IS_SLAVE,
                ..
            }
        ));
        assert_eq!((r[0].xid, ops.flow_mods), (7, 0));
        ops.slave = false;
        assert!(run(&mut a, &mut ops, Body::FlowMod(ofp::FlowMod::default())).is_empty());
        let r = run(
            &mut a,
            &mut ops,
            Body::GroupMod(ofp::GroupMod {
                command: 0,
                group_type: 0,
                group_id: 1,
                buckets: vec![],
            }),
        );
        assert!(matches!(
            r[0].body,
            Body::Error {
                typ: ofp::OFPET_GROUP_MOD_FAILED,
                ..
            }
        ));
        let r = run(
            &mut a,
            &mut ops,
            Body::PacketOut(ofp::PacketOut {
                buffer_id: 5,
                in_port: 1,
                actions: vec![],
                data: vec![],
            }),
        );
        assert!(matches!(
            r[0].body,
            Body::Error {
                code: ofp::OFPBRC_BUFFER_UNKNOWN,
                ..
            }
        ));
    }

    #[test]
    fn barriers_multipart_chunks_and_tccs() {
        let mut a = Agent::new(true);
        let mut ops = Rec::default();
        assert!(matches!(
            run(&mut a, &mut ops, Body::BarrierRequest)[0].body,
            Body::BarrierReply
        ));
        assert_eq!(ops.barriers, 1);
        let r = run(
            &mut a,
            &mut ops,
            Body::MultipartRequest {
                flags: 0,
                body: MultipartRequestBody::PortDesc,
            },
        );
        assert_eq!(r.len(), 2, "80 KB of entries in two replies");
        assert!(matches!(
            r[0].body,
            Body::MultipartReply {
                flags: ofp::OFPMPF_REPLY_MORE,
                ..
            }
        ));
        assert!(r.iter().all(|m| m.try_encode().is_ok()));
        let t = TccsMsg::TunnelDel {
            remote_ip: std::net::Ipv4Addr::new(1, 2, 3, 4),
            key: 1,
            port_no: 0x4000,
        };
        assert!(run(&mut a, &mut ops, t.to_body()).is_empty());
        assert_eq!(ops.tccs, [t]);
        let bad = run(
            &mut a,
            &mut ops,
            Body::Experimenter {
                experimenter: 1,
                exp_type: 0,
                data: vec![],
            },
        );
        assert!(matches!(
            bad[0].body,
            Body::Error {
                code: ofp::OFPBRC_BAD_EXPERIMENTER,
                ..
            }
        ));
    }

    #[test]
    fn many_flow_stats_are_cut_into_replies_that_each_encode() {
        let stat = ofp::FlowStats {
            table_id: 0,
            duration_sec: 1,
            duration_nsec: 0,
            priority: 1,
            idle_timeout: 0,
            hard_timeout: 0,
            flags: 0,
            cookie: 0,
            packet_count: 0,
            byte_count: 0,
            match_: ofp::Match::new()
                .with(ofp::Oxm::InPort(1))
                .with(ofp::Oxm::EthType(0x0800))
                .with(ofp::Oxm::IpProto(6))
                .with(ofp::Oxm::TcpDst(80)),
            instructions: vec![ofp::Instruction::ApplyActions(vec![ofp::Action::output(2)])],
        };
        let replies = multipart_replies(1, Answer::Flows(vec![stat; 3000]));
        assert!(replies.len() > 3, "{} replies", replies.len());
        let mut n = 0;
        for (i, r) in replies.iter().enumerate() {
            r.try_encode()
                .unwrap_or_else(|e| panic!("reply {i} does not encode: {e}"));
            let Body::MultipartReply {
                flags,
                body: MultipartReplyBody::Flow(f),
            } = &r.body
            else {
                panic!()
            };
            assert_eq!(*flags == ofp::OFPMPF_REPLY_MORE, i + 1 < replies.len());
            n += f.len();
        }
        assert_eq!(n, 3000);
    }
}
