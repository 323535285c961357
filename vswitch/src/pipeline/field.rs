//! The OpenFlow 1.3 match fields this switch supports: where each lives in the [`Key`], its
//! size, whether it takes a mask, which bits are valid, its prerequisites (spec 7.2.3.6) and
//! whether set_field may write it. Compiles an OXM match into (value, mask) keys with the
//! errors the spec prescribes.

use super::key::{self, off, Key};
use crate::ofp::translate::OfpErr;
use cloudrack_wire::ofp::{self, Oxm};
use std::ops::Range;

/// What must hold in a match before a field may appear in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prereq {
    None,
    InPort,
    /// A VLAN tag is present (VLAN_VID matches OFPVID_PRESENT).
    Vlan,
    /// eth_type is IPv4 or IPv6.
    Ip,
    Ipv4,
    Ipv6,
    Arp,
    /// ip_proto is this (and eth_type is IP).
    Proto(u8),
    Icmpv4,
    Icmpv6,
    /// ICMPv6 type is a neighbour solicitation or advertisement.
    NdTarget,
    NdSll,
    NdTll,
}

#[derive(Debug)]
pub struct FieldDef {
    pub oxm: u8,
    pub name: &'static str,
    pub range: Range<usize>,
    pub maskable: bool,
    /// Bits a value may have set (None: all).
    pub valid: Option<u32>,
    pub prereq: Prereq,
    pub settable: bool,
}

macro_rules! field {
    ($oxm:ident, $name:literal, $range:expr, $maskable:expr, $valid:expr, $prereq:expr, $settable:expr) => {
        FieldDef {
            oxm: ofp::$oxm,
            name: $name,
            range: $range,
            maskable: $maskable,
            valid: $valid,
            prereq: $prereq,
            settable: $settable,
        }
    };
}

use Prereq as P;

