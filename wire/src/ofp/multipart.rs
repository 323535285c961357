//! Multipart (statistics) request and reply bodies (spec 7.3.5). The message-level
//! `type/flags/pad` header is handled in `message.rs`; these types cover what follows it.

use super::consts::{OFPG_ANY, OFPTT_ALL};
use super::error::OfpError;
use super::flow_match::Match;
use super::header::HEADER_LEN;
use super::message::{Body, Message};
use super::port::{PortDesc, OFPP_ANY, PORT_DESC_LEN};
use super::reader::Reader;
use super::stats::*;
use super::writer::{reencodes_to, Writer};

pub const OFPMP_DESC: u16 = 0;
pub const OFPMP_FLOW: u16 = 1;
pub const OFPMP_AGGREGATE: u16 = 2;
pub const OFPMP_TABLE: u16 = 3;
pub const OFPMP_PORT_STATS: u16 = 4;
pub const OFPMP_QUEUE: u16 = 5;
pub const OFPMP_GROUP: u16 = 6;
pub const OFPMP_GROUP_DESC: u16 = 7;
pub const OFPMP_GROUP_FEATURES: u16 = 8;
pub const OFPMP_METER: u16 = 9;
pub const OFPMP_METER_CONFIG: u16 = 10;
pub const OFPMP_METER_FEATURES: u16 = 11;
pub const OFPMP_TABLE_FEATURES: u16 = 12;
pub const OFPMP_PORT_DESC: u16 = 13;
pub const OFPMP_EXPERIMENTER: u16 = 0xffff;

/// Request flag: more request messages with this xid follow.
pub const OFPMPF_REQ_MORE: u16 = 1;
/// Reply flag: more reply messages with this xid follow.
pub const OFPMPF_REPLY_MORE: u16 = 1;

/// Room for a multipart body in one message: 16-bit length minus both headers.
const MAX_MULTIPART_BODY: usize = u16::MAX as usize - HEADER_LEN - 8;

/// Body of OFPMP_FLOW and OFPMP_AGGREGATE requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlowStatsRequest {
    pub table_id: u8,
    pub out_port: u32,
    pub out_group: u32,
    pub cookie: u64,
    pub cookie_mask: u64,
    pub match_: Match,
}

impl Default for FlowStatsRequest {
    /// Every flow of every table: the wildcards, not zeros.
    fn default() -> Self {
        FlowStatsRequest {
            table_id: OFPTT_ALL,
            out_port: OFPP_ANY,
            out_group: OFPG_ANY,
            cookie: 0,
            cookie_mask: 0,
            match_: Match::default(),
        }
    }
}

impl FlowStatsRequest {
    fn decode(r: &mut Reader) -> Result<FlowStatsRequest, OfpError> {
        let table_id = r.u8()?;
        r.skip(3)?;
        let out_port = r.u32()?;
        let out_group = r.u32()?;
        r.skip(4)?;
        Ok(FlowStatsRequest {
            table_id,
            out_port,
            out_group,
            cookie: r.u64()?,
            cookie_mask: r.u64()?,
            match_: Match::decode(r)?,
        })
    }

    fn encode(&self, w: &mut Writer) {
        w.u8(self.table_id);
        w.zeros(3);
        w.u32(self.out_port);
        w.u32(self.out_group);
        w.zeros(4);
        w.u64(self.cookie);
        w.u64(self.cookie_mask);
        self.match_.encode(w);
    }
}

/// What follows the multipart header of a MULTIPART_REQUEST.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MultipartRequestBody {
    Desc,
    Flow(FlowStatsRequest),
    Aggregate(FlowStatsRequest),
    Table,
    PortStats {
        port_no: u32,
    },
    PortDesc,
    /// Unmodelled types (queue, group, meter, table features, experimenter) and modelled ones
    /// in non-canonical form, verbatim.
    Unknown {
        typ: u16,
        data: Vec<u8>,
    },
}

