//! OXM TLVs (OpenFlow Extensible Match, spec 7.2.3): the fields of a match and the payload of a
//! set-field action.
//!
//! Header: `class:16 | field:7 | hasmask:1 | length:8`, where length counts the payload (value,
//! then mask when hasmask is set). Basic-class fields we use get typed variants; every other TLV
//! (other classes, experimenter fields, unusual lengths or masks) is kept verbatim in
//! [`Oxm::Other`], so decoding an OXM never loses bytes.

use std::net::Ipv4Addr;

use super::error::OfpError;
use super::reader::Reader;
use super::writer::{to_vec, Writer};

pub const OFPXMC_NXM_0: u16 = 0x0000;
pub const OFPXMC_NXM_1: u16 = 0x0001;
pub const OFPXMC_OPENFLOW_BASIC: u16 = 0x8000;
pub const OFPXMC_EXPERIMENTER: u16 = 0xffff;

// Fields of the OpenFlow basic class (oxm_ofb_match_fields).
pub const OFPXMT_OFB_IN_PORT: u8 = 0;
pub const OFPXMT_OFB_IN_PHY_PORT: u8 = 1;
pub const OFPXMT_OFB_METADATA: u8 = 2;
pub const OFPXMT_OFB_ETH_DST: u8 = 3;
pub const OFPXMT_OFB_ETH_SRC: u8 = 4;
pub const OFPXMT_OFB_ETH_TYPE: u8 = 5;
pub const OFPXMT_OFB_VLAN_VID: u8 = 6;
pub const OFPXMT_OFB_VLAN_PCP: u8 = 7;
pub const OFPXMT_OFB_IP_DSCP: u8 = 8;
pub const OFPXMT_OFB_IP_ECN: u8 = 9;
pub const OFPXMT_OFB_IP_PROTO: u8 = 10;
pub const OFPXMT_OFB_IPV4_SRC: u8 = 11;
pub const OFPXMT_OFB_IPV4_DST: u8 = 12;
pub const OFPXMT_OFB_TCP_SRC: u8 = 13;
pub const OFPXMT_OFB_TCP_DST: u8 = 14;
pub const OFPXMT_OFB_UDP_SRC: u8 = 15;
pub const OFPXMT_OFB_UDP_DST: u8 = 16;
pub const OFPXMT_OFB_SCTP_SRC: u8 = 17;
pub const OFPXMT_OFB_SCTP_DST: u8 = 18;
pub const OFPXMT_OFB_ICMPV4_TYPE: u8 = 19;
pub const OFPXMT_OFB_ICMPV4_CODE: u8 = 20;
pub const OFPXMT_OFB_ARP_OP: u8 = 21;
pub const OFPXMT_OFB_ARP_SPA: u8 = 22;
pub const OFPXMT_OFB_ARP_TPA: u8 = 23;
pub const OFPXMT_OFB_ARP_SHA: u8 = 24;
pub const OFPXMT_OFB_ARP_THA: u8 = 25;
pub const OFPXMT_OFB_IPV6_SRC: u8 = 26;
pub const OFPXMT_OFB_IPV6_DST: u8 = 27;
pub const OFPXMT_OFB_IPV6_FLABEL: u8 = 28;
pub const OFPXMT_OFB_ICMPV6_TYPE: u8 = 29;
pub const OFPXMT_OFB_ICMPV6_CODE: u8 = 30;
pub const OFPXMT_OFB_IPV6_ND_TARGET: u8 = 31;
pub const OFPXMT_OFB_IPV6_ND_SLL: u8 = 32;
pub const OFPXMT_OFB_IPV6_ND_TLL: u8 = 33;
pub const OFPXMT_OFB_MPLS_LABEL: u8 = 34;
pub const OFPXMT_OFB_MPLS_TC: u8 = 35;
pub const OFPXMT_OFB_MPLS_BOS: u8 = 36;
pub const OFPXMT_OFB_PBB_ISID: u8 = 37;
pub const OFPXMT_OFB_TUNNEL_ID: u8 = 38;
pub const OFPXMT_OFB_IPV6_EXTHDR: u8 = 39;

