//! "Too big" replies: when a VM sends a frame that does not fit a tunnel's path and may not be
//! fragmented (IPv4 with DF set, or IPv6), the switch answers the way a router on the path
//! would, with ICMP "fragmentation needed" (type 3 code 4) or ICMPv6 "packet too big", so the
//! VM's stack learns the MTU and sends smaller packets (path MTU discovery, RFC 1191 / 8201).
//! As Linux's bridged tunnels do (`skb_tunnel_check_pmtu`), the reply comes from the packet's
//! destination, MAC and IP addresses swapped, which is where the VM's stack looks for it.

use cloudrack_wire::gre::{fold, sum_words};

const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;
/// Bytes of the offending packet quoted after its IP header: enough for any transport's ports
/// and sequence number (RFC 792 asks for 8).
const QUOTE: usize = 64;
/// The longest reply: Ethernet, IPv6 (40), ICMPv6 (8), quoted IPv6 header and bytes.
pub const MAX_REPLY: usize = ETH_HLEN + 40 + 8 + 60 + QUOTE;

/// Write into `out` the reply telling the sender of `frame` that `mtu` bytes (of IP packet)
/// fit the path. Returns its length, or `None` when no reply is due: not IP, an ICMP error
/// itself, a non-first fragment, a multicast or broadcast sender or destination.
pub fn too_big_reply(frame: &[u8], mtu: u32, out: &mut [u8]) -> Option<usize> {
    if frame.len() < ETH_HLEN || out.len() < MAX_REPLY {
        return None;
    }
    // Never about traffic to or from a group address (RFC 1122 3.2.2).
    if frame[0] & 1 != 0 || frame[6] & 1 != 0 {
        return None;
    }
    match u16::from_be_bytes([frame[12], frame[13]]) {
        ETHERTYPE_IPV4 => reply_v4(frame, mtu, out),
        ETHERTYPE_IPV6 => reply_v6(frame, mtu, out),
        _ => None,
    }
}