impl MultipartRequestBody {
    /// The OFPMP_* type.
    pub fn multipart_type(&self) -> u16 {
        match self {
            MultipartRequestBody::Desc => OFPMP_DESC,
            MultipartRequestBody::Flow(_) => OFPMP_FLOW,
            MultipartRequestBody::Aggregate(_) => OFPMP_AGGREGATE,
            MultipartRequestBody::Table => OFPMP_TABLE,
            MultipartRequestBody::PortStats { .. } => OFPMP_PORT_STATS,
            MultipartRequestBody::PortDesc => OFPMP_PORT_DESC,
            MultipartRequestBody::Unknown { typ, .. } => *typ,
        }
    }

    pub(crate) fn decode(typ: u16, body: &[u8]) -> Result<MultipartRequestBody, OfpError> {
        let mut r = Reader::new(body);
        let typed = match typ {
            OFPMP_DESC => Some(MultipartRequestBody::Desc),
            OFPMP_FLOW => Some(MultipartRequestBody::Flow(
                FlowStatsRequest::decode(&mut r).map_err(entry_len)?,
            )),
            OFPMP_AGGREGATE => Some(MultipartRequestBody::Aggregate(
                FlowStatsRequest::decode(&mut r).map_err(entry_len)?,
            )),
            OFPMP_TABLE => Some(MultipartRequestBody::Table),
            OFPMP_PORT_STATS => {
                let port_no = r.u32().map_err(entry_len)?;
                r.skip(4).map_err(entry_len)?;
                Some(MultipartRequestBody::PortStats { port_no })
            }
            OFPMP_PORT_DESC => Some(MultipartRequestBody::PortDesc),
            _ => None,
        };
        Ok(match typed {
            Some(b) if reencodes_to(body, |w| b.encode(w)) => b,
            _ => MultipartRequestBody::Unknown {
                typ,
                data: body.to_vec(),
            },
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        match self {
            MultipartRequestBody::Desc | MultipartRequestBody::Table | MultipartRequestBody::PortDesc => {}
            MultipartRequestBody::Flow(req) | MultipartRequestBody::Aggregate(req) => req.encode(w),
            MultipartRequestBody::PortStats { port_no } => {
                w.u32(*port_no);
                w.zeros(4);
            }
            MultipartRequestBody::Unknown { data, .. } => w.bytes(data),
        }
    }
}

/// What follows the multipart header of a MULTIPART_REPLY.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MultipartReplyBody {
    /// Boxed: the record is 1056 bytes.
    Desc(Box<DescStats>),
    Flow(Vec<FlowStats>),
    Aggregate {
        packet_count: u64,
        byte_count: u64,
        flow_count: u32,
    },
    Table(Vec<TableStats>),
    PortStats(Vec<PortStats>),
    PortDesc(Vec<PortDesc>),
    /// Unmodelled types and modelled ones in non-canonical form, verbatim.
    Unknown {
        typ: u16,
        data: Vec<u8>,
    },
}

impl MultipartReplyBody {
    /// The OFPMP_* type.
    pub fn multipart_type(&self) -> u16 {
        match self {
            MultipartReplyBody::Desc(_) => OFPMP_DESC,
            MultipartReplyBody::Flow(_) => OFPMP_FLOW,
            MultipartReplyBody::Aggregate { .. } => OFPMP_AGGREGATE,
            MultipartReplyBody::Table(_) => OFPMP_TABLE,
            MultipartReplyBody::PortStats(_) => OFPMP_PORT_STATS,
            MultipartReplyBody::PortDesc(_) => OFPMP_PORT_DESC,
            MultipartReplyBody::Unknown { typ, .. } => *typ,
        }
    }