/// Every supported field. Transport ports take masks although OpenFlow 1.3 does not require it
/// (Open vSwitch accepts them too, and ACLs need port ranges).
pub static FIELDS: &[FieldDef] = &[
    field!(OFPXMT_OFB_IN_PORT, "in_port", off::IN_PORT, false, None, P::None, false),
    field!(
        OFPXMT_OFB_IN_PHY_PORT,
        "in_phy_port",
        off::IN_PORT,
        false,
        None,
        P::InPort,
        false
    ),
    field!(
        OFPXMT_OFB_METADATA,
        "metadata",
        off::METADATA,
        true,
        None,
        P::None,
        true
    ),
    field!(OFPXMT_OFB_ETH_DST, "eth_dst", off::ETH_DST, true, None, P::None, true),
    field!(OFPXMT_OFB_ETH_SRC, "eth_src", off::ETH_SRC, true, None, P::None, true),
    field!(
        OFPXMT_OFB_ETH_TYPE,
        "eth_type",
        off::ETH_TYPE,
        false,
        None,
        P::None,
        false
    ),
    field!(
        OFPXMT_OFB_VLAN_VID,
        "vlan_vid",
        off::VLAN_VID,
        true,
        Some(0x1fff),
        P::None,
        true
    ),
    field!(
        OFPXMT_OFB_VLAN_PCP,
        "vlan_pcp",
        off::VLAN_PCP,
        false,
        Some(0x07),
        P::Vlan,
        true
    ),
    field!(
        OFPXMT_OFB_IP_DSCP,
        "ip_dscp",
        off::IP_DSCP,
        false,
        Some(0x3f),
        P::Ip,
        true
    ),
    field!(OFPXMT_OFB_IP_ECN, "ip_ecn", off::IP_ECN, false, Some(0x03), P::Ip, true),
    field!(
        OFPXMT_OFB_IP_PROTO,
        "ip_proto",
        off::IP_PROTO,
        false,
        None,
        P::Ip,
        false
    ),
    field!(OFPXMT_OFB_IPV4_SRC, "ipv4_src", off::NW_SRC, true, None, P::Ipv4, true),
    field!(OFPXMT_OFB_IPV4_DST, "ipv4_dst", off::NW_DST, true, None, P::Ipv4, true),
    field!(
        OFPXMT_OFB_TCP_SRC,
        "tcp_src",
        off::TP_SRC,
        true,
        None,
        P::Proto(key::PROTO_TCP),
        true
    ),
    field!(
        OFPXMT_OFB_TCP_DST,
        "tcp_dst",
        off::TP_DST,
        true,
        None,
        P::Proto(key::PROTO_TCP),
        true
    ),
    field!(
        OFPXMT_OFB_UDP_SRC,
        "udp_src",
        off::TP_SRC,
        true,
        None,
        P::Proto(key::PROTO_UDP),
        true
    ),
    field!(
        OFPXMT_OFB_UDP_DST,
        "udp_dst",
        off::TP_DST,
        true,
        None,
        P::Proto(key::PROTO_UDP),
        true
    ),
    field!(
        OFPXMT_OFB_SCTP_SRC,
        "sctp_src",
        off::TP_SRC,
        true,
        None,
        P::Proto(key::PROTO_SCTP),
        true
    ),
    field!(
        OFPXMT_OFB_SCTP_DST,
        "sctp_dst",
        off::TP_DST,
        true,
        None,
        P::Proto(key::PROTO_SCTP),
        true
    ),
    field!(
        OFPXMT_OFB_ICMPV4_TYPE,
        "icmpv4_type",
        off::ICMP_TYPE,
        false,
        None,
        P::Icmpv4,
        true
    ),
    field!(
        OFPXMT_OFB_ICMPV4_CODE,
        "icmpv4_code",
        off::ICMP_CODE,
        false,
        None,
        P::Icmpv4,
        true
    ),
    field!(OFPXMT_OFB_ARP_OP, "arp_op", off::ARP_OP, false, None, P::Arp, true),
    field!(OFPXMT_OFB_ARP_SPA, "arp_spa", off::NW_SRC, true, None, P::Arp, true),
    field!(OFPXMT_OFB_ARP_TPA, "arp_tpa", off::NW_DST, true, None, P::Arp, true),
    field!(OFPXMT_OFB_ARP_SHA, "arp_sha", off::SHA, true, None, P::Arp, true),
    field!(OFPXMT_OFB_ARP_THA, "arp_tha", off::THA, true, None, P::Arp, true),
    field!(
        OFPXMT_OFB_IPV6_SRC,
        "ipv6_src",
        off::IPV6_SRC,
        true,
        None,
        P::Ipv6,
        true
    ),
    field!(
        OFPXMT_OFB_IPV6_DST,
        "ipv6_dst",
        off::IPV6_DST,
        true,
        None,
        P::Ipv6,
        true
    ),
    field!(
        OFPXMT_OFB_IPV6_FLABEL,
        "ipv6_flabel",
        off::IPV6_FLABEL,
        true,
        Some(0x000f_ffff),
        P::Ipv6,
        true
    ),
    field!(
        OFPXMT_OFB_ICMPV6_TYPE,
        "icmpv6_type",
        off::ICMP_TYPE,
        false,
        None,
        P::Icmpv6,
        true
    ),
    field!(
        OFPXMT_OFB_ICMPV6_CODE,
        "icmpv6_code",
        off::ICMP_CODE,
        false,
        None,
        P::Icmpv6,
        true
    ),
    field!(
        OFPXMT_OFB_IPV6_ND_TARGET,
        "ipv6_nd_target",
        off::ND_TARGET,
        false,
        None,
        P::NdTarget,
        true
    ),
    field!(
        OFPXMT_OFB_IPV6_ND_SLL,
        "ipv6_nd_sll",
        off::SHA,
        false,
        None,
        P::NdSll,
        true
    ),
    field!(
        OFPXMT_OFB_IPV6_ND_TLL,
        "ipv6_nd_tll",
        off::THA,
        false,
        None,
        P::NdTll,
        true
    ),
    field!(
        OFPXMT_OFB_TUNNEL_ID,
        "tunnel_id",
        off::TUNNEL_ID,
        true,
        None,
        P::None,
        true
    ),
];

pub fn def(oxm_field: u8) -> Option<&'static FieldDef> {
    FIELDS.iter().find(|f| f.oxm == oxm_field)
}

const BAD_MATCH: u16 = ofp::OFPET_BAD_MATCH;

/// A compiled match: the bits a packet's key must have (`value`) under `mask`, and the
/// match as OXMs in field order (values already masked), to report back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlowMatch {
    pub value: Key,
    pub mask: Key,
    pub oxms: Vec<Oxm>,
}

