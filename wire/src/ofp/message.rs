//! Whole messages: the header plus a typed body, and the rule that makes round trips exact.
//!
//! A body is decoded into its typed variant only if that variant re-encodes to exactly the
//! received bytes; otherwise (unmodelled type, non-zero padding, trailing bytes after a fixed
//! layout...) it becomes [`Body::Unknown`] holding the raw body. Malformed input, such as a
//! length field that points outside its container, is an error instead.

use super::config::{AsyncConfig, RoleMsg, SwitchConfig, TableMod};
use super::error::{OfpError, OFP_ERROR_DATA_LEN};
use super::flow::{FlowMod, FlowRemoved};
use super::group::GroupMod;
use super::header::*;
use super::hello::HelloElement;
use super::meter::MeterMod;
use super::multipart::{MultipartReplyBody, MultipartRequestBody};
use super::packet::{PacketIn, PacketOut};
use super::port::{PortDesc, PortMod};
use super::reader::Reader;
use super::writer::{reencodes_to, Writer};

/// One OpenFlow message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub xid: u32,
    pub body: Body,
}

/// The message body, by type. Every body except `Hello` and `Unknown` is sent as version 0x04.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// `version` is the header version, kept because HELLO is exchanged before negotiation.
    Hello {
        version: u8,
        elements: Vec<HelloElement>,
    },
    /// For OFPET_EXPERIMENTER, `code` is the exp_type and `data` starts with the experimenter id.
    Error {
        typ: u16,
        code: u16,
        data: Vec<u8>,
    },
    EchoRequest(Vec<u8>),
    EchoReply(Vec<u8>),
    Experimenter {
        experimenter: u32,
        exp_type: u32,
        data: Vec<u8>,
    },
    FeaturesRequest,
    FeaturesReply {
        datapath_id: u64,
        n_buffers: u32,
        n_tables: u8,
        auxiliary_id: u8,
        capabilities: u32,
        reserved: u32,
    },
    GetConfigRequest,
    GetConfigReply(SwitchConfig),
    SetConfig(SwitchConfig),
    PacketIn(PacketIn),
    FlowRemoved(FlowRemoved),
    PortStatus {
        reason: u8,
        desc: PortDesc,
    },
    PacketOut(PacketOut),
    FlowMod(FlowMod),
    GroupMod(GroupMod),
    MeterMod(MeterMod),
    PortMod(PortMod),
    TableMod(TableMod),
    MultipartRequest {
        flags: u16,
        body: MultipartRequestBody,
    },
    MultipartReply {
        flags: u16,
        body: MultipartReplyBody,
    },
    BarrierRequest,
    BarrierReply,
    RoleRequest(RoleMsg),
    RoleReply(RoleMsg),
    GetAsyncRequest,
    GetAsyncReply(AsyncConfig),
    SetAsync(AsyncConfig),
    /// Any other message (QUEUE_GET_CONFIG_*, ...) or a modelled one in
    /// non-canonical form: the raw body after the 8-byte header.
    Unknown {
        version: u8,
        typ: u8,
        body: Vec<u8>,
    },
}

impl Body {
    /// The OFPT_* type.
    pub fn msg_type(&self) -> u8 {
        match self {
            Body::Hello { .. } => OFPT_HELLO,
            Body::Error { .. } => OFPT_ERROR,
            Body::EchoRequest(_) => OFPT_ECHO_REQUEST,
            Body::EchoReply(_) => OFPT_ECHO_REPLY,
            Body::Experimenter { .. } => OFPT_EXPERIMENTER,
            Body::FeaturesRequest => OFPT_FEATURES_REQUEST,
            Body::FeaturesReply { .. } => OFPT_FEATURES_REPLY,
            Body::GetConfigRequest => OFPT_GET_CONFIG_REQUEST,
            Body::GetConfigReply(_) => OFPT_GET_CONFIG_REPLY,
            Body::SetConfig(_) => OFPT_SET_CONFIG,
            Body::PacketIn(_) => OFPT_PACKET_IN,
            Body::FlowRemoved(_) => OFPT_FLOW_REMOVED,
            Body::PortStatus { .. } => OFPT_PORT_STATUS,
            Body::PacketOut(_) => OFPT_PACKET_OUT,
            Body::FlowMod(_) => OFPT_FLOW_MOD,
            Body::GroupMod(_) => OFPT_GROUP_MOD,
            Body::MeterMod(_) => OFPT_METER_MOD,
            Body::PortMod(_) => OFPT_PORT_MOD,
            Body::TableMod(_) => OFPT_TABLE_MOD,
            Body::MultipartRequest { .. } => OFPT_MULTIPART_REQUEST,
            Body::MultipartReply { .. } => OFPT_MULTIPART_REPLY,
            Body::BarrierRequest => OFPT_BARRIER_REQUEST,
            Body::BarrierReply => OFPT_BARRIER_REPLY,
            Body::RoleRequest(_) => OFPT_ROLE_REQUEST,
            Body::RoleReply(_) => OFPT_ROLE_REPLY,
            Body::GetAsyncRequest => OFPT_GET_ASYNC_REQUEST,
            Body::GetAsyncReply(_) => OFPT_GET_ASYNC_REPLY,
            Body::SetAsync(_) => OFPT_SET_ASYNC,
            Body::Unknown { typ, .. } => *typ,
        }
    }