    pub(crate) fn decode(typ: u16, body: &[u8]) -> Result<MultipartReplyBody, OfpError> {
        let typed = decode_reply_typed(typ, body).map_err(entry_len)?;
        Ok(match typed {
            Some(b) if reencodes_to(body, |w| b.encode(w)) => b,
            _ => MultipartReplyBody::Unknown {
                typ,
                data: body.to_vec(),
            },
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        match self {
            MultipartReplyBody::Desc(desc) => desc.encode(w),
            MultipartReplyBody::Flow(flows) => flows.iter().for_each(|f| f.encode(w)),
            MultipartReplyBody::Aggregate {
                packet_count,
                byte_count,
                flow_count,
            } => {
                w.u64(*packet_count);
                w.u64(*byte_count);
                w.u32(*flow_count);
                w.zeros(4);
            }
            MultipartReplyBody::Table(tables) => tables.iter().for_each(|t| t.encode(w)),
            MultipartReplyBody::PortStats(ports) => ports.iter().for_each(|p| p.encode(w)),
            MultipartReplyBody::PortDesc(ports) => ports.iter().for_each(|p| p.encode(w)),
            MultipartReplyBody::Unknown { data, .. } => w.bytes(data),
        }
    }
}

fn decode_reply_typed(typ: u16, body: &[u8]) -> Result<Option<MultipartReplyBody>, OfpError> {
    let mut r = Reader::new(body);
    let reply = match typ {
        OFPMP_DESC => MultipartReplyBody::Desc(Box::new(DescStats::decode(&mut r)?)),
        OFPMP_FLOW => {
            let mut flows = Vec::new();
            while !r.is_empty() {
                // Smallest entry: fixed part plus an empty (8-byte) match.
                let raw = r.tlv(0, FLOW_STATS_FIXED_LEN + 8, 8, OfpError::BadMultipartLength)?;
                flows.push(FlowStats::decode(raw)?);
            }
            MultipartReplyBody::Flow(flows)
        }
        OFPMP_AGGREGATE => {
            let agg = MultipartReplyBody::Aggregate {
                packet_count: r.u64()?,
                byte_count: r.u64()?,
                flow_count: r.u32()?,
            };
            r.skip(4)?;
            agg
        }
        OFPMP_TABLE => MultipartReplyBody::Table(repeated(&mut r, TableStats::decode)?),
        OFPMP_PORT_STATS => MultipartReplyBody::PortStats(repeated(&mut r, PortStats::decode)?),
        OFPMP_PORT_DESC => MultipartReplyBody::PortDesc(repeated(&mut r, PortDesc::decode)?),
        _ => return Ok(None),
    };
    Ok(Some(reply))
}

/// Fixed-size records until the body ends; a partial last record is an error.
fn repeated<T>(r: &mut Reader, decode: fn(&mut Reader) -> Result<T, OfpError>) -> Result<Vec<T>, OfpError> {
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(decode(r)?);
    }
    Ok(out)
}

/// A multipart body that ends early has a bad length; other errors (match, instruction) keep
/// their own kind.
fn entry_len(e: OfpError) -> OfpError {
    match e {
        OfpError::Truncated => OfpError::BadMultipartLength,
        other => other,
    }
}

/// Splits a reply into messages with the same xid that each fit OpenFlow's 16-bit length, with
/// OFPMPF_REPLY_MORE on all but the last (spec 7.3.5). Entry lists are split between entries;
/// other bodies give a single message.
pub fn split_multipart_reply(xid: u32, body: MultipartReplyBody) -> Vec<Message> {
    let bodies: Vec<MultipartReplyBody> = match body {
        MultipartReplyBody::Flow(v) => chunks(v, FlowStats::encoded_len)
            .into_iter()
            .map(MultipartReplyBody::Flow)
            .collect(),
        MultipartReplyBody::Table(v) => chunks(v, |_| TABLE_STATS_LEN)
            .into_iter()
            .map(MultipartReplyBody::Table)
            .collect(),
        MultipartReplyBody::PortStats(v) => chunks(v, |_| PORT_STATS_LEN)
            .into_iter()
            .map(MultipartReplyBody::PortStats)
            .collect(),
        MultipartReplyBody::PortDesc(v) => chunks(v, |_| PORT_DESC_LEN)
            .into_iter()
            .map(MultipartReplyBody::PortDesc)
            .collect(),
        other => vec![other],
    };
    let last = bodies.len().saturating_sub(1);
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            let flags = if i < last { OFPMPF_REPLY_MORE } else { 0 };
            Message::new(xid, Body::MultipartReply { flags, body })
        })
        .collect()
}

