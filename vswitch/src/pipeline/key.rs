//! The flow key: every header field OpenFlow 1.3 can match, plus the pipeline metadata, laid
//! out in one fixed 128-byte array. Matching is `key & mask == value` over those bytes, so the
//! classifier, the caches and the megaflow masks all work on the same plain bytes (Open
//! vSwitch's `struct flow` and its `miniflow`, without the compression).
//!
//! A field absent from a packet is zero (a TCP port of a UDP packet, the VLAN of an untagged
//! frame). OpenFlow's prerequisites (a TCP port match needs ip_proto=6, which needs an IP
//! eth_type) keep that unambiguous: a match can only look at a field its prerequisites make
//! present. Fields that never appear together share bytes, as in Open vSwitch: ARP's addresses
//! sit in the IPv4 addresses, ARP's hardware addresses in the neighbour-discovery link-layer
//! addresses, every transport protocol's ports in one pair.

use std::net::Ipv4Addr;

pub const KEY_LEN: usize = 128;

/// Byte ranges of the fields (see the module docs for the sharing).
pub mod off {
    use std::ops::Range;
    pub const METADATA: Range<usize> = 0..8;
    pub const TUNNEL_ID: Range<usize> = 8..16;
    pub const IN_PORT: Range<usize> = 16..20;
    pub const ETH_DST: Range<usize> = 20..26;
    pub const ETH_SRC: Range<usize> = 26..32;
    pub const ETH_TYPE: Range<usize> = 32..34;
    /// OFPVID_PRESENT | vid, or 0 (OFPVID_NONE) when untagged.
    pub const VLAN_VID: Range<usize> = 34..36;
    pub const VLAN_PCP: Range<usize> = 36..37;
    pub const IP_DSCP: Range<usize> = 37..38;
    pub const IP_ECN: Range<usize> = 38..39;
    pub const IP_PROTO: Range<usize> = 39..40;
    /// IPv4 source, or ARP's sender protocol address.
    pub const NW_SRC: Range<usize> = 40..44;
    /// IPv4 destination, or ARP's target protocol address.
    pub const NW_DST: Range<usize> = 44..48;
    pub const ARP_OP: Range<usize> = 48..50;
    /// TCP, UDP or SCTP source port.
    pub const TP_SRC: Range<usize> = 50..52;
    pub const TP_DST: Range<usize> = 52..54;
    /// ICMPv4 or ICMPv6 type and code.
    pub const ICMP_TYPE: Range<usize> = 54..55;
    pub const ICMP_CODE: Range<usize> = 55..56;
    pub const IPV6_SRC: Range<usize> = 56..72;
    pub const IPV6_DST: Range<usize> = 72..88;
    pub const IPV6_FLABEL: Range<usize> = 88..92;
    /// ARP sender hardware address, or the ND source link-layer address.
    pub const SHA: Range<usize> = 92..98;
    /// ARP target hardware address, or the ND target link-layer address.
    pub const THA: Range<usize> = 98..104;
    pub const ND_TARGET: Range<usize> = 104..120;
    /// The IPv4 TTL or IPv6 hop limit: not matchable in OpenFlow 1.3, but in the key so that
    /// dec_nw_ttl's outcome is decided at translation, under the megaflow mask (as in Open
    /// vSwitch).
    pub const NW_TTL: Range<usize> = 120..121;
}

pub const ETH_TYPE_IPV4: u16 = 0x0800;
pub const ETH_TYPE_ARP: u16 = 0x0806;
pub const ETH_TYPE_IPV6: u16 = 0x86dd;
pub const ETH_TYPE_VLAN: u16 = 0x8100;
pub const ETH_TYPE_QINQ: u16 = 0x88a8;
/// What Open vSwitch calls the eth_type of an 802.3 frame (a length, not a type).
pub const ETH_TYPE_NONE: u16 = 0x05ff;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
pub const PROTO_SCTP: u8 = 132;

/// A flow key, a mask, or a masked value: 128 bytes, 8-byte aligned so the word loops vectorize.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C, align(8))]
pub struct Key(pub [u8; KEY_LEN]);

impl Default for Key {
    fn default() -> Key {
        Key([0; KEY_LEN])
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nonzero: Vec<String> = self
            .0
            .chunks(8)
            .enumerate()
            .filter(|(_, c)| c.iter().any(|b| *b != 0))
            .map(|(i, c)| format!("{}:{}", i * 8, c.iter().map(|b| format!("{b:02x}")).collect::<String>()))
            .collect();
        write!(f, "Key[{}]", nonzero.join(" "))
    }
}

impl Key {
    /// A mask with every bit set.
    pub const FULL: Key = Key([0xff; KEY_LEN]);

    pub fn get(&self, r: std::ops::Range<usize>) -> &[u8] {
        &self.0[r]
    }

