//! PACKET_IN (spec 7.4.1) and PACKET_OUT (spec 7.3.7).

use super::action::{encode_list, Action};
use super::error::OfpError;
use super::flow_match::Match;
use super::reader::Reader;
use super::writer::Writer;

// PACKET_IN reasons (ofp_packet_in_reason).
pub const OFPR_NO_MATCH: u8 = 0;
pub const OFPR_ACTION: u8 = 1;
pub const OFPR_INVALID_TTL: u8 = 2;

/// OFPT_PACKET_IN body.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PacketIn {
    /// OFP_NO_BUFFER when `data` holds the whole packet.
    pub buffer_id: u32,
    /// Length of the frame on the wire; `data` may be shorter.
    pub total_len: u16,
    pub reason: u8,
    pub table_id: u8,
    pub cookie: u64,
    /// Pipeline fields (in_port, tunnel_id, metadata...).
    pub match_: Match,
    pub data: Vec<u8>,
}

impl PacketIn {
    /// The ingress port from the match.
    pub fn in_port(&self) -> Option<u32> {
        self.match_.in_port()
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<PacketIn, OfpError> {
        let buffer_id = r.u32()?;
        let total_len = r.u16()?;
        let reason = r.u8()?;
        let table_id = r.u8()?;
        let cookie = r.u64()?;
        let match_ = Match::decode(r)?;
        // Two pad bytes align the IP header that follows the Ethernet header.
        r.skip(2)?;
        Ok(PacketIn {
            buffer_id,
            total_len,
            reason,
            table_id,
            cookie,
            match_,
            data: r.rest().to_vec(),
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u32(self.buffer_id);
        w.u16(self.total_len);
        w.u8(self.reason);
        w.u8(self.table_id);
        w.u64(self.cookie);
        self.match_.encode(w);
        w.zeros(2);
        w.bytes(&self.data);
    }
}

/// OFPT_PACKET_OUT body.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PacketOut {
    /// OFP_NO_BUFFER when `data` carries the packet.
    pub buffer_id: u32,
    /// Ingress port for the actions' purposes, or OFPP_CONTROLLER.
    pub in_port: u32,
    pub actions: Vec<Action>,
    pub data: Vec<u8>,
}

impl PacketOut {
    pub(crate) fn decode(r: &mut Reader) -> Result<PacketOut, OfpError> {
        let buffer_id = r.u32()?;
        let in_port = r.u32()?;
        let actions_len = usize::from(r.u16()?);
        r.skip(6)?;
        let actions = r.bytes(actions_len).map_err(|_| OfpError::BadLength)?;
        Ok(PacketOut {
            buffer_id,
            in_port,
            actions: Action::decode_list(actions)?,
            data: r.rest().to_vec(),
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u32(self.buffer_id);
        w.u32(self.in_port);
        let len_at = w.len_placeholder();
        w.zeros(6);
        let start = w.pos();
        encode_list(&self.actions, w);
        w.patch_len(len_at, start);
        w.bytes(&self.data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ofp::consts::OFP_NO_BUFFER;
    use crate::ofp::oxm::Oxm;
    use crate::ofp::port::OFPP_FLOOD;
    use crate::ofp::writer::to_vec;

    #[test]
    fn packet_in_body() {
        // buffer NO_BUFFER, total_len 6, reason NO_MATCH, table 0, cookie 0, in_port=2, data.
        let bytes = [
            0xff, 0xff, 0xff, 0xff, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // fixed part
            0, 1, 0, 12, 0x80, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0, 0, // match
            0, 0, // pad
            1, 2, 3, 4, 5, 6,
        ];
        let p = PacketIn::decode(&mut Reader::new(&bytes)).unwrap();
        assert_eq!(
            p,
            PacketIn {
                buffer_id: OFP_NO_BUFFER,
                total_len: 6,
                reason: OFPR_NO_MATCH,
                table_id: 0,
                cookie: 0,
                match_: Match::new().with(Oxm::InPort(2)),
                data: vec![1, 2, 3, 4, 5, 6],
            }
        );
        assert_eq!(p.in_port(), Some(2));
        assert_eq!(to_vec(|w| p.encode(w)), bytes);
        // Missing the two pad bytes.
        assert_eq!(
            PacketIn::decode(&mut Reader::new(&bytes[..33])),
            Err(OfpError::Truncated)
        );
    }

    #[test]
    fn packet_out_body() {
        let bytes = [
            0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 0, 16, 0, 0, 0, 0, 0, 0, // fixed part
            0, 0, 0, 16, 0xff, 0xff, 0xff, 0xfb, 0, 0, 0, 0, 0, 0, 0, 0, // output FLOOD
            0xaa, 0xbb,
        ];
        let p = PacketOut::decode(&mut Reader::new(&bytes)).unwrap();
        assert_eq!(
            p,
            PacketOut {
                buffer_id: OFP_NO_BUFFER,
                in_port: 1,
                actions: vec![Action::output(OFPP_FLOOD)],
                data: vec![0xaa, 0xbb],
            }
        );
        assert_eq!(to_vec(|w| p.encode(w)), bytes);
        // actions_len beyond the message.
        let mut bad = bytes;
        bad[9] = 0x40;
        assert_eq!(PacketOut::decode(&mut Reader::new(&bad)), Err(OfpError::BadLength));
        // actions_len that cuts an action in half.
        let mut bad = bytes;
        bad[9] = 8;
        assert_eq!(
            PacketOut::decode(&mut Reader::new(&bad)),
            Err(OfpError::BadActionLength)
        );
    }
}