/// VLAN_VID bit saying a tag is present.
pub const OFPVID_PRESENT: u16 = 0x1000;
/// VLAN_VID value for "no tag".
pub const OFPVID_NONE: u16 = 0x0000;

/// One OXM TLV. `mask: None` is an exact match; `Some(mask)` sets the hasmask bit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Oxm {
    InPort(u32),
    InPhyPort(u32),
    Metadata {
        value: u64,
        mask: Option<u64>,
    },
    EthDst {
        mac: [u8; 6],
        mask: Option<[u8; 6]>,
    },
    EthSrc {
        mac: [u8; 6],
        mask: Option<[u8; 6]>,
    },
    EthType(u16),
    /// Includes the OFPVID_PRESENT bit as on the wire.
    VlanVid {
        vid: u16,
        mask: Option<u16>,
    },
    VlanPcp(u8),
    IpProto(u8),
    Ipv4Src {
        addr: Ipv4Addr,
        mask: Option<Ipv4Addr>,
    },
    Ipv4Dst {
        addr: Ipv4Addr,
        mask: Option<Ipv4Addr>,
    },
    TcpSrc(u16),
    TcpDst(u16),
    UdpSrc(u16),
    UdpDst(u16),
    ArpOp(u16),
    ArpSpa {
        addr: Ipv4Addr,
        mask: Option<Ipv4Addr>,
    },
    ArpTpa {
        addr: Ipv4Addr,
        mask: Option<Ipv4Addr>,
    },
    /// Logical-port metadata; Cloud Rack carries the GRE key here.
    TunnelId {
        id: u64,
        mask: Option<u64>,
    },
    /// Any other TLV, verbatim: `value` is the whole payload (value and mask, and for the
    /// experimenter class the 4-byte experimenter id first). Only the low 7 bits of `field` go
    /// on the wire.
    Other {
        class: u16,
        field: u8,
        hasmask: bool,
        value: Vec<u8>,
    },
}

impl Oxm {
    /// The OXM class.
    pub fn class(&self) -> u16 {
        match self {
            Oxm::Other { class, .. } => *class,
            _ => OFPXMC_OPENFLOW_BASIC,
        }
    }

    /// The field number within the class.
    pub fn field(&self) -> u8 {
        match self {
            Oxm::InPort(_) => OFPXMT_OFB_IN_PORT,
            Oxm::InPhyPort(_) => OFPXMT_OFB_IN_PHY_PORT,
            Oxm::Metadata { .. } => OFPXMT_OFB_METADATA,
            Oxm::EthDst { .. } => OFPXMT_OFB_ETH_DST,
            Oxm::EthSrc { .. } => OFPXMT_OFB_ETH_SRC,
            Oxm::EthType(_) => OFPXMT_OFB_ETH_TYPE,
            Oxm::VlanVid { .. } => OFPXMT_OFB_VLAN_VID,
            Oxm::VlanPcp(_) => OFPXMT_OFB_VLAN_PCP,
            Oxm::IpProto(_) => OFPXMT_OFB_IP_PROTO,
            Oxm::Ipv4Src { .. } => OFPXMT_OFB_IPV4_SRC,
            Oxm::Ipv4Dst { .. } => OFPXMT_OFB_IPV4_DST,
            Oxm::TcpSrc(_) => OFPXMT_OFB_TCP_SRC,
            Oxm::TcpDst(_) => OFPXMT_OFB_TCP_DST,
            Oxm::UdpSrc(_) => OFPXMT_OFB_UDP_SRC,
            Oxm::UdpDst(_) => OFPXMT_OFB_UDP_DST,
            Oxm::ArpOp(_) => OFPXMT_OFB_ARP_OP,
            Oxm::ArpSpa { .. } => OFPXMT_OFB_ARP_SPA,
            Oxm::ArpTpa { .. } => OFPXMT_OFB_ARP_TPA,
            Oxm::TunnelId { .. } => OFPXMT_OFB_TUNNEL_ID,
            Oxm::Other { field, .. } => *field & 0x7f,
        }
    }

