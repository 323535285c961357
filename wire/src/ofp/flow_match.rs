//! `ofp_match` (spec 7.2.2): type OFPMT_OXM, a length that counts the 4-byte header and the OXM
//! TLVs but not the trailing zero padding to a multiple of 8.

use super::error::OfpError;
use super::oxm::Oxm;
use super::reader::Reader;
use super::writer::{pad8, to_vec, Writer};

/// Deprecated OpenFlow 1.1 fixed match; not accepted.
pub const OFPMT_STANDARD: u16 = 0;
/// OpenFlow Extensible Match.
pub const OFPMT_OXM: u16 = 1;

/// A list of OXM fields. An empty match (matches everything) encodes as 8 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Match {
    pub fields: Vec<Oxm>,
}

impl Match {
    pub fn new() -> Self {
        Match::default()
    }

    /// Builder: appends one field.
    pub fn with(mut self, field: Oxm) -> Self {
        self.fields.push(field);
        self
    }

    /// The first field with this class and field number.
    pub fn get(&self, class: u16, field: u8) -> Option<&Oxm> {
        self.fields.iter().find(|f| f.class() == class && f.field() == field)
    }

    pub fn in_port(&self) -> Option<u32> {
        self.fields.iter().find_map(|f| match f {
            Oxm::InPort(port) => Some(*port),
            _ => None,
        })
    }

    /// Exact (unmasked) Ethernet destination; a masked ETH_DST yields None (use [`Match::get`]).
    pub fn eth_dst(&self) -> Option<[u8; 6]> {
        self.fields.iter().find_map(|f| match f {
            Oxm::EthDst { mac, mask: None } => Some(*mac),
            _ => None,
        })
    }

    /// Exact (unmasked) Ethernet source.
    pub fn eth_src(&self) -> Option<[u8; 6]> {
        self.fields.iter().find_map(|f| match f {
            Oxm::EthSrc { mac, mask: None } => Some(*mac),
            _ => None,
        })
    }

    pub fn eth_type(&self) -> Option<u16> {
        self.fields.iter().find_map(|f| match f {
            Oxm::EthType(t) => Some(*t),
            _ => None,
        })
    }

    /// Exact (unmasked) tunnel id.
    pub fn tunnel_id(&self) -> Option<u64> {
        self.fields.iter().find_map(|f| match f {
            Oxm::TunnelId { id, mask: None } => Some(*id),
            _ => None,
        })
    }

    /// Exact (unmasked) metadata.
    pub fn metadata(&self) -> Option<u64> {
        self.fields.iter().find_map(|f| match f {
            Oxm::Metadata { value, mask: None } => Some(*value),
            _ => None,
        })
    }

    /// Decodes a match that occupies all of `buf`, padding included.
    pub fn from_bytes(buf: &[u8]) -> Result<Match, OfpError> {
        let mut r = Reader::new(buf);
        let m = Match::decode(&mut r)?;
        if !r.is_empty() {
            return Err(OfpError::BadMatchLength);
        }
        Ok(m)
    }

    /// Wire form including the padding.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_vec(|w| self.encode(w))
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Match, OfpError> {
        let typ = r.u16()?;
        let len = usize::from(r.u16()?);
        if typ != OFPMT_OXM {
            return Err(OfpError::BadMatchType(typ));
        }
        if len < 4 {
            return Err(OfpError::BadMatchLength);
        }
        let tlvs = r.bytes(len - 4).map_err(|_| OfpError::BadMatchLength)?;
        r.skip(pad8(len)).map_err(|_| OfpError::BadMatchLength)?;
        let mut fields = Vec::new();
        let mut tr = Reader::new(tlvs);
        while !tr.is_empty() {
            fields.push(Oxm::decode(&mut tr)?);
        }
        Ok(Match { fields })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        let start = w.pos();
        w.u16(OFPMT_OXM);
        let len_at = w.len_placeholder();
        for field in &self.fields {
            field.encode(w);
        }
        w.patch_len(len_at, start);
        w.pad_to_8(start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_match_is_eight_bytes() {
        let bytes = [0, 1, 0, 4, 0, 0, 0, 0];
        assert_eq!(Match::new().to_bytes(), bytes);
        assert_eq!(Match::from_bytes(&bytes), Ok(Match::new()));
    }

    #[test]
    fn in_port_and_eth_dst_as_sent_by_os_ken() {
        // From the captured FLOW_MOD: length 0x16 = 4 + 8 + 10, then 2 bytes of padding.
        let bytes = [
            0x00, 0x01, 0x00, 0x16, 0x80, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x02, 0x80, 0x00, 0x06, 0x06, 0x02, 0x00,
            0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
        ];
        let m = Match::from_bytes(&bytes).unwrap();
        assert_eq!(m.in_port(), Some(2));
        assert_eq!(m.eth_dst(), Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(m.eth_src(), None);
        assert_eq!(m.to_bytes(), bytes);
        let built = Match::new().with(Oxm::InPort(2)).with(Oxm::EthDst {
            mac: [2, 0, 0, 0, 0, 1],
            mask: None,
        });
        assert_eq!(built, m);
    }

    #[test]
    fn getters_skip_masked_fields() {
        let m = Match::new()
            .with(Oxm::TunnelId {
                id: 5,
                mask: Some(0xff),
            })
            .with(Oxm::Metadata { value: 7, mask: None })
            .with(Oxm::EthType(0x0800));
        assert_eq!(m.tunnel_id(), None);
        assert_eq!(m.metadata(), Some(7));
        assert_eq!(m.eth_type(), Some(0x0800));
        assert!(m.get(0x8000, 38).is_some());
        assert_eq!(m.to_bytes().len(), 4 + 20 + 12 + 6 + 6);
    }

    #[test]
    fn malformed_matches() {
        assert_eq!(Match::from_bytes(&[0, 1, 0]), Err(OfpError::Truncated));
        assert_eq!(
            Match::from_bytes(&[0, 0, 0, 4, 0, 0, 0, 0]),
            Err(OfpError::BadMatchType(0))
        );
        assert_eq!(
            Match::from_bytes(&[0, 1, 0, 3, 0, 0, 0, 0]),
            Err(OfpError::BadMatchLength)
        );
        // Length beyond the buffer.
        assert_eq!(
            Match::from_bytes(&[0, 1, 0, 12, 0x80, 0, 0, 4, 0, 0, 0, 1]),
            Err(OfpError::BadMatchLength)
        );
        // Padding missing.
        assert_eq!(
            Match::from_bytes(&[0, 1, 0, 10, 0x80, 0, 0x0a, 2, 8, 0]),
            Err(OfpError::BadMatchLength)
        );
        // OXM running past the match length.
        assert_eq!(
            Match::from_bytes(&[0, 1, 0, 8, 0x80, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(OfpError::BadOxmLength)
        );
    }
}