    pub fn set(&mut self, r: std::ops::Range<usize>, v: &[u8]) {
        self.0[r].copy_from_slice(v);
    }

    pub fn u16(&self, r: std::ops::Range<usize>) -> u16 {
        u16::from_be_bytes([self.0[r.start], self.0[r.start + 1]])
    }

    pub fn set_u16(&mut self, r: std::ops::Range<usize>, v: u16) {
        self.set(r, &v.to_be_bytes());
    }

    pub fn u32(&self, r: std::ops::Range<usize>) -> u32 {
        u32::from_be_bytes(self.0[r].try_into().unwrap_or([0; 4]))
    }

    pub fn u64(&self, r: std::ops::Range<usize>) -> u64 {
        u64::from_be_bytes(self.0[r].try_into().unwrap_or([0; 8]))
    }

    pub fn u8(&self, r: std::ops::Range<usize>) -> u8 {
        self.0[r.start]
    }

    pub fn in_port(&self) -> u32 {
        self.u32(off::IN_PORT)
    }

    pub fn tunnel_id(&self) -> u64 {
        self.u64(off::TUNNEL_ID)
    }

    pub fn metadata(&self) -> u64 {
        self.u64(off::METADATA)
    }

    pub fn eth_type(&self) -> u16 {
        self.u16(off::ETH_TYPE)
    }

    pub fn ip_proto(&self) -> u8 {
        self.u8(off::IP_PROTO)
    }

    pub fn eth_dst(&self) -> [u8; 6] {
        self.0[off::ETH_DST].try_into().unwrap_or([0; 6])
    }

    pub fn eth_src(&self) -> [u8; 6] {
        self.0[off::ETH_SRC].try_into().unwrap_or([0; 6])
    }

    /// `self & mask`, byte for byte.
    #[inline]
    pub fn and(&self, mask: &Key) -> Key {
        let mut out = Key::default();
        for i in 0..KEY_LEN {
            out.0[i] = self.0[i] & mask.0[i];
        }
        out
    }

    /// `self | other` (the union of two masks).
    pub fn or(&self, other: &Key) -> Key {
        let mut out = Key::default();
        for i in 0..KEY_LEN {
            out.0[i] = self.0[i] | other.0[i];
        }
        out
    }

    /// Whether every bit set in `self` is also set in `other` (a mask no wider than `other`).
    pub fn is_subset_of(&self, other: &Key) -> bool {
        self.0.iter().zip(&other.0).all(|(a, b)| a & !b == 0)
    }

    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|b| *b == 0)
    }
}

/// Where the headers of a parsed frame are, for the actions that edit them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the (outermost) VLAN tag, if any.
    pub vlan: Option<usize>,
    /// Offset of the L3 header (after every VLAN tag).
    pub l3: usize,
    /// Offset of the L4 header, if the L3 header was parsed and the packet is not a later
    /// fragment.
    pub l4: Option<usize>,
}

fn be16(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

/// Parse `frame` into a key, with the pipeline metadata `in_port` and `tunnel_id` (the
/// virtual network). Never fails: what cannot be parsed stays zero, as in Open vSwitch.
pub fn extract(frame: &[u8], in_port: u32, tunnel_id: u64) -> (Key, Layout) {
    let mut k = Key::default();
    k.set(off::IN_PORT, &in_port.to_be_bytes());
    k.set(off::TUNNEL_ID, &tunnel_id.to_be_bytes());
    let mut lay = Layout::default();
    if frame.len() < 14 {
        // A runt: only what is there. (The datapath drops runts before this.)
        let n = frame.len().min(12);
        k.0[off::ETH_DST.start..off::ETH_DST.start + n].copy_from_slice(&frame[..n]);
        return (k, lay);
    }
    k.set(off::ETH_DST, &frame[0..6]);
    k.set(off::ETH_SRC, &frame[6..12]);
    let mut pos = 12;
    let mut ethertype = be16(frame, pos).unwrap_or(0);
    if (ethertype == ETH_TYPE_VLAN || ethertype == ETH_TYPE_QINQ) && frame.len() >= pos + 6 {
        let tci = be16(frame, pos + 2).unwrap_or(0);
        k.set_u16(off::VLAN_VID, 0x1000 | (tci & 0x0fff));
        k.0[off::VLAN_PCP.start] = (tci >> 13) as u8;
        lay.vlan = Some(pos);
        pos += 4;
        ethertype = be16(frame, pos).unwrap_or(0);
        // Inner tags are not matchable in OpenFlow 1.3: skip them.
        while (ethertype == ETH_TYPE_VLAN || ethertype == ETH_TYPE_QINQ) && frame.len() >= pos + 6 {
            pos += 4;
            ethertype = be16(frame, pos).unwrap_or(0);
        }
    }
    if ethertype < 0x0600 {
        ethertype = ETH_TYPE_NONE;
    }
    k.set_u16(off::ETH_TYPE, ethertype);
    pos += 2;
    lay.l3 = pos;
    let l3 = &frame[pos.min(frame.len())..];
    match ethertype {
        ETH_TYPE_IPV4 => lay.l4 = ipv4(&mut k, l3).map(|h| pos + h),
        ETH_TYPE_IPV6 => lay.l4 = ipv6(&mut k, l3).map(|h| pos + h),
        ETH_TYPE_ARP => arp(&mut k, l3),
        _ => {}
    }
    if let Some(l4) = lay.l4 {
        transport(&mut k, &frame[l4.min(frame.len())..]);
    }
    (k, lay)
}

/// IPv4 fields; the L4 offset within `ip` unless the header is short or a later fragment.
fn ipv4(k: &mut Key, ip: &[u8]) -> Option<usize> {
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return None;
    }
    let ihl = (ip[0] & 0x0f) as usize * 4;
    if ihl < 20 || ip.len() < ihl {
        return None;
    }
    k.0[off::IP_DSCP.start] = ip[1] >> 2;
    k.0[off::IP_ECN.start] = ip[1] & 3;
    k.0[off::IP_PROTO.start] = ip[9];
    k.0[off::NW_TTL.start] = ip[8];
    k.set(off::NW_SRC, &ip[12..16]);
    k.set(off::NW_DST, &ip[16..20]);
    let frag_offset = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
    (frag_offset == 0).then_some(ihl)
}

