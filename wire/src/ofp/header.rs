//! The 8-byte OpenFlow header, message type numbers, and stream framing.

use super::error::OfpError;
use super::reader::Reader;

/// OpenFlow 1.3 wire version.
pub const OFP_VERSION: u8 = 0x04;
/// Size of `ofp_header`.
pub const HEADER_LEN: usize = 8;
/// IANA port for OpenFlow.
pub const OFP_TCP_PORT: u16 = 6653;

// Message types (ofp_type).
pub const OFPT_HELLO: u8 = 0;
pub const OFPT_ERROR: u8 = 1;
pub const OFPT_ECHO_REQUEST: u8 = 2;
pub const OFPT_ECHO_REPLY: u8 = 3;
pub const OFPT_EXPERIMENTER: u8 = 4;
pub const OFPT_FEATURES_REQUEST: u8 = 5;
pub const OFPT_FEATURES_REPLY: u8 = 6;
pub const OFPT_GET_CONFIG_REQUEST: u8 = 7;
pub const OFPT_GET_CONFIG_REPLY: u8 = 8;
pub const OFPT_SET_CONFIG: u8 = 9;
pub const OFPT_PACKET_IN: u8 = 10;
pub const OFPT_FLOW_REMOVED: u8 = 11;
pub const OFPT_PORT_STATUS: u8 = 12;
pub const OFPT_PACKET_OUT: u8 = 13;
pub const OFPT_FLOW_MOD: u8 = 14;
pub const OFPT_GROUP_MOD: u8 = 15;
pub const OFPT_PORT_MOD: u8 = 16;
pub const OFPT_TABLE_MOD: u8 = 17;
pub const OFPT_MULTIPART_REQUEST: u8 = 18;
pub const OFPT_MULTIPART_REPLY: u8 = 19;
pub const OFPT_BARRIER_REQUEST: u8 = 20;
pub const OFPT_BARRIER_REPLY: u8 = 21;
pub const OFPT_QUEUE_GET_CONFIG_REQUEST: u8 = 22;
pub const OFPT_QUEUE_GET_CONFIG_REPLY: u8 = 23;
pub const OFPT_ROLE_REQUEST: u8 = 24;
pub const OFPT_ROLE_REPLY: u8 = 25;
pub const OFPT_GET_ASYNC_REQUEST: u8 = 26;
pub const OFPT_GET_ASYNC_REPLY: u8 = 27;
pub const OFPT_SET_ASYNC: u8 = 28;
pub const OFPT_METER_MOD: u8 = 29;

/// The fields of `ofp_header`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub typ: u8,
    pub length: u16,
    pub xid: u32,
}

impl Header {
    /// Reads a header from the start of `buf` without validating its version or length.
    pub fn peek(buf: &[u8]) -> Result<Header, OfpError> {
        let mut r = Reader::new(buf);
        Ok(Header {
            version: r.u8()?,
            typ: r.u8()?,
            length: r.u16()?,
            xid: r.u32()?,
        })
    }
}

/// Stream framing: given the bytes received so far, `Ok(None)` while fewer than 8 bytes are
/// available, otherwise `Ok(Some(total_len))` from the header's length field. A length below 8
/// is an error because the stream can never resynchronise after it.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, OfpError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = usize::from(Header::peek(buf)?.length);
    if len < HEADER_LEN {
        return Err(OfpError::BadLength);
    }
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        assert_eq!(frame_len(&[]), Ok(None));
        assert_eq!(frame_len(&[4, 0, 0, 8, 0, 0, 0]), Ok(None));
        assert_eq!(frame_len(&[4, 0, 0, 8, 0, 0, 0, 1]), Ok(Some(8)));
        // Only the header is needed; the body may still be in flight.
        assert_eq!(frame_len(&[4, 14, 0x01, 0x00, 0, 0, 0, 1, 0]), Ok(Some(256)));
        assert_eq!(frame_len(&[4, 0, 0, 7, 0, 0, 0, 1]), Err(OfpError::BadLength));
        assert_eq!(frame_len(&[4, 0, 0, 0, 0, 0, 0, 1]), Err(OfpError::BadLength));
    }

    #[test]
    fn header_fields() {
        let h = Header::peek(&[4, 6, 0, 32, 0xe8, 0x52, 0xcd, 0xb9]).unwrap();
        assert_eq!(
            h,
            Header {
                version: 4,
                typ: OFPT_FEATURES_REPLY,
                length: 32,
                xid: 0xe852_cdb9
            }
        );
        assert_eq!(Header::peek(&[4, 6, 0]), Err(OfpError::Truncated));
    }
}