/// The Ethernet header of a reply to `frame`: addresses swapped.
fn eth_reply(frame: &[u8], out: &mut [u8], ethertype: u16) {
    out[..6].copy_from_slice(&frame[6..12]);
    out[6..12].copy_from_slice(&frame[..6]);
    out[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

fn reply_v4(frame: &[u8], mtu: u32, out: &mut [u8]) -> Option<usize> {
    let ip = &frame[ETH_HLEN..];
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return None;
    }
    let ihl = (ip[0] & 0x0f) as usize * 4;
    if ihl < 20 || ip.len() < ihl {
        return None;
    }
    // Only the first fragment has the transport header the sender needs to match.
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
        return None;
    }
    let dst = &ip[16..20];
    if dst[0] >= 224 || dst == [255; 4] {
        return None;
    }
    if ip[9] == PROTO_ICMP && is_icmp_error(ip.get(ihl).copied(), &[3, 4, 5, 11, 12]) {
        return None;
    }
    let quote = &ip[..(ihl + QUOTE).min(ip.len())];
    let len = 20 + 8 + quote.len();
    eth_reply(frame, out, ETHERTYPE_IPV4);
    let o = &mut out[ETH_HLEN..ETH_HLEN + len];
    o.fill(0);
    o[0] = 0x45;
    // Internetwork control precedence, as the kernel's own ICMP.
    o[1] = 0xc0;
    o[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    o[8] = 64;
    o[9] = PROTO_ICMP;
    o[12..16].copy_from_slice(&ip[16..20]);
    o[16..20].copy_from_slice(&ip[12..16]);
    let csum = !fold(sum_words(&o[..20], 0));
    o[10..12].copy_from_slice(&csum.to_be_bytes());
    let icmp = &mut o[20..];
    icmp[0] = 3;
    icmp[1] = 4;
    icmp[6..8].copy_from_slice(&(mtu.min(0xffff) as u16).to_be_bytes());
    icmp[8..].copy_from_slice(quote);
    let csum = !fold(sum_words(icmp, 0));
    icmp[2..4].copy_from_slice(&csum.to_be_bytes());
    Some(ETH_HLEN + len)
}

fn reply_v6(frame: &[u8], mtu: u32, out: &mut [u8]) -> Option<usize> {
    let ip = &frame[ETH_HLEN..];
    if ip.len() < 40 || ip[0] >> 4 != 6 {
        return None;
    }
    if ip[24] == 0xff || ip[8] == 0xff {
        return None;
    }
    // Error messages are types 0-127 (RFC 4443 2.1); the header must come right after.
    if ip[6] == PROTO_ICMPV6 && is_icmp_error(ip.get(40).copied(), &[1, 2, 3, 4]) {
        return None;
    }
    let quote = &ip[..(40 + QUOTE).min(ip.len())];
    let len = 40 + 8 + quote.len();
    eth_reply(frame, out, ETHERTYPE_IPV6);
    let o = &mut out[ETH_HLEN..ETH_HLEN + len];
    o.fill(0);
    o[0] = 0x60;
    o[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
    o[6] = PROTO_ICMPV6;
    o[7] = 64;
    o[8..24].copy_from_slice(&ip[24..40]);
    o[24..40].copy_from_slice(&ip[8..24]);
    let (hdr, icmp) = o.split_at_mut(40);
    icmp[0] = 2;
    icmp[4..8].copy_from_slice(&mtu.to_be_bytes());
    icmp[8..].copy_from_slice(quote);
    // The pseudo-header: addresses, upper-layer length, next header.
    let pseudo = sum_words(&hdr[8..40], 0) + icmp.len() as u64 + u64::from(PROTO_ICMPV6);
    let csum = !fold(sum_words(icmp, pseudo));
    icmp[2..4].copy_from_slice(&csum.to_be_bytes());
    Some(ETH_HLEN + len)
}

/// Whether an ICMP(v6) message of `kind` is one of the `errors` (or too short to tell).
fn is_icmp_error(kind: Option<u8>, errors: &[u8]) -> bool {
    kind.is_none_or(|k| errors.contains(&k))
}

#[cfg(test)]
mod test {
    use super::*;
    use etherparse::{Icmpv4Type, Icmpv6Type, PacketBuilder, SlicedPacket, TransportSlice};

    const VM: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const PEER: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn udp4(len: usize) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(VM, PEER)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(4000, 5000)
            .write(&mut f, &vec![7u8; len])
            .unwrap();
        f
    }

    #[test]
    fn ipv4_fragmentation_needed_comes_from_the_destination() {
        let frame = udp4(3000);
        let mut out = [0u8; MAX_REPLY];
        let n = too_big_reply(&frame, 1458, &mut out).unwrap();
        let p = SlicedPacket::from_ethernet(&out[..n]).unwrap();
        let Some(etherparse::LinkSlice::Ethernet2(eth)) = p.link else {
            panic!("no Ethernet")
        };
        assert_eq!((eth.source(), eth.destination()), (PEER, VM));
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
            panic!("not IPv4")
        };
        assert_eq!(ip.header().source(), [10, 0, 0, 2]);
        assert_eq!(ip.header().destination(), [10, 0, 0, 1]);
        let h = ip.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        let Some(TransportSlice::Icmpv4(icmp)) = p.transport else {
            panic!("not ICMP")
        };
        assert_eq!(
            icmp.icmp_type(),
            Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                next_hop_mtu: 1458
            })
        );
        assert_eq!(icmp.checksum(), icmp.icmp_type().calc_checksum(icmp.payload()));
        // The quote starts with the offending IP header.
        assert_eq!(&icmp.payload()[..20], &frame[14..34]);
    }

    #[test]
    fn ipv6_packet_too_big() {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(VM, PEER)
            .ipv6([1; 16], [2; 16], 64)
            .udp(1, 2)
            .write(&mut frame, &[0u8; 2000])
            .unwrap();
        let mut out = [0u8; MAX_REPLY];
        let n = too_big_reply(&frame, 1400, &mut out).unwrap();
        let p = SlicedPacket::from_ethernet(&out[..n]).unwrap();
        let Some(etherparse::NetSlice::Ipv6(ip)) = &p.net else {
            panic!("not IPv6")
        };
        assert_eq!(ip.header().source(), [2; 16]);
        assert_eq!(ip.header().destination(), [1; 16]);
        let Some(TransportSlice::Icmpv6(icmp)) = p.transport else {
            panic!("not ICMPv6")
        };
        assert_eq!(icmp.icmp_type(), Icmpv6Type::PacketTooBig { mtu: 1400 });
        let expected = icmp
            .icmp_type()
            .calc_checksum(ip.header().source(), ip.header().destination(), icmp.payload())
            .unwrap();
        assert_eq!(icmp.checksum(), expected);
    }

    #[test]
    fn no_reply_where_none_is_due() {
        let mut out = [0u8; MAX_REPLY];
        let mut bcast = udp4(2000);
        bcast[..6].fill(0xff);
        assert_eq!(too_big_reply(&bcast, 1400, &mut out), None, "broadcast");
        let mut err = Vec::new();
        PacketBuilder::ethernet2(VM, PEER)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .icmpv4(Icmpv4Type::TimeExceeded(
                etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit,
            ))
            .write(&mut err, &[0u8; 2000])
            .unwrap();
        assert_eq!(too_big_reply(&err, 1400, &mut out), None, "an ICMP error");
        let mut later = udp4(2000);
        later[20] = 0x20;
        later[21] = 0x10;
        assert_eq!(too_big_reply(&later, 1400, &mut out), None, "a later fragment");
        let mut arp = udp4(100);
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(too_big_reply(&arp, 1400, &mut out), None, "not IP");
        let frame = udp4(2000);
        for len in 0..60 {
            let _ = too_big_reply(&frame[..len], 1400, &mut out);
        }
    }
}