/// IPv6 fields, walking the common extension headers to the transport protocol.
fn ipv6(k: &mut Key, ip: &[u8]) -> Option<usize> {
    if ip.len() < 40 || ip[0] >> 4 != 6 {
        return None;
    }
    let tc = (ip[0] << 4) | (ip[1] >> 4);
    k.0[off::IP_DSCP.start] = tc >> 2;
    k.0[off::IP_ECN.start] = tc & 3;
    let flabel = u32::from_be_bytes([0, ip[1] & 0x0f, ip[2], ip[3]]);
    k.set(off::IPV6_FLABEL, &flabel.to_be_bytes());
    k.0[off::NW_TTL.start] = ip[7];
    k.set(off::IPV6_SRC, &ip[8..24]);
    k.set(off::IPV6_DST, &ip[24..40]);
    let mut next = ip[6];
    let mut pos = 40;
    // Hop-by-hop, routing, destination options, fragment.
    for _ in 0..8 {
        match next {
            0 | 43 | 60 => {
                let len = (*ip.get(pos + 1)? as usize + 1) * 8;
                next = *ip.get(pos)?;
                pos += len;
            }
            44 => {
                let frag = be16(ip, pos + 2)?;
                next = *ip.get(pos)?;
                pos += 8;
                if frag & 0xfff8 != 0 {
                    // A later fragment: no transport header here.
                    k.0[off::IP_PROTO.start] = next;
                    return None;
                }
            }
            _ => break,
        }
    }
    k.0[off::IP_PROTO.start] = next;
    (pos <= ip.len()).then_some(pos)
}

fn arp(k: &mut Key, a: &[u8]) {
    // Ethernet/IPv4 ARP only, as Open vSwitch.
    if a.len() < 28 || be16(a, 0) != Some(1) || be16(a, 2) != Some(ETH_TYPE_IPV4) || a[4] != 6 || a[5] != 4 {
        return;
    }
    k.set(off::ARP_OP, &a[6..8]);
    k.set(off::SHA, &a[8..14]);
    k.set(off::NW_SRC, &a[14..18]);
    k.set(off::THA, &a[18..24]);
    k.set(off::NW_DST, &a[24..28]);
}

fn transport(k: &mut Key, l4: &[u8]) {
    match k.ip_proto() {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP => {
            let min = if k.ip_proto() == PROTO_TCP { 20 } else { 8 };
            if l4.len() >= min {
                k.set(off::TP_SRC, &l4[0..2]);
                k.set(off::TP_DST, &l4[2..4]);
            }
        }
        PROTO_ICMP if k.eth_type() == ETH_TYPE_IPV4 && l4.len() >= 4 => {
            k.0[off::ICMP_TYPE.start] = l4[0];
            k.0[off::ICMP_CODE.start] = l4[1];
        }
        PROTO_ICMPV6 if k.eth_type() == ETH_TYPE_IPV6 => {
            if l4.len() < 4 {
                return;
            }
            k.0[off::ICMP_TYPE.start] = l4[0];
            k.0[off::ICMP_CODE.start] = l4[1];
            if (l4[0] == 135 || l4[0] == 136) && l4[1] == 0 && l4.len() >= 24 {
                k.set(off::ND_TARGET, &l4[8..24]);
                // Options: type, length in 8-byte units, data.
                let mut pos = 24;
                while pos + 8 <= l4.len() {
                    let (typ, len) = (l4[pos], l4[pos + 1] as usize * 8);
                    if len == 0 || pos + len > l4.len() {
                        break;
                    }
                    if len == 8 && typ == 1 && l4[0] == 135 {
                        k.set(off::SHA, &l4[pos + 2..pos + 8]);
                    } else if len == 8 && typ == 2 && l4[0] == 136 {
                        k.set(off::THA, &l4[pos + 2..pos + 8]);
                    }
                    pos += len;
                }
            }
        }
        _ => {}
    }
}