    /// The header version this body is sent with.
    pub fn version(&self) -> u8 {
        match self {
            Body::Hello { version, .. } | Body::Unknown { version, .. } => *version,
            _ => OFP_VERSION,
        }
    }

    /// A HELLO advertising `versions` in a bitmap, with the highest one in the header.
    pub fn hello(versions: &[u8]) -> Body {
        Body::Hello {
            version: versions.iter().copied().max().unwrap_or(OFP_VERSION),
            elements: vec![HelloElement::version_bitmap(versions)],
        }
    }

    /// An OFPT_ERROR echoing the first 64 bytes of the offending request.
    pub fn error_reply(typ: u16, code: u16, request: &[u8]) -> Body {
        let n = request.len().min(OFP_ERROR_DATA_LEN);
        Body::Error {
            typ,
            code,
            data: request.get(..n).unwrap_or_default().to_vec(),
        }
    }

    fn decode(version: u8, typ: u8, body: &[u8]) -> Result<Option<Body>, OfpError> {
        let mut r = Reader::new(body);
        let decoded = match typ {
            OFPT_HELLO => Body::Hello {
                version,
                elements: HelloElement::decode_list(body)?,
            },
            OFPT_ERROR => Body::Error {
                typ: r.u16()?,
                code: r.u16()?,
                data: r.rest().to_vec(),
            },
            OFPT_ECHO_REQUEST => Body::EchoRequest(body.to_vec()),
            OFPT_ECHO_REPLY => Body::EchoReply(body.to_vec()),
            OFPT_EXPERIMENTER => Body::Experimenter {
                experimenter: r.u32()?,
                exp_type: r.u32()?,
                data: r.rest().to_vec(),
            },
            OFPT_FEATURES_REQUEST => Body::FeaturesRequest,
            OFPT_FEATURES_REPLY => {
                let datapath_id = r.u64()?;
                let n_buffers = r.u32()?;
                let n_tables = r.u8()?;
                let auxiliary_id = r.u8()?;
                r.skip(2)?;
                Body::FeaturesReply {
                    datapath_id,
                    n_buffers,
                    n_tables,
                    auxiliary_id,
                    capabilities: r.u32()?,
                    reserved: r.u32()?,
                }
            }
            OFPT_GET_CONFIG_REQUEST => Body::GetConfigRequest,
            OFPT_GET_CONFIG_REPLY => Body::GetConfigReply(SwitchConfig::decode(&mut r)?),
            OFPT_SET_CONFIG => Body::SetConfig(SwitchConfig::decode(&mut r)?),
            OFPT_PACKET_IN => Body::PacketIn(PacketIn::decode(&mut r)?),
            OFPT_FLOW_REMOVED => Body::FlowRemoved(FlowRemoved::decode(&mut r)?),
            OFPT_PORT_STATUS => {
                let reason = r.u8()?;
                r.skip(7)?;
                Body::PortStatus {
                    reason,
                    desc: PortDesc::decode(&mut r)?,
                }
            }
            OFPT_PACKET_OUT => Body::PacketOut(PacketOut::decode(&mut r)?),
            OFPT_FLOW_MOD => Body::FlowMod(FlowMod::decode(&mut r)?),
            OFPT_GROUP_MOD => Body::GroupMod(GroupMod::decode(&mut r)?),
            OFPT_METER_MOD => Body::MeterMod(MeterMod::decode(&mut r)?),
            OFPT_PORT_MOD => Body::PortMod(PortMod::decode(&mut r)?),
            OFPT_TABLE_MOD => Body::TableMod(TableMod::decode(&mut r)?),
            OFPT_MULTIPART_REQUEST => {
                let mp_type = r.u16()?;
                let flags = r.u16()?;
                r.skip(4)?;
                Body::MultipartRequest {
                    flags,
                    body: MultipartRequestBody::decode(mp_type, r.rest())?,
                }
            }
            OFPT_MULTIPART_REPLY => {
                let mp_type = r.u16()?;
                let flags = r.u16()?;
                r.skip(4)?;
                Body::MultipartReply {
                    flags,
                    body: MultipartReplyBody::decode(mp_type, r.rest())?,
                }
            }
            OFPT_BARRIER_REQUEST => Body::BarrierRequest,
            OFPT_BARRIER_REPLY => Body::BarrierReply,
            OFPT_ROLE_REQUEST => Body::RoleRequest(RoleMsg::decode(&mut r)?),
            OFPT_ROLE_REPLY => Body::RoleReply(RoleMsg::decode(&mut r)?),
            OFPT_GET_ASYNC_REQUEST => Body::GetAsyncRequest,
            OFPT_GET_ASYNC_REPLY => Body::GetAsyncReply(AsyncConfig::decode(&mut r)?),
            OFPT_SET_ASYNC => Body::SetAsync(AsyncConfig::decode(&mut r)?),
            _ => return Ok(None),
        };
        Ok(Some(decoded))
    }

