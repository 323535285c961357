//! Packet edits: set-field on every matchable header field with the checksums that cover it
//! fixed incrementally (RFC 1624), VLAN push/pop, IP TTL. Frames with a partial checksum (a
//! virtio-net NEEDS_CSUM header, GSO super-frames included) keep it partial: only the
//! pseudo-header sum in their L4 checksum field follows an address change.

use super::key::{self, extract, off, Layout};
use cloudrack_wire::ofp;
use cloudrack_wire::vnet_hdr::{VnetHdr, F_NEEDS_CSUM};

/// Why an edit could not be made and the packet must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditDrop {
    /// dec_nw_ttl on a TTL of 0 or 1.
    TtlExpired,
}

fn sum16(b: &[u8]) -> u32 {
    b.chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// RFC 1624 eqn. 3: the checksum `hc` after the words `old` became `new` (same length, even
/// alignment relative to the checksummed data).
fn replace(hc: u16, old: &[u8], new: &[u8]) -> u16 {
    let not_old: u32 = old
        .chunks(2)
        .map(|c| !u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    !fold(!hc as u32 + not_old + sum16(new))
}

fn get16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn put16(f: &mut [u8], at: usize, v: u16) {
    f[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Which L4 checksum covers a packet, and where its field is.
#[derive(Debug, Clone, Copy)]
struct L4Sum {
    field: usize,
    /// The field holds a partial (pseudo-header only) sum.
    partial: bool,
    /// UDP over IPv4 may carry no checksum (zero): leave it so.
    optional: bool,
    /// ICMPv4's checksum has no pseudo-header.
    pseudo: bool,
}

fn l4_sum(f: &[u8], k: &key::Key, lay: &Layout, vnet: &VnetHdr) -> Option<L4Sum> {
    let l4 = lay.l4?;
    let (at, pseudo) = match k.ip_proto() {
        key::PROTO_TCP => (l4 + 16, true),
        key::PROTO_UDP => (l4 + 6, true),
        key::PROTO_ICMP if k.eth_type() == key::ETH_TYPE_IPV4 => (l4 + 2, false),
        key::PROTO_ICMPV6 if k.eth_type() == key::ETH_TYPE_IPV6 => (l4 + 2, true),
        _ => return None,
    };
    if at + 2 > f.len() {
        return None;
    }
    let partial = vnet.flags & F_NEEDS_CSUM != 0 && vnet.csum_start as usize == l4;
    Some(L4Sum {
        field: at,
        partial,
        optional: k.ip_proto() == key::PROTO_UDP && k.eth_type() == key::ETH_TYPE_IPV4,
        pseudo,
    })
}

/// Fix the L4 checksum for bytes at `[a, b)` that changed from `old`. `in_pseudo`: the bytes
/// are in the pseudo-header (IP addresses) rather than the L4 segment.
fn fix_l4(f: &mut [u8], s: L4Sum, a: usize, old: &[u8], in_pseudo: bool) {
    if in_pseudo && !s.pseudo {
        return;
    }
    let cur = get16(f, s.field);
    if s.optional && cur == 0 && !s.partial {
        return;
    }
    let new = f[a..a + old.len()].to_vec();
    let v = if s.partial {
        if !in_pseudo {
            // The final sum is computed later over the real bytes.
            return;
        }
        // The field holds the folded pseudo-header sum, not its complement.
        !replace(!cur, old, &new)
    } else {
        let v = replace(cur, old, &new);
        if s.optional && v == 0 {
            0xffff
        } else {
            v
        }
    };
    put16(f, s.field, v);
}

/// Write `value` at `range` (relative to `base`, which must be even-aligned with the data its
/// checksums cover), then fix the IPv4 header checksum if `ip_hdr` and the L4 checksum.
struct Edit<'a> {
    f: &'a mut [u8],
    k: key::Key,
    lay: Layout,
    l4: Option<L4Sum>,
}

impl Edit<'_> {
    /// Replace bytes at `at` with `value`, fixing the checksums that cover them: the IPv4
    /// header's if `ip_hdr`, the L4 one as pseudo-header (`pseudo`) or segment bytes (`l4`).
    fn put(&mut self, at: usize, value: &[u8], ip_hdr: bool, pseudo: bool, l4: bool) {
        let end = at + value.len();
        if end > self.f.len() {
            return;
        }
        // Widen to whole 16-bit words relative to the start of the checksummed data (the L3
        // and L4 headers both start at even offsets from each other in practice; align on L3).
        let base = if l4 && !pseudo {
            self.lay.l4.unwrap_or(self.lay.l3)
        } else {
            self.lay.l3
        };
        let a = at - ((at - base) % 2);
        let b = (end + ((end - base) % 2)).min(self.f.len());
        let old = self.f[a..b].to_vec();
        self.f[at..end].copy_from_slice(value);
        if ip_hdr && self.k.eth_type() == key::ETH_TYPE_IPV4 {
            let at_csum = self.lay.l3 + 10;
            let v = replace(get16(self.f, at_csum), &old, &self.f[a..b]);
            put16(self.f, at_csum, v);
        }
        if let Some(s) = self.l4 {
            if pseudo || l4 {
                fix_l4(self.f, s, a, &old, pseudo);
            }
        }
    }
}

/// Apply set_field of OXM `field` to `value` on `f`. Fields the packet does not have are left
/// alone (prerequisites are the controller's business; Open vSwitch does the same).
pub fn set_field(f: &mut [u8], vnet: &VnetHdr, field: u8, value: &[u8]) {
    if f.len() < 14 {
        return;
    }
    let (k, lay) = extract(f, 0, 0);
    let l4 = l4_sum(f, &k, &lay, vnet);
    let mut e = Edit { f, k, lay, l4 };
    let l3 = lay.l3;
    let is4 = k.eth_type() == key::ETH_TYPE_IPV4;
    let is6 = k.eth_type() == key::ETH_TYPE_IPV6;
    let arp = k.eth_type() == key::ETH_TYPE_ARP && k.get(off::ARP_OP) != [0, 0];
    let proto = k.ip_proto();
    match field {
        ofp::OFPXMT_OFB_ETH_DST => e.f[0..6].copy_from_slice(value),
        ofp::OFPXMT_OFB_ETH_SRC => e.f[6..12].copy_from_slice(value),
        ofp::OFPXMT_OFB_VLAN_VID | ofp::OFPXMT_OFB_VLAN_PCP => {
            let Some(v) = lay.vlan else { return };
            let tci = get16(e.f, v + 2);
            let new = if field == ofp::OFPXMT_OFB_VLAN_VID {
                (tci & 0xf000) | (u16::from_be_bytes([value[0], value[1]]) & 0x0fff)
            } else {
                (tci & 0x1fff) | ((value[0] as u16 & 7) << 13)
            };
            put16(e.f, v + 2, new);
        }
        ofp::OFPXMT_OFB_IP_DSCP | ofp::OFPXMT_OFB_IP_ECN if is4 => {
            let tos = e.f[l3 + 1];
            let new = if field == ofp::OFPXMT_OFB_IP_DSCP {
                (value[0] << 2) | (tos & 3)
            } else {
                (tos & !3) | (value[0] & 3)
            };
            e.put(l3 + 1, &[new], true, false, false);
        }
        ofp::OFPXMT_OFB_IP_DSCP | ofp::OFPXMT_OFB_IP_ECN if is6 => {
            let tc = (e.f[l3] << 4) | (e.f[l3 + 1] >> 4);
            let new = if field == ofp::OFPXMT_OFB_IP_DSCP {
                (value[0] << 2) | (tc & 3)
            } else {
                (tc & !3) | (value[0] & 3)
            };
            e.f[l3] = (e.f[l3] & 0xf0) | (new >> 4);
            e.f[l3 + 1] = (e.f[l3 + 1] & 0x0f) | (new << 4);
        }
        ofp::OFPXMT_OFB_IPV4_SRC if is4 => e.put(l3 + 12, value, true, true, false),
        ofp::OFPXMT_OFB_IPV4_DST if is4 => e.put(l3 + 16, value, true, true, false),
        ofp::OFPXMT_OFB_IPV6_SRC if is6 => e.put(l3 + 8, value, false, true, false),
        ofp::OFPXMT_OFB_IPV6_DST if is6 => e.put(l3 + 24, value, false, true, false),
        ofp::OFPXMT_OFB_IPV6_FLABEL if is6 => {
            let fl = u32::from_be_bytes(value.try_into().unwrap_or([0; 4])) & 0x000f_ffff;
            e.f[l3 + 1] = (e.f[l3 + 1] & 0xf0) | (fl >> 16) as u8;
            e.f[l3 + 2] = (fl >> 8) as u8;
            e.f[l3 + 3] = fl as u8;
        }
        ofp::OFPXMT_OFB_TCP_SRC | ofp::OFPXMT_OFB_UDP_SRC | ofp::OFPXMT_OFB_SCTP_SRC => {
            if let Some(l4) = lay.l4.filter(|_| ports_of(field) == proto) {
                e.put(l4, value, false, false, true);
                sctp_fix(e.f, proto, l4);
            }
        }
        ofp::OFPXMT_OFB_TCP_DST | ofp::OFPXMT_OFB_UDP_DST | ofp::OFPXMT_OFB_SCTP_DST => {
            if let Some(l4) = lay.l4.filter(|_| ports_of(field) == proto) {
                e.put(l4 + 2, value, false, false, true);
                sctp_fix(e.f, proto, l4);
            }
        }
        ofp::OFPXMT_OFB_ICMPV4_TYPE | ofp::OFPXMT_OFB_ICMPV4_CODE if is4 && proto == key::PROTO_ICMP => {
            if let Some(l4) = lay.l4 {
                let at = l4 + (field == ofp::OFPXMT_OFB_ICMPV4_CODE) as usize;
                e.put(at, value, false, false, true);
            }
        }
        ofp::OFPXMT_OFB_ICMPV6_TYPE | ofp::OFPXMT_OFB_ICMPV6_CODE if is6 && proto == key::PROTO_ICMPV6 => {
            if let Some(l4) = lay.l4 {
                let at = l4 + (field == ofp::OFPXMT_OFB_ICMPV6_CODE) as usize;
                e.put(at, value, false, false, true);
            }
        }
        ofp::OFPXMT_OFB_IPV6_ND_TARGET if is6 && proto == key::PROTO_ICMPV6 => {
            if let Some(l4) = lay.l4.filter(|l4| matches!(e.f.get(*l4), Some(135 | 136))) {
                e.put(l4 + 8, value, false, false, true);
            }
        }
        ofp::OFPXMT_OFB_IPV6_ND_SLL | ofp::OFPXMT_OFB_IPV6_ND_TLL if is6 && proto == key::PROTO_ICMPV6 => {
            let (icmp_type, opt) = if field == ofp::OFPXMT_OFB_IPV6_ND_SLL {
                (135, 1)
            } else {
                (136, 2)
            };
            let Some(l4) = lay.l4.filter(|l4| e.f.get(*l4) == Some(&icmp_type)) else {
                return;
            };
            let mut pos = l4 + 24;
            while pos + 8 <= e.f.len() {
                let (t, len) = (e.f[pos], e.f[pos + 1] as usize * 8);
                if len == 0 {
                    break;
                }
                if t == opt && len == 8 {
                    e.put(pos + 2, value, false, false, true);
                    break;
                }
                pos += len;
            }
        }
        ofp::OFPXMT_OFB_ARP_OP if arp => e.f[l3 + 6..l3 + 8].copy_from_slice(value),
        ofp::OFPXMT_OFB_ARP_SHA if arp => e.f[l3 + 8..l3 + 14].copy_from_slice(value),
        ofp::OFPXMT_OFB_ARP_SPA if arp => e.f[l3 + 14..l3 + 18].copy_from_slice(value),
        ofp::OFPXMT_OFB_ARP_THA if arp => e.f[l3 + 18..l3 + 24].copy_from_slice(value),
        ofp::OFPXMT_OFB_ARP_TPA if arp => e.f[l3 + 24..l3 + 28].copy_from_slice(value),
        // tunnel_id and metadata are pipeline fields, not packet bytes.
        _ => {}
    }
}

/// The IP protocol a port field belongs to.
fn ports_of(field: u8) -> u8 {
    match field {
        ofp::OFPXMT_OFB_TCP_SRC | ofp::OFPXMT_OFB_TCP_DST => key::PROTO_TCP,
        ofp::OFPXMT_OFB_UDP_SRC | ofp::OFPXMT_OFB_UDP_DST => key::PROTO_UDP,
        _ => key::PROTO_SCTP,
    }
}

/// SCTP's checksum is a CRC32c over the whole packet: recompute it.
fn sctp_fix(f: &mut [u8], proto: u8, l4: usize) {
    if proto != key::PROTO_SCTP || f.len() < l4 + 12 {
        return;
    }
    f[l4 + 8..l4 + 12].fill(0);
    let crc = crc32c(&f[l4..]);
    f[l4 + 8..l4 + 12].copy_from_slice(&crc.to_le_bytes());
}

fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in data {
        crc ^= *b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Push an outer VLAN tag with ethertype `tpid`, VID and PCP zero until set_field sets them.
/// (OpenFlow 1.3 says to copy them from the current outer tag; Open vSwitch does not, and the
/// differential tests hold us to it.) The frame grows by 4 bytes.
pub fn push_vlan(f: &mut Vec<u8>, vnet: &mut VnetHdr, tpid: u16) {
    if f.len() < 14 {
        return;
    }
    let mut tag = [0u8; 4];
    tag[..2].copy_from_slice(&tpid.to_be_bytes());
    f.splice(12..12, tag);
    shift_offloads(vnet, 4);
}

/// Pop the outer VLAN tag, if there is one.
pub fn pop_vlan(f: &mut Vec<u8>, vnet: &mut VnetHdr) {
    if f.len() < 18 {
        return;
    }
    let t = get16(f, 12);
    if t == key::ETH_TYPE_VLAN || t == key::ETH_TYPE_QINQ {
        f.drain(12..16);
        shift_offloads(vnet, -4);
    }
}

/// The headers moved by `by` bytes: so did the offload offsets.
fn shift_offloads(vnet: &mut VnetHdr, by: i32) {
    if vnet.flags & F_NEEDS_CSUM != 0 {
        vnet.csum_start = (vnet.csum_start as i32 + by).max(0) as u16;
    }
    if vnet.hdr_len != 0 {
        vnet.hdr_len = (vnet.hdr_len as i32 + by).max(0) as u16;
    }
}

/// Set (Some) or decrement (None) the IPv4 TTL / IPv6 hop limit. Non-IP packets are left
/// alone; a TTL that would reach zero drops the packet.
pub fn ttl(f: &mut [u8], set: Option<u8>) -> Result<(), EditDrop> {
    if f.len() < 14 {
        return Ok(());
    }
    let (k, lay) = extract(f, 0, 0);
    let l3 = lay.l3;
    let at = match k.eth_type() {
        key::ETH_TYPE_IPV4 if f.len() >= l3 + 20 => l3 + 8,
        key::ETH_TYPE_IPV6 if f.len() >= l3 + 40 => l3 + 7,
        _ => return Ok(()),
    };
    let old = f[at];
    let new = match set {
        Some(t) => t,
        None if old <= 1 => return Err(EditDrop::TtlExpired),
        None => old - 1,
    };
    if k.eth_type() == key::ETH_TYPE_IPV4 {
        let word_old = [old, f[at + 1]];
        let word_new = [new, f[at + 1]];
        let v = replace(get16(f, l3 + 10), &word_old, &word_new);
        put16(f, l3 + 10, v);
    }
    f[at] = new;
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    fn tcp4() -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1234, 80, 1000, 64000);
        let mut out = Vec::new();
        b.write(&mut out, b"hello world, this is a payload!").unwrap();
        out
    }

    fn udp6() -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv6([0xfd; 16], [0xfe; 16], 64)
            .udp(5000, 6000);
        let mut out = Vec::new();
        b.write(&mut out, b"some udp payload").unwrap();
        out
    }

    /// Whether every checksum of the frame verifies.
    fn checksums_ok(f: &[u8]) -> bool {
        let p = SlicedPacket::from_ethernet(f).unwrap();
        let ip = p.net.as_ref().unwrap();
        match (ip, &p.transport) {
            (etherparse::NetSlice::Ipv4(v4), Some(TransportSlice::Tcp(t))) => {
                let h = v4.header().to_header();
                h.header_checksum == h.calc_header_checksum()
                    && t.calc_checksum_ipv4(h.source, h.destination).unwrap() == t.checksum()
            }
            (etherparse::NetSlice::Ipv6(v6), Some(TransportSlice::Udp(u))) => {
                let h = v6.header().to_header();
                u.to_header().calc_checksum_ipv6(&h, u.payload()).unwrap() == u.checksum()
            }
            _ => false,
        }
    }

    #[test]
    fn rewrites_keep_every_checksum_valid() {
        let none = VnetHdr::default();
        let mut f = tcp4();
        assert!(checksums_ok(&f));
        set_field(&mut f, &none, ofp::OFPXMT_OFB_IPV4_DST, &[192, 168, 7, 9]);
        set_field(&mut f, &none, ofp::OFPXMT_OFB_TCP_SRC, &[0x12, 0x34]);
        set_field(&mut f, &none, ofp::OFPXMT_OFB_IP_DSCP, &[46]);
        set_field(&mut f, &none, ofp::OFPXMT_OFB_ETH_DST, &[2, 0, 0, 0, 0, 9]);
        let (k, _) = extract(&f, 0, 0);
        assert_eq!(k.get(off::NW_DST), &[192, 168, 7, 9]);
        assert_eq!(k.u16(off::TP_SRC), 0x1234);
        assert_eq!(k.u8(off::IP_DSCP), 46);
        assert_eq!(k.eth_dst(), [2, 0, 0, 0, 0, 9]);
        assert!(checksums_ok(&f), "checksums after rewrite");
        ttl(&mut f, None).unwrap();
        assert!(checksums_ok(&f));
        assert_eq!(f[14 + 8], 63);
        let mut g = udp6();
        set_field(&mut g, &none, ofp::OFPXMT_OFB_IPV6_SRC, &[0x20; 16]);
        set_field(&mut g, &none, ofp::OFPXMT_OFB_UDP_DST, &[0, 53]);
        assert!(checksums_ok(&g));
        ttl(&mut g, Some(1)).unwrap();
        assert_eq!(ttl(&mut g, None), Err(EditDrop::TtlExpired));
    }

    #[test]
    fn a_partial_checksum_follows_only_the_pseudo_header() {
        let mut f = tcp4();
        // Make it a partial-checksum frame: the field holds the folded pseudo-header sum.
        let l4 = 34;
        let seg_len = (f.len() - l4) as u32;
        let pseudo = fold(sum16(&f[26..34]) + 6 + seg_len);
        put16(&mut f, l4 + 16, pseudo);
        let vnet = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: l4 as u16,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        set_field(&mut f, &vnet, ofp::OFPXMT_OFB_IPV4_SRC, &[172, 16, 0, 1]);
        set_field(&mut f, &vnet, ofp::OFPXMT_OFB_TCP_DST, &[0x1f, 0x90]);
        let want = fold(sum16(&f[26..34]) + 6 + seg_len);
        assert_eq!(get16(&f, l4 + 16), want);
        // Completing it now gives a valid packet.
        crate::dp::offload::complete_checksum(&mut f, &vnet).unwrap();
        assert!(checksums_ok(&f));
    }

    #[test]
    fn vlan_push_pop_round_trip() {
        let orig = tcp4();
        let mut f = orig.clone();
        let mut vnet = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        push_vlan(&mut f, &mut vnet, 0x8100);
        set_field(&mut f, &vnet, ofp::OFPXMT_OFB_VLAN_VID, &[0x10, 0x07]);
        set_field(&mut f, &vnet, ofp::OFPXMT_OFB_VLAN_PCP, &[5]);
        let (k, _) = extract(&f, 0, 0);
        assert_eq!(k.u16(off::VLAN_VID), 0x1007);
        assert_eq!(k.u8(off::VLAN_PCP), 5);
        assert_eq!(vnet.csum_start, 38);
        // Pushing again starts a tag of its own (VID and PCP zero), as Open vSwitch does.
        push_vlan(&mut f, &mut vnet, 0x88a8);
        assert_eq!((get16(&f, 12), get16(&f, 14), get16(&f, 18)), (0x88a8, 0, 0xa007));
        pop_vlan(&mut f, &mut vnet);
        pop_vlan(&mut f, &mut vnet);
        assert_eq!(f, orig);
        assert_eq!(vnet.csum_start, 34);
        pop_vlan(&mut f, &mut vnet);
        assert_eq!(f, orig, "popping an untagged frame changes nothing");
    }

    #[test]
    fn crc32c_known_value() {
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
    }
}