/// The IPv4 source of a key, for logs and tests.
pub fn nw_src(k: &Key) -> Ipv4Addr {
    Ipv4Addr::from(k.u32(off::NW_SRC))
}

#[cfg(test)]
mod test {
    use super::*;

    pub(crate) fn udp4(vlan: Option<u16>) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        if let Some(tci) = vlan {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[
            0x45, 0xb8, 0, 28, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, // IPv4
            0x04, 0xd2, 0x00, 0x35, 0, 8, 0, 0, // UDP 1234 -> 53
        ]);
        f
    }

    #[test]
    fn ipv4_udp_with_and_without_vlan() {
        let (k, lay) = extract(&udp4(None), 3, 7);
        assert_eq!(k.in_port(), 3);
        assert_eq!(k.tunnel_id(), 7);
        assert_eq!(k.eth_type(), ETH_TYPE_IPV4);
        assert_eq!(k.u16(off::VLAN_VID), 0);
        assert_eq!(k.u8(off::IP_DSCP), 0xb8 >> 2);
        assert_eq!(k.u8(off::IP_PROTO), 17);
        assert_eq!(nw_src(&k), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(k.u16(off::TP_SRC), 1234);
        assert_eq!(k.u16(off::TP_DST), 53);
        assert_eq!(
            lay,
            Layout {
                vlan: None,
                l3: 14,
                l4: Some(34)
            }
        );
        let (kv, lay) = extract(&udp4(Some(0xa00a)), 3, 7);
        assert_eq!(kv.u16(off::VLAN_VID), 0x1000 | 10);
        assert_eq!(kv.u8(off::VLAN_PCP), 5);
        assert_eq!(lay.vlan, Some(12));
        assert_eq!(kv.u16(off::TP_DST), 53);
    }

    #[test]
    fn later_fragments_have_no_ports_and_truncation_never_panics() {
        let mut f = udp4(None);
        f[14 + 7] = 0x10; // fragment offset 16
        let (k, lay) = extract(&f, 1, 0);
        assert_eq!(k.u8(off::IP_PROTO), 17);
        assert_eq!(k.u16(off::TP_DST), 0);
        assert_eq!(lay.l4, None);
        let full = udp4(Some(5));
        for n in 0..full.len() {
            extract(&full[..n], 1, 0);
        }
    }

    #[test]
    fn arp_and_neighbour_discovery() {
        let mut a = vec![0xff; 6];
        a.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        a.extend_from_slice(&[2, 0, 0, 0, 0, 1, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
        let (k, _) = extract(&a, 1, 0);
        assert_eq!(k.u16(off::ARP_OP), 1);
        assert_eq!(k.get(off::SHA), &[2, 0, 0, 0, 0, 1]);
        assert_eq!(k.u32(off::NW_DST), u32::from(Ipv4Addr::new(10, 0, 0, 2)));
        // Neighbour solicitation with a source link-layer address option.
        let mut ns = vec![0x33, 0x33, 0xff, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
        ns.extend_from_slice(&[0x60, 0, 0, 0, 0, 32, 58, 255]);
        ns.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        ns.extend_from_slice(&[0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 2]);
        ns.extend_from_slice(&[135, 0, 0, 0, 0, 0, 0, 0]);
        ns.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        ns.extend_from_slice(&[1, 1, 2, 0, 0, 0, 0, 1]);
        let (k, _) = extract(&ns, 1, 0);
        assert_eq!(k.u8(off::IP_PROTO), 58);
        assert_eq!(k.u8(off::ICMP_TYPE), 135);
        assert_eq!(k.get(off::ND_TARGET)[15], 2);
        assert_eq!(k.get(off::SHA), &[2, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn masks_compose() {
        let (k, _) = extract(&udp4(None), 3, 7);
        let mut m = Key::default();
        m.set(off::TP_DST, &[0xff, 0xff]);
        let v = k.and(&m);
        assert_eq!(v.u16(off::TP_DST), 53);
        assert_eq!(v.in_port(), 0);
        assert!(m.is_subset_of(&Key::FULL));
        assert!(!Key::FULL.is_subset_of(&m));
        assert_eq!(m.or(&Key::default()), m);
    }
}