    fn encode(&self, w: &mut Writer) {
        match self {
            Body::Hello { elements, .. } => elements.iter().for_each(|e| e.encode(w)),
            Body::Error { typ, code, data } => {
                w.u16(*typ);
                w.u16(*code);
                w.bytes(data);
            }
            Body::EchoRequest(data) | Body::EchoReply(data) => w.bytes(data),
            Body::Experimenter {
                experimenter,
                exp_type,
                data,
            } => {
                w.u32(*experimenter);
                w.u32(*exp_type);
                w.bytes(data);
            }
            Body::FeaturesRequest
            | Body::GetConfigRequest
            | Body::BarrierRequest
            | Body::BarrierReply
            | Body::GetAsyncRequest => {}
            Body::FeaturesReply {
                datapath_id,
                n_buffers,
                n_tables,
                auxiliary_id,
                capabilities,
                reserved,
            } => {
                w.u64(*datapath_id);
                w.u32(*n_buffers);
                w.u8(*n_tables);
                w.u8(*auxiliary_id);
                w.zeros(2);
                w.u32(*capabilities);
                w.u32(*reserved);
            }
            Body::GetConfigReply(cfg) | Body::SetConfig(cfg) => cfg.encode(w),
            Body::PacketIn(p) => p.encode(w),
            Body::FlowRemoved(f) => f.encode(w),
            Body::PortStatus { reason, desc } => {
                w.u8(*reason);
                w.zeros(7);
                desc.encode(w);
            }
            Body::PacketOut(p) => p.encode(w),
            Body::FlowMod(f) => f.encode(w),
            Body::GroupMod(g) => g.encode(w),
            Body::MeterMod(m) => m.encode(w),
            Body::PortMod(p) => p.encode(w),
            Body::TableMod(t) => t.encode(w),
            Body::MultipartRequest { flags, body } => {
                w.u16(body.multipart_type());
                w.u16(*flags);
                w.zeros(4);
                body.encode(w);
            }
            Body::MultipartReply { flags, body } => {
                w.u16(body.multipart_type());
                w.u16(*flags);
                w.zeros(4);
                body.encode(w);
            }
            Body::RoleRequest(role) | Body::RoleReply(role) => role.encode(w),
            Body::GetAsyncReply(cfg) | Body::SetAsync(cfg) => cfg.encode(w),
            Body::Unknown { body, .. } => w.bytes(body),
        }
    }
}

impl Message {
    pub fn new(xid: u32, body: Body) -> Self {
        Message { xid, body }
    }

    /// An OFPT_ERROR answering `request` (the raw bytes of the failed message): same xid, first
    /// 64 bytes echoed.
    pub fn error_reply_to(request: &[u8], typ: u16, code: u16) -> Message {
        let xid = Header::peek(request).map_or(0, |h| h.xid);
        Message::new(xid, Body::error_reply(typ, code, request))
    }