    /// Whether the hasmask bit is set.
    pub fn has_mask(&self) -> bool {
        match self {
            Oxm::Metadata { mask, .. } | Oxm::TunnelId { mask, .. } => mask.is_some(),
            Oxm::EthDst { mask, .. } | Oxm::EthSrc { mask, .. } => mask.is_some(),
            Oxm::VlanVid { mask, .. } => mask.is_some(),
            Oxm::Ipv4Src { mask, .. }
            | Oxm::Ipv4Dst { mask, .. }
            | Oxm::ArpSpa { mask, .. }
            | Oxm::ArpTpa { mask, .. } => mask.is_some(),
            Oxm::Other { hasmask, .. } => *hasmask,
            _ => false,
        }
    }

    /// A basic-class TLV as (field, value, mask) bytes, whatever its typed form: the shape a
    /// classifier works on. `None` for other classes, and for a hasmask TLV whose payload
    /// cannot be split into value and mask of equal length.
    pub fn basic_parts(&self) -> Option<(u8, Vec<u8>, Option<Vec<u8>>)> {
        if self.class() != OFPXMC_OPENFLOW_BASIC {
            return None;
        }
        let bytes = self.to_bytes();
        let payload = bytes.get(4..)?;
        if self.has_mask() {
            if payload.len() % 2 != 0 {
                return None;
            }
            let (v, m) = payload.split_at(payload.len() / 2);
            Some((self.field(), v.to_vec(), Some(m.to_vec())))
        } else {
            Some((self.field(), payload.to_vec(), None))
        }
    }

    /// The basic-class TLV for `field` with `value` (and `mask`), typed where modelled.
    pub fn basic(field: u8, value: &[u8], mask: Option<&[u8]>) -> Oxm {
        let mut buf = Vec::with_capacity(4 + 2 * value.len());
        basic(&mut Writer::new(&mut buf), field, value, mask);
        Oxm::from_bytes(&buf).unwrap_or(Oxm::Other {
            class: OFPXMC_OPENFLOW_BASIC,
            field,
            hasmask: mask.is_some(),
            value: buf.get(4..).unwrap_or_default().to_vec(),
        })
    }

    /// Decodes exactly one TLV occupying all of `buf`.
    pub fn from_bytes(buf: &[u8]) -> Result<Oxm, OfpError> {
        let mut r = Reader::new(buf);
        let oxm = Oxm::decode(&mut r)?;
        if !r.is_empty() {
            return Err(OfpError::BadOxmLength);
        }
        Ok(oxm)
    }