/// Greedy split into runs whose summed sizes fit one multipart body; always at least one run.
fn chunks<T>(items: Vec<T>, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut current_len = 0;
    for item in items {
        let n = size(&item);
        if !current.is_empty() && current_len + n > MAX_MULTIPART_BODY {
            out.push(std::mem::take(&mut current));
            current_len = 0;
        }
        current_len += n;
        current.push(item);
    }
    out.push(current);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ofp::action::Action;
    use crate::ofp::instruction::Instruction;
    use crate::ofp::oxm::Oxm;
    use crate::ofp::writer::to_vec;

    fn reply_round_trip(typ: u16, body: &[u8]) -> MultipartReplyBody {
        let decoded = MultipartReplyBody::decode(typ, body).unwrap();
        assert_eq!(to_vec(|w| decoded.encode(w)), body);
        decoded
    }

    #[test]
    fn flow_stats_request_as_sent_by_ovs_ofctl() {
        let body = [
            0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 1, 0, 4, 0, 0, 0, 0,
        ];
        let decoded = MultipartRequestBody::decode(OFPMP_FLOW, &body).unwrap();
        assert_eq!(decoded, MultipartRequestBody::Flow(FlowStatsRequest::default()));
        assert_eq!(to_vec(|w| decoded.encode(w)), body);
    }

    #[test]
    fn simple_requests() {
        let ps = MultipartRequestBody::decode(OFPMP_PORT_STATS, &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        assert_eq!(ps, Ok(MultipartRequestBody::PortStats { port_no: OFPP_ANY }));
        assert_eq!(
            MultipartRequestBody::decode(OFPMP_PORT_DESC, &[]),
            Ok(MultipartRequestBody::PortDesc)
        );
        // A desc request with a body is not canonical: kept raw.
        assert_eq!(
            MultipartRequestBody::decode(OFPMP_DESC, &[1]),
            Ok(MultipartRequestBody::Unknown {
                typ: OFPMP_DESC,
                data: vec![1]
            })
        );
        assert_eq!(
            MultipartRequestBody::decode(OFPMP_PORT_STATS, &[0, 0, 0]),
            Err(OfpError::BadMultipartLength)
        );
        assert_eq!(
            MultipartRequestBody::decode(OFPMP_METER, &[0, 0, 0, 1, 0, 0, 0, 0]),
            Ok(MultipartRequestBody::Unknown {
                typ: OFPMP_METER,
                data: vec![0, 0, 0, 1, 0, 0, 0, 0]
            })
        );
    }

    #[test]
    fn flow_stats_entry() {
        // One entry: table 0, priority 1, match in_port=2 (16 bytes), apply-actions output 1.
        let mut body = vec![
            0, 88, 0, 0, // length 88, table 0
            0, 0, 0, 2, 0x0e, 0xd7, 0x6b, 0x20, // duration
            0, 1, 0, 0, 0, 0, 0, 0, // priority 1, idle 0, hard 0, flags 0
            0, 0, 0, 0, // pad
            0, 0, 0, 0, 0, 0, 0, 0, // cookie
            0, 0, 0, 0, 0, 0, 0, 3, // packets
            0, 0, 0, 0, 0, 0, 0, 0x62, // bytes
        ];
        body.extend_from_slice(&[0, 1, 0, 12, 0x80, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0, 0]);
        body.extend_from_slice(&[0, 4, 0, 24, 0, 0, 0, 0]);
        body.extend_from_slice(&[0, 0, 0, 16, 0, 0, 0, 1, 0xff, 0xe5, 0, 0, 0, 0, 0, 0]);
        assert_eq!(body.len(), 88);
        let decoded = reply_round_trip(OFPMP_FLOW, &body);
        let expected = FlowStats {
            table_id: 0,
            duration_sec: 2,
            duration_nsec: 0x0ed7_6b20,
            priority: 1,
            packet_count: 3,
            byte_count: 0x62,
            match_: Match::new().with(Oxm::InPort(2)),
            instructions: vec![Instruction::ApplyActions(vec![Action::Output {
                port: 1,
                max_len: 0xffe5,
            }])],
            ..FlowStats::default()
        };
        assert_eq!(expected.encoded_len(), 88);
        assert_eq!(decoded, MultipartReplyBody::Flow(vec![expected]));
    }

    #[test]
    fn bad_flow_stats_lengths() {
        let mut body = vec![0u8; 56];
        // length 0
        assert_eq!(
            MultipartReplyBody::decode(OFPMP_FLOW, &body),
            Err(OfpError::BadMultipartLength)
        );
        body[1] = 64; // longer than the body
        assert_eq!(
            MultipartReplyBody::decode(OFPMP_FLOW, &body),
            Err(OfpError::BadMultipartLength)
        );
        body[1] = 56; // right length, but the match type is 0
        assert_eq!(
            MultipartReplyBody::decode(OFPMP_FLOW, &body),
            Err(OfpError::BadMatchType(0))
        );
    }

    #[test]
    fn fixed_size_replies() {
        let mut table = vec![0u8; 24];
        table[0] = 0;
        table[7] = 3; // active
        table[15] = 0x0f; // lookups
        table[23] = 0x0f; // matched
        let decoded = reply_round_trip(OFPMP_TABLE, &table);
        assert_eq!(
            decoded,
            MultipartReplyBody::Table(vec![TableStats {
                table_id: 0,
                active_count: 3,
                lookup_count: 15,
                matched_count: 15
            }])
        );
        assert_eq!(
            MultipartReplyBody::decode(OFPMP_TABLE, &table[..23]),
            Err(OfpError::BadMultipartLength)
        );
        let agg = [0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 2, 0, 0, 0, 0];
        assert_eq!(
            reply_round_trip(OFPMP_AGGREGATE, &agg),
            MultipartReplyBody::Aggregate {
                packet_count: 5,
                byte_count: 256,
                flow_count: 2
            }
        );
        let mut desc = vec![0u8; DESC_STATS_LEN];
        desc[..4].copy_from_slice(b"Nici");
        desc[768..771].copy_from_slice(b"sn1");
        match reply_round_trip(OFPMP_DESC, &desc) {
            MultipartReplyBody::Desc(d) => {
                assert_eq!((d.mfr(), d.serial(), d.dp()), ("Nici".into(), "sn1".into(), "".into()))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            MultipartReplyBody::decode(OFPMP_DESC, &desc[1..]),
            Err(OfpError::BadMultipartLength)
        );
        // A port-stats entry with non-zero padding stays raw.
        let mut ps = vec![0u8; PORT_STATS_LEN];
        ps[5] = 1;
        assert!(matches!(
            reply_round_trip(OFPMP_PORT_STATS, &ps),
            MultipartReplyBody::Unknown {
                typ: OFPMP_PORT_STATS,
                ..
            }
        ));
    }

    #[test]
    fn split_long_replies() {
        let ports: Vec<PortDesc> = (0..2000)
            .map(|i| PortDesc {
                port_no: i,
                ..PortDesc::default()
            })
            .collect();
        let msgs = split_multipart_reply(7, MultipartReplyBody::PortDesc(ports.clone()));
        assert!(msgs.len() > 1);
        let mut rejoined = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            let bytes = m.try_encode().expect("each part fits");
            assert!(bytes.len() <= usize::from(u16::MAX));
            match &m.body {
                Body::MultipartReply {
                    flags,
                    body: MultipartReplyBody::PortDesc(p),
                } => {
                    assert_eq!(*flags == OFPMPF_REPLY_MORE, i + 1 < msgs.len());
                    rejoined.extend(p.iter().cloned());
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(rejoined, ports);
        let single = split_multipart_reply(1, MultipartReplyBody::Table(vec![]));
        assert_eq!(single.len(), 1);
    }
}