    /// Decodes exactly one message: `buf` must be the whole message (header length ==
    /// `buf.len()`). The version must be 0x04 except for HELLO, which may carry any version and
    /// never fails once its header is valid (garbled elements give `Body::Unknown`).
    pub fn decode(buf: &[u8]) -> Result<Message, OfpError> {
        let header = Header::peek(buf)?;
        let len = usize::from(header.length);
        if len < HEADER_LEN || len < buf.len() {
            return Err(OfpError::BadLength);
        }
        if len > buf.len() {
            return Err(OfpError::Truncated);
        }
        if header.typ != OFPT_HELLO && header.version != OFP_VERSION {
            return Err(OfpError::BadVersion(header.version));
        }
        let raw_body = buf.get(HEADER_LEN..).unwrap_or_default();
        let typed = match Body::decode(header.version, header.typ, raw_body) {
            Ok(typed) => typed,
            // Negotiation can always fall back on the header version, so keep the HELLO.
            Err(_) if header.typ == OFPT_HELLO => None,
            Err(e) => return Err(e),
        };
        let body = match typed {
            Some(body) if reencodes_to(raw_body, |w| body.encode(w)) => body,
            _ => Body::Unknown {
                version: header.version,
                typ: header.typ,
                body: raw_body.to_vec(),
            },
        };
        Ok(Message { xid: header.xid, body })
    }

    pub fn msg_type(&self) -> u8 {
        self.body.msg_type()
    }

    /// The header version this message is sent with.
    pub fn version(&self) -> u8 {
        self.body.version()
    }