    /// The TLV's wire form (header and payload, no padding).
    pub fn to_bytes(&self) -> Vec<u8> {
        to_vec(|w| self.encode(w))
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Oxm, OfpError> {
        let header = r.u32().map_err(|_| OfpError::BadOxmLength)?;
        // Header layout: class:16 field:7 hasmask:1 length:8.
        let class = (header >> 16) as u16;
        let field = ((header >> 9) & 0x7f) as u8;
        let hasmask = header & 0x100 != 0;
        let len = (header & 0xff) as usize;
        let payload = r.bytes(len).map_err(|_| OfpError::BadOxmLength)?;
        let typed = if class == OFPXMC_OPENFLOW_BASIC {
            decode_basic(field, hasmask, payload)
        } else {
            None
        };
        Ok(typed.unwrap_or_else(|| Oxm::Other {
            class,
            field,
            hasmask,
            value: payload.to_vec(),
        }))
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        let f = self.field();
        match self {
            Oxm::InPort(v) | Oxm::InPhyPort(v) => basic(w, f, &v.to_be_bytes(), None),
            Oxm::Metadata { value, mask } | Oxm::TunnelId { id: value, mask } => basic(
                w,
                f,
                &value.to_be_bytes(),
                mask.map(u64::to_be_bytes).as_ref().map(|m| &m[..]),
            ),
            Oxm::EthDst { mac, mask } | Oxm::EthSrc { mac, mask } => basic(w, f, mac, mask.as_ref().map(|m| &m[..])),
            Oxm::EthType(v) | Oxm::TcpSrc(v) | Oxm::TcpDst(v) | Oxm::UdpSrc(v) | Oxm::UdpDst(v) | Oxm::ArpOp(v) => {
                basic(w, f, &v.to_be_bytes(), None)
            }
            Oxm::VlanVid { vid, mask } => basic(
                w,
                f,
                &vid.to_be_bytes(),
                mask.map(u16::to_be_bytes).as_ref().map(|m| &m[..]),
            ),
            Oxm::VlanPcp(v) | Oxm::IpProto(v) => basic(w, f, &[*v], None),
            Oxm::Ipv4Src { addr, mask }
            | Oxm::Ipv4Dst { addr, mask }
            | Oxm::ArpSpa { addr, mask }
            | Oxm::ArpTpa { addr, mask } => {
                basic(w, f, &addr.octets(), mask.map(|m| m.octets()).as_ref().map(|m| &m[..]))
            }
            Oxm::Other {
                class,
                field,
                hasmask,
                value,
            } => header_and_payload(w, *class, *field, *hasmask, value, None),
        }
    }
}

fn basic(w: &mut Writer, field: u8, value: &[u8], mask: Option<&[u8]>) {
    header_and_payload(w, OFPXMC_OPENFLOW_BASIC, field, mask.is_some(), value, mask);
}

fn header_and_payload(w: &mut Writer, class: u16, field: u8, hasmask: bool, value: &[u8], mask: Option<&[u8]>) {
    let len = value.len() + mask.map_or(0, <[u8]>::len);
    let len = match u8::try_from(len) {
        Ok(len) => len,
        Err(_) => {
            w.mark_overflow();
            u8::MAX
        }
    };
    let header = (u32::from(class) << 16) | (u32::from(field & 0x7f) << 9) | (u32::from(hasmask) << 8) | u32::from(len);
    w.u32(header);
    w.bytes(value);
    if let Some(mask) = mask {
        w.bytes(mask);
    }
}

/// An unmaskable field: exactly N bytes and no hasmask bit.
fn plain<const N: usize>(payload: &[u8], hasmask: bool) -> Option<[u8; N]> {
    if hasmask {
        return None;
    }
    payload.try_into().ok()
}

/// A maskable field: N bytes, or 2N (value then mask) with the hasmask bit.
fn maskable<const N: usize>(payload: &[u8], hasmask: bool) -> Option<([u8; N], Option<[u8; N]>)> {
    if !hasmask {
        return plain::<N>(payload, false).map(|v| (v, None));
    }
    if payload.len() != 2 * N {
        return None;
    }
    let (value, mask) = payload.split_at(N);
    Some((value.try_into().ok()?, Some(mask.try_into().ok()?)))
}

/// Typed form of a basic-class TLV, or None when the field is not modelled or its length does
/// not match the spec (such TLVs stay in `Oxm::Other`).
fn decode_basic(field: u8, hasmask: bool, p: &[u8]) -> Option<Oxm> {
    let ipv4 = |(a, m): ([u8; 4], Option<[u8; 4]>)| (Ipv4Addr::from(a), m.map(Ipv4Addr::from));
    match field {
        OFPXMT_OFB_IN_PORT => plain(p, hasmask).map(|v| Oxm::InPort(u32::from_be_bytes(v))),
        OFPXMT_OFB_IN_PHY_PORT => plain(p, hasmask).map(|v| Oxm::InPhyPort(u32::from_be_bytes(v))),
        OFPXMT_OFB_METADATA => maskable(p, hasmask).map(|(v, m)| Oxm::Metadata {
            value: u64::from_be_bytes(v),
            mask: m.map(u64::from_be_bytes),
        }),
        OFPXMT_OFB_ETH_DST => maskable(p, hasmask).map(|(mac, mask)| Oxm::EthDst { mac, mask }),
        OFPXMT_OFB_ETH_SRC => maskable(p, hasmask).map(|(mac, mask)| Oxm::EthSrc { mac, mask }),
        OFPXMT_OFB_ETH_TYPE => plain(p, hasmask).map(|v| Oxm::EthType(u16::from_be_bytes(v))),
        OFPXMT_OFB_VLAN_VID => maskable(p, hasmask).map(|(v, m)| Oxm::VlanVid {
            vid: u16::from_be_bytes(v),
            mask: m.map(u16::from_be_bytes),
        }),
        OFPXMT_OFB_VLAN_PCP => plain(p, hasmask).map(|[v]| Oxm::VlanPcp(v)),
        OFPXMT_OFB_IP_PROTO => plain(p, hasmask).map(|[v]| Oxm::IpProto(v)),
        OFPXMT_OFB_IPV4_SRC => maskable(p, hasmask)
            .map(ipv4)
            .map(|(addr, mask)| Oxm::Ipv4Src { addr, mask }),
        OFPXMT_OFB_IPV4_DST => maskable(p, hasmask)
            .map(ipv4)
            .map(|(addr, mask)| Oxm::Ipv4Dst { addr, mask }),
        OFPXMT_OFB_TCP_SRC => plain(p, hasmask).map(|v| Oxm::TcpSrc(u16::from_be_bytes(v))),
        OFPXMT_OFB_TCP_DST => plain(p, hasmask).map(|v| Oxm::TcpDst(u16::from_be_bytes(v))),
        OFPXMT_OFB_UDP_SRC => plain(p, hasmask).map(|v| Oxm::UdpSrc(u16::from_be_bytes(v))),
        OFPXMT_OFB_UDP_DST => plain(p, hasmask).map(|v| Oxm::UdpDst(u16::from_be_bytes(v))),
        OFPXMT_OFB_ARP_OP => plain(p, hasmask).map(|v| Oxm::ArpOp(u16::from_be_bytes(v))),
        OFPXMT_OFB_ARP_SPA => maskable(p, hasmask)
            .map(ipv4)
            .map(|(addr, mask)| Oxm::ArpSpa { addr, mask }),
        OFPXMT_OFB_ARP_TPA => maskable(p, hasmask)
            .map(ipv4)
            .map(|(addr, mask)| Oxm::ArpTpa { addr, mask }),
        OFPXMT_OFB_TUNNEL_ID => maskable(p, hasmask).map(|(v, m)| Oxm::TunnelId {
            id: u64::from_be_bytes(v),
            mask: m.map(u64::from_be_bytes),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(bytes: &[u8], expected: Oxm) {
        assert_eq!(Oxm::from_bytes(bytes), Ok(expected.clone()));
        assert_eq!(expected.to_bytes(), bytes);
    }

    #[test]
    fn typed_fields() {
        // OXM_OF_IN_PORT = 2, exactly as in the captured PACKET_INs.
        round_trip(&[0x80, 0x00, 0x00, 0x04, 0, 0, 0, 2], Oxm::InPort(2));
        // OXM_OF_ETH_DST 02:00:00:00:00:01 (class 0x8000, field 3 -> 0x06, length 6).
        round_trip(
            &[0x80, 0x00, 0x06, 0x06, 2, 0, 0, 0, 0, 1],
            Oxm::EthDst {
                mac: [2, 0, 0, 0, 0, 1],
                mask: None,
            },
        );
        // Masked ETH_DST: field 3 with hasmask -> 0x07, length 12.
        round_trip(
            &[0x80, 0x00, 0x07, 0x0c, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0],
            Oxm::EthDst {
                mac: [1, 0, 0, 0, 0, 0],
                mask: Some([1, 0, 0, 0, 0, 0]),
            },
        );
        round_trip(&[0x80, 0x00, 0x0a, 0x02, 0x08, 0x06], Oxm::EthType(0x0806));
        // TUNNEL_ID: field 38 -> 0x4c, length 8.
        round_trip(
            &[0x80, 0x00, 0x4c, 0x08, 0, 0, 0, 0, 0, 0, 0x12, 0x34],
            Oxm::TunnelId { id: 0x1234, mask: None },
        );
        round_trip(
            &[
                0x80, 0x00, 0x05, 0x10, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xff,
            ],
            Oxm::Metadata {
                value: 1,
                mask: Some(0xff),
            },
        );
        round_trip(
            &[0x80, 0x00, 0x19, 0x08, 10, 0, 0, 0, 255, 0, 0, 0],
            Oxm::Ipv4Dst {
                addr: Ipv4Addr::new(10, 0, 0, 0),
                mask: Some(Ipv4Addr::new(255, 0, 0, 0)),
            },
        );
        round_trip(
            &[0x80, 0x00, 0x0d, 0x04, 0x10, 0x05, 0x1f, 0xff],
            Oxm::VlanVid {
                vid: 0x1005,
                mask: Some(0x1fff),
            },
        );
    }

    #[test]
    fn unusual_tlvs_are_kept_verbatim() {
        // IN_PORT with the hasmask bit is invalid per spec but must survive a relay.
        round_trip(
            &[0x80, 0x00, 0x01, 0x08, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff],
            Oxm::Other {
                class: 0x8000,
                field: 0,
                hasmask: true,
                value: vec![0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff],
            },
        );
        // ETH_TYPE with a 3-byte payload.
        round_trip(
            &[0x80, 0x00, 0x0a, 0x03, 1, 2, 3],
            Oxm::Other {
                class: 0x8000,
                field: OFPXMT_OFB_ETH_TYPE,
                hasmask: false,
                value: vec![1, 2, 3],
            },
        );
        // An NXM register and an experimenter-class field.
        round_trip(
            &[0x00, 0x01, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef],
            Oxm::Other {
                class: 1,
                field: 0,
                hasmask: false,
                value: vec![0xde, 0xad, 0xbe, 0xef],
            },
        );
        round_trip(
            &[0xff, 0xff, 0x02, 0x00],
            Oxm::Other {
                class: OFPXMC_EXPERIMENTER,
                field: 1,
                hasmask: false,
                value: vec![],
            },
        );
        // An IPV6_SRC, which has no typed variant.
        let mut v6 = vec![0x80, 0x00, 0x34, 0x10];
        v6.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let oxm = Oxm::from_bytes(&v6).unwrap();
        assert_eq!((oxm.class(), oxm.field(), oxm.has_mask()), (0x8000, 26, false));
        assert_eq!(oxm.to_bytes(), v6);
    }

    #[test]
    fn bad_lengths() {
        assert_eq!(Oxm::from_bytes(&[0x80, 0x00]), Err(OfpError::BadOxmLength));
        // Declares 4 payload bytes, has 3.
        assert_eq!(Oxm::from_bytes(&[0x80, 0, 0, 4, 0, 0, 1]), Err(OfpError::BadOxmLength));
        // Trailing bytes after the TLV.
        assert_eq!(Oxm::from_bytes(&[0x80, 0, 0x0a, 0, 9]), Err(OfpError::BadOxmLength));
        // A zero-length payload is legal and consumes exactly the header.
        assert!(Oxm::from_bytes(&[0x80, 0, 0x0a, 0]).is_ok());
    }

    #[test]
    fn oversized_other_is_flagged_on_encode() {
        let big = Oxm::Other {
            class: 1,
            field: 1,
            hasmask: false,
            value: vec![0; 256],
        };
        assert!(!crate::ofp::writer::reencodes_to(&big.to_bytes(), |w| big.encode(w)));
    }
}

#[cfg(test)]
mod basic_parts_test {
    use super::*;

    #[test]
    fn typed_and_raw_fields_split_alike() {
        let typed = Oxm::Ipv4Src {
            addr: Ipv4Addr::new(10, 0, 0, 0),
            mask: Some(Ipv4Addr::new(255, 0, 0, 0)),
        };
        assert_eq!(
            typed.basic_parts(),
            Some((OFPXMT_OFB_IPV4_SRC, vec![10, 0, 0, 0], Some(vec![255, 0, 0, 0])))
        );
        // A masked TCP port is not a typed variant: it stays Other, and splits the same way.
        let raw = Oxm::basic(OFPXMT_OFB_TCP_DST, &[0x10, 0], Some(&[0xf0, 0]));
        assert!(matches!(raw, Oxm::Other { hasmask: true, .. }));
        assert_eq!(
            raw.basic_parts(),
            Some((OFPXMT_OFB_TCP_DST, vec![0x10, 0], Some(vec![0xf0, 0])))
        );
        assert_eq!(Oxm::basic(OFPXMT_OFB_IN_PORT, &[0, 0, 0, 7], None), Oxm::InPort(7));
        let exp = Oxm::Other {
            class: OFPXMC_EXPERIMENTER,
            field: 1,
            hasmask: false,
            value: vec![0; 8],
        };
        assert_eq!(exp.basic_parts(), None);
    }
}