impl Default for FlowMatch {
    /// The empty match: every packet.
    fn default() -> FlowMatch {
        FlowMatch {
            value: Key::default(),
            mask: Key::default(),
            oxms: Vec::new(),
        }
    }
}

impl FlowMatch {
    pub fn matches(&self, key: &Key) -> bool {
        key.and(&self.mask) == self.value
    }

    /// Whether every packet this match takes, `wider` takes too (a non-strict filter).
    pub fn is_within(&self, wider: &FlowMatch) -> bool {
        wider.mask.is_subset_of(&self.mask) && self.value.and(&wider.mask) == wider.value
    }

    /// Whether some packet could match both.
    pub fn overlaps(&self, other: &FlowMatch) -> bool {
        (0..key::KEY_LEN).all(|i| (self.value.0[i] ^ other.value.0[i]) & self.mask.0[i] & other.mask.0[i] == 0)
    }

    pub fn is_empty(&self) -> bool {
        self.mask.is_zero()
    }
}

fn valid_bits(def: &FieldDef, bytes: &[u8]) -> bool {
    let Some(valid) = def.valid else { return true };
    let v = bytes.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64);
    v & !(valid as u64) == 0
}

/// Compile an OXM list into a [`FlowMatch`], refusing what OpenFlow 1.3 says to refuse:
/// unknown or unsupported fields (BAD_FIELD), repeated fields (DUP_FIELD), wrong lengths
/// (BAD_LEN), masks on unmaskable fields (BAD_MASK), value bits outside the mask
/// (BAD_WILDCARDS), out-of-range values (BAD_VALUE) and missing prerequisites (BAD_PREREQ).
pub fn compile(oxms: &[Oxm]) -> Result<FlowMatch, OfpErr> {
    let mut m = FlowMatch::default();
    let mut seen: Vec<(u8, &'static FieldDef)> = Vec::new();
    for oxm in oxms {
        let Some((field, value, mask)) = oxm.basic_parts() else {
            return Err((BAD_MATCH, ofp::OFPBMC_BAD_FIELD));
        };
        let Some(def) = def(field) else {
            return Err((BAD_MATCH, ofp::OFPBMC_BAD_FIELD));
        };
        if seen.iter().any(|(f, _)| *f == field) {
            return Err((BAD_MATCH, ofp::OFPBMC_DUP_FIELD));
        }
        let len = def.range.len();
        if value.len() != len || mask.as_ref().is_some_and(|m| m.len() != len) {
            return Err((BAD_MATCH, ofp::OFPBMC_BAD_LEN));
        }
        if mask.is_some() && !def.maskable {
            return Err((BAD_MATCH, ofp::OFPBMC_BAD_MASK));
        }
        let full = vec![0xffu8; len];
        let mask = mask.unwrap_or(full);
        if value.iter().zip(&mask).any(|(v, m)| v & !m != 0) {
            return Err((BAD_MATCH, ofp::OFPBMC_BAD_WILDCARDS));
        }
        if !valid_bits(def, &value) {
            return Err((BAD_MATCH, ofp::OFPBMC_BAD_VALUE));
        }
        // An exact VLAN_VID is OFPVID_NONE or a present tag; a vid without the present bit
        // names no packet.
        if def.oxm == ofp::OFPXMT_OFB_VLAN_VID && mask == [0xff, 0xff] && value != [0, 0] && value[0] & 0x10 == 0 {
            return Err((BAD_MATCH, ofp::OFPBMC_BAD_VALUE));
        }
        // Only the valid bits of a mask count.
        let mask: Vec<u8> = match def.valid {
            Some(valid) => {
                let vb = &valid.to_be_bytes()[4 - len.min(4)..];
                mask.iter().zip(vb).map(|(m, v)| m & v).collect()
            }
            None => mask,
        };
        m.value.set(def.range.clone(), &value);
        m.mask.set(def.range.clone(), &mask);
        seen.push((field, def));
    }
    let has_in_port = seen.iter().any(|(f, _)| *f == ofp::OFPXMT_OFB_IN_PORT);
    for (_, def) in &seen {
        // in_phy_port shares in_port's bytes: its prerequisite is in_port itself.
        let ok = match def.prereq {
            Prereq::InPort => has_in_port,
            p => prereq_holds(p, &m),
        };
        if !ok {
            return Err((BAD_MATCH, ofp::OFPBMC_BAD_PREREQ));
        }
    }
    seen.sort_by_key(|(f, _)| *f);
    m.oxms = seen
        .iter()
        .map(|(f, def)| {
            let v = m.value.get(def.range.clone());
            let mk = m.mask.get(def.range.clone());
            let exact = mk.iter().all(|b| *b == 0xff)
                || def.valid.is_some_and(|valid| {
                    let vb = &valid.to_be_bytes()[4 - mk.len().min(4)..];
                    mk == vb
                });
            Oxm::basic(*f, v, (!exact).then_some(mk))
        })
        .collect();
    Ok(m)
}

/// The exact value of a field in a match, if the match pins it down completely.
fn exact(m: &FlowMatch, r: Range<usize>) -> Option<&[u8]> {
    m.mask.get(r.clone()).iter().all(|b| *b == 0xff).then(|| m.value.get(r))
}

fn eth_type_is(m: &FlowMatch, types: &[u16]) -> bool {
    exact(m, off::ETH_TYPE).is_some_and(|v| types.contains(&u16::from_be_bytes([v[0], v[1]])))
}

fn proto_is(m: &FlowMatch, p: u8) -> bool {
    exact(m, off::IP_PROTO) == Some(&[p][..])
}

fn icmpv6_type_in(m: &FlowMatch, types: &[u8]) -> bool {
    eth_type_is(m, &[key::ETH_TYPE_IPV6])
        && proto_is(m, key::PROTO_ICMPV6)
        && exact(m, off::ICMP_TYPE).is_some_and(|t| types.contains(&t[0]))
}

pub fn prereq_holds(p: Prereq, m: &FlowMatch) -> bool {
    use key::{ETH_TYPE_ARP, ETH_TYPE_IPV4, ETH_TYPE_IPV6};
    match p {
        Prereq::None => true,
        Prereq::InPort => exact(m, off::IN_PORT).is_some(),
        Prereq::Vlan => m.mask.0[off::VLAN_VID.start] & 0x10 != 0 && m.value.0[off::VLAN_VID.start] & 0x10 != 0,
        Prereq::Ip => eth_type_is(m, &[ETH_TYPE_IPV4, ETH_TYPE_IPV6]),
        Prereq::Ipv4 => eth_type_is(m, &[ETH_TYPE_IPV4]),
        Prereq::Ipv6 => eth_type_is(m, &[ETH_TYPE_IPV6]),
        Prereq::Arp => eth_type_is(m, &[ETH_TYPE_ARP]),
        Prereq::Proto(p) => eth_type_is(m, &[ETH_TYPE_IPV4, ETH_TYPE_IPV6]) && proto_is(m, p),
        Prereq::Icmpv4 => eth_type_is(m, &[ETH_TYPE_IPV4]) && proto_is(m, key::PROTO_ICMP),
        Prereq::Icmpv6 => eth_type_is(m, &[ETH_TYPE_IPV6]) && proto_is(m, key::PROTO_ICMPV6),
        Prereq::NdTarget => icmpv6_type_in(m, &[135, 136]),
        Prereq::NdSll => icmpv6_type_in(m, &[135]),
        Prereq::NdTll => icmpv6_type_in(m, &[136]),
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::net::Ipv4Addr;

    fn err(oxms: &[Oxm]) -> u16 {
        compile(oxms).unwrap_err().1
    }

    #[test]
    fn exact_and_masked_fields_compile_and_match() {
        let m = compile(&[
            Oxm::EthType(0x0800),
            Oxm::Ipv4Dst {
                addr: Ipv4Addr::new(10, 1, 0, 0),
                mask: Some(Ipv4Addr::new(255, 255, 0, 0)),
            },
            Oxm::IpProto(6),
            Oxm::basic(ofp::OFPXMT_OFB_TCP_DST, &[0x1f, 0x90], None),
        ])
        .unwrap();
        let mut k = Key::default();
        k.set_u16(off::ETH_TYPE, 0x0800);
        k.set(off::NW_DST, &[10, 1, 2, 3]);
        k.0[off::IP_PROTO.start] = 6;
        k.set_u16(off::TP_DST, 8080);
        assert!(m.matches(&k));
        k.set(off::NW_DST, &[10, 2, 2, 3]);
        assert!(!m.matches(&k));
        // Reported in field order, the mask kept.
        let fields: Vec<u8> = m.oxms.iter().map(|o| o.field()).collect();
        assert_eq!(fields, [5, 10, 12, 14]);
        assert!(m.oxms[2].has_mask());
    }

    #[test]
    fn the_errors_the_spec_prescribes() {
        // Unknown field, other class.
        assert_eq!(err(&[Oxm::basic(34, &[0, 0, 0, 1], None)]), ofp::OFPBMC_BAD_FIELD);
        let nxm = Oxm::Other {
            class: 1,
            field: 1,
            hasmask: false,
            value: vec![0; 4],
        };
        assert_eq!(err(&[nxm]), ofp::OFPBMC_BAD_FIELD);
        assert_eq!(err(&[Oxm::InPort(1), Oxm::InPort(2)]), ofp::OFPBMC_DUP_FIELD);
        assert_eq!(
            err(&[Oxm::basic(ofp::OFPXMT_OFB_IN_PORT, &[0, 1], None)]),
            ofp::OFPBMC_BAD_LEN
        );
        assert_eq!(
            err(&[Oxm::basic(ofp::OFPXMT_OFB_IN_PORT, &[0, 0, 0, 1], Some(&[0, 0, 0, 1]))]),
            ofp::OFPBMC_BAD_MASK
        );
        let wild = Oxm::EthDst {
            mac: [2, 0, 0, 0, 0, 1],
            mask: Some([0xff, 0xff, 0xff, 0xff, 0xff, 0]),
        };
        assert_eq!(err(&[wild]), ofp::OFPBMC_BAD_WILDCARDS);
        assert_eq!(
            err(&[Oxm::VlanVid {
                vid: 0x2000,
                mask: None
            }]),
            ofp::OFPBMC_BAD_VALUE
        );
        assert_eq!(err(&[Oxm::VlanVid { vid: 5, mask: None }]), ofp::OFPBMC_BAD_VALUE);
        // Prerequisites.
        assert_eq!(err(&[Oxm::IpProto(6)]), ofp::OFPBMC_BAD_PREREQ);
        assert_eq!(err(&[Oxm::EthType(0x0800), Oxm::TcpDst(80)]), ofp::OFPBMC_BAD_PREREQ);
        assert_eq!(
            err(&[Oxm::EthType(0x0806), Oxm::IpProto(6), Oxm::TcpDst(80)]),
            ofp::OFPBMC_BAD_PREREQ
        );
        assert_eq!(err(&[Oxm::VlanPcp(3)]), ofp::OFPBMC_BAD_PREREQ);
        assert_eq!(err(&[Oxm::InPhyPort(1)]), ofp::OFPBMC_BAD_PREREQ);
        assert!(compile(&[Oxm::InPort(1), Oxm::InPhyPort(1)]).is_ok());
        assert!(compile(&[
            Oxm::VlanVid {
                vid: 0x1000,
                mask: Some(0x1000)
            },
            Oxm::VlanPcp(3)
        ])
        .is_ok());
        let nd = [
            Oxm::EthType(0x86dd),
            Oxm::IpProto(58),
            Oxm::basic(ofp::OFPXMT_OFB_ICMPV6_TYPE, &[136], None),
            Oxm::basic(ofp::OFPXMT_OFB_IPV6_ND_SLL, &[2, 0, 0, 0, 0, 1], None),
        ];
        assert_eq!(err(&nd), ofp::OFPBMC_BAD_PREREQ);
    }

    #[test]
    fn within_and_overlap() {
        let wide = compile(&[Oxm::EthType(0x0800)]).unwrap();
        let narrow = compile(&[Oxm::EthType(0x0800), Oxm::IpProto(17)]).unwrap();
        let arp = compile(&[Oxm::EthType(0x0806)]).unwrap();
        assert!(narrow.is_within(&wide));
        assert!(!wide.is_within(&narrow));
        assert!(narrow.is_within(&FlowMatch::default()));
        assert!(wide.overlaps(&narrow));
        assert!(!arp.overlaps(&narrow));
    }
}