    /// Encodes into a new buffer.
    ///
    /// # Panics
    /// If a length does not fit its field (a message over 65535 bytes, an OXM over 255); use
    /// [`Message::try_encode`] or split multipart replies with `split_multipart_reply`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoding to `out`. Panics like [`Message::encode`].
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        if let Err(e) = self.try_encode_into(out) {
            panic!("cannot encode OpenFlow message type {}: {e}", self.msg_type());
        }
    }

    /// Encodes, or fails with [`OfpError::TooLong`].
    pub fn try_encode(&self) -> Result<Vec<u8>, OfpError> {
        let mut out = Vec::new();
        self.try_encode_into(&mut out)?;
        Ok(out)
    }

    /// Appends the encoding to `out`; on error `out` is left as it was.
    pub fn try_encode_into(&self, out: &mut Vec<u8>) -> Result<(), OfpError> {
        let start = out.len();
        let overflowed = {
            let mut w = Writer::new(out);
            w.u8(self.version());
            w.u8(self.msg_type());
            let len_at = w.len_placeholder();
            w.u32(self.xid);
            self.body.encode(&mut w);
            w.patch_len(len_at, start);
            w.overflowed()
        };
        if overflowed {
            out.truncate(start);
            return Err(OfpError::TooLong);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ofp::error::*;
    use crate::ofp::multipart::OFPMP_PORT_DESC;

    fn round_trip(bytes: &[u8]) -> Message {
        let m = Message::decode(bytes).unwrap();
        assert_eq!(m.encode(), bytes, "{m:?}");
        m
    }

    #[test]
    fn hello_with_bitmap() {
        let m = round_trip(&[4, 0, 0, 16, 0, 0, 0, 1, 0, 1, 0, 8, 0, 0, 0, 0x10]);
        assert_eq!(m.xid, 1);
        assert_eq!(m.body, Body::hello(&[4]));
    }

    #[test]
    fn hello_of_other_versions() {
        // OpenFlow 1.0 hello without elements.
        let m = round_trip(&[1, 0, 0, 8, 0, 0, 0, 9]);
        assert_eq!(
            m.body,
            Body::Hello {
                version: 1,
                elements: vec![]
            }
        );
        assert_eq!(m.version(), 1);
        // OpenFlow 1.5 hello advertising 1.3 and 1.5.
        let m = round_trip(&[6, 0, 0, 16, 0, 0, 0, 9, 0, 1, 0, 8, 0, 0, 0, 0x50]);
        assert_eq!(m.body, Body::hello(&[4, 6]));
        // Garbage elements: still a HELLO by type and version, kept raw.
        let m = round_trip(&[5, 0, 0, 11, 0, 0, 0, 9, 0, 1, 0]);
        assert_eq!(
            m.body,
            Body::Unknown {
                version: 5,
                typ: OFPT_HELLO,
                body: vec![0, 1, 0]
            }
        );
        assert_eq!((m.msg_type(), m.version()), (OFPT_HELLO, 5));
    }

    #[test]
    fn features_reply_from_ovs() {
        let m = round_trip(&[
            0x04, 0x06, 0x00, 0x20, 0xe8, 0x52, 0xcd, 0xb9, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
            0x00, 0x00, 0xfe, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x4f, 0x00, 0x00, 0x00, 0x00,
        ]);
        assert_eq!(
            m,
            Message::new(
                0xe852_cdb9,
                Body::FeaturesReply {
                    datapath_id: 0x0000_0200_0000_0001,
                    n_buffers: 0,
                    n_tables: 0xfe,
                    auxiliary_id: 0,
                    capabilities: 0x4f,
                    reserved: 0,
                }
            )
        );
    }

    #[test]
    fn simple_messages() {
        assert_eq!(round_trip(&[4, 5, 0, 8, 0, 0, 0, 2]).body, Body::FeaturesRequest);
        assert_eq!(
            round_trip(&[4, 2, 0, 11, 0, 0, 0, 3, 1, 2, 3]).body,
            Body::EchoRequest(vec![1, 2, 3])
        );
        assert_eq!(round_trip(&[4, 21, 0, 8, 0, 0, 0, 4]).body, Body::BarrierReply);
        assert_eq!(
            round_trip(&[4, 8, 0, 12, 0, 0, 0, 5, 0, 0, 0xff, 0xe5]).body,
            Body::GetConfigReply(SwitchConfig {
                flags: 0,
                miss_send_len: 0xffe5
            })
        );
        assert_eq!(
            round_trip(&[4, 1, 0, 16, 0, 0, 0, 6, 0, 1, 0, 6, 4, 14, 0, 8]).body,
            Body::Error {
                typ: OFPET_BAD_REQUEST,
                code: OFPBRC_BAD_LEN,
                data: vec![4, 14, 0, 8]
            }
        );
        assert_eq!(
            round_trip(&[4, 4, 0, 18, 0, 0, 0, 7, 0, 0xc1, 0x0d, 0xac, 0, 0, 0, 1, 0xab, 0xcd]).body,
            Body::Experimenter {
                experimenter: 0x00c1_0dac,
                exp_type: 1,
                data: vec![0xab, 0xcd]
            }
        );
        let mp = round_trip(&[4, 18, 0, 16, 0, 0, 0, 3, 0, 13, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            mp.body,
            Body::MultipartRequest {
                flags: 0,
                body: MultipartRequestBody::PortDesc
            }
        );
        assert_eq!(mp.body.msg_type(), OFPT_MULTIPART_REQUEST);
        if let Body::MultipartRequest { body, .. } = &mp.body {
            assert_eq!(body.multipart_type(), OFPMP_PORT_DESC);
        }
    }

    #[test]
    fn port_status_from_ovs() {
        let mut bytes = vec![4, 12, 0, 80, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0];
        bytes.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 0, 0xc6, 0xe9, 0x37, 0x77, 0x26, 0x48]);
        bytes.extend_from_slice(&[0, 0]);
        bytes.extend_from_slice(b"cf4681a2\0\0\0\0\0\0\0\0");
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 8, 0x40]);
        bytes.extend_from_slice(&[0; 12]);
        bytes.extend_from_slice(&[0, 0x98, 0x96, 0x80, 0, 0, 0, 0]);
        let m = round_trip(&bytes);
        match m.body {
            Body::PortStatus { reason, desc } => {
                assert_eq!(reason, crate::ofp::port::OFPPR_MODIFY);
                assert_eq!(desc.port_no, 2);
                assert_eq!(desc.name(), "cf4681a2");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unmodelled_and_non_canonical_bodies_stay_raw() {
        // QUEUE_GET_CONFIG_REQUEST is not modelled.
        let qr = [4, 22, 0, 16, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0];
        assert_eq!(
            round_trip(&qr).body,
            Body::Unknown {
                version: 4,
                typ: OFPT_QUEUE_GET_CONFIG_REQUEST,
                body: qr[8..].to_vec()
            }
        );
        // A GROUP_MOD with non-zero padding stays raw.
        let gm = [4, 15, 0, 16, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0, 1];
        assert!(matches!(
            round_trip(&gm).body,
            Body::Unknown {
                typ: OFPT_GROUP_MOD,
                ..
            }
        ));
        // FEATURES_REPLY with non-zero padding.
        let mut fr = [0u8; 32];
        fr[..4].copy_from_slice(&[4, 6, 0, 32]);
        fr[22] = 1;
        assert!(matches!(round_trip(&fr).body, Body::Unknown { typ: 6, .. }));
        // BARRIER_REQUEST with a trailing byte.
        assert!(matches!(
            round_trip(&[4, 20, 0, 9, 0, 0, 0, 1, 0]).body,
            Body::Unknown { typ: 20, .. }
        ));
        // Multipart request with non-zero padding in its header.
        assert!(matches!(
            round_trip(&[4, 18, 0, 16, 0, 0, 0, 3, 0, 13, 0, 0, 0, 0, 0, 1]).body,
            Body::Unknown { typ: 18, .. }
        ));
    }

    #[test]
    fn header_errors() {
        assert_eq!(Message::decode(&[]), Err(OfpError::Truncated));
        assert_eq!(Message::decode(&[4, 0, 0, 8, 0]), Err(OfpError::Truncated));
        assert_eq!(Message::decode(&[4, 0, 0, 7, 0, 0, 0, 0]), Err(OfpError::BadLength));
        assert_eq!(Message::decode(&[4, 0, 0, 0, 0, 0, 0, 0]), Err(OfpError::BadLength));
        // Length field larger than the buffer.
        assert_eq!(
            Message::decode(&[4, 2, 0, 12, 0, 0, 0, 0, 1, 2]),
            Err(OfpError::Truncated)
        );
        // Buffer longer than the message.
        assert_eq!(
            Message::decode(&[4, 2, 0, 8, 0, 0, 0, 0, 1, 2]),
            Err(OfpError::BadLength)
        );
        assert_eq!(Message::decode(&[1, 2, 0, 8, 0, 0, 0, 0]), Err(OfpError::BadVersion(1)));
        assert_eq!(
            Message::decode(&[5, 14, 0, 8, 0, 0, 0, 0]),
            Err(OfpError::BadVersion(5))
        );
    }

    #[test]
    fn body_errors() {
        // Too short for its fixed part.
        assert_eq!(
            Message::decode(&[4, 6, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(OfpError::Truncated)
        );
        assert_eq!(
            Message::decode(&[4, 1, 0, 10, 0, 0, 0, 0, 0, 1]),
            Err(OfpError::Truncated)
        );
        // FLOW_MOD whose apply-actions holds a zero-length action.
        let mut fm = vec![4, 14, 0, 80, 0, 0, 0, 1];
        fm.extend_from_slice(&[0; 40]);
        fm.extend_from_slice(&[0, 1, 0, 4, 0, 0, 0, 0]);
        fm.extend_from_slice(&[0, 4, 0, 24, 0, 0, 0, 0]);
        fm.extend_from_slice(&[0; 16]);
        assert_eq!(Message::decode(&fm), Err(OfpError::BadActionLength));
    }

    #[test]
    fn error_replies() {
        let request: Vec<u8> = [4, 14, 0, 100, 0, 0, 0, 42]
            .into_iter()
            .chain(std::iter::repeat_n(0, 92))
            .collect();
        let e = Message::error_reply_to(&request, OFPET_BAD_MATCH, OFPBMC_BAD_FIELD);
        assert_eq!(e.xid, 42);
        match &e.body {
            Body::Error { typ, code, data } => {
                assert_eq!((*typ, *code), (OFPET_BAD_MATCH, OFPBMC_BAD_FIELD));
                assert_eq!(data.as_slice(), &request[..64]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.encode().len(), 8 + 4 + 64);
        let short = Message::error_reply_to(&[4], OFPET_BAD_REQUEST, OFPBRC_BAD_LEN);
        assert_eq!(short.xid, 0);
    }

    #[test]
    fn oversized_messages_fail_to_encode() {
        let m = Message::new(1, Body::EchoRequest(vec![0; 70_000]));
        let mut out = vec![9];
        assert_eq!(m.try_encode_into(&mut out), Err(OfpError::TooLong));
        assert_eq!(out, [9]);
        let result = std::panic::catch_unwind(|| m.encode());
        assert!(result.is_err());
        let ok = Message::new(1, Body::EchoRequest(vec![0; 65_527]));
        assert_eq!(ok.try_encode().map(|b| b.len()), Ok(65_535));
    }
}
