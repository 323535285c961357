//! Fragmenting an inner IPv4 packet that is too big for a tunnel's path, as a router does when
//! the sender allowed it (DF clear): each fragment then crosses the underlay as a whole GRE
//! packet of its own and the destination VM reassembles them. Only the IPv4 header is
//! rewritten per fragment; the payload is sent from where it lies.

use cloudrack_wire::gre::{fold, sum_words};
use thiserror::Error;

const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IP_DF: u16 = 0x4000;
const IP_MF: u16 = 0x2000;
const IP_OFFSET: u16 = 0x1fff;
/// Headers of one fragment: Ethernet and an IPv4 header without options.
pub const FRAGMENT_HEADERS: usize = ETH_HLEN + 20;

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum FragError {
    /// The sender forbade fragmentation: it must learn the path MTU (ICMP).
    #[error("IPv4 packet with DF set")]
    DontFragment,
    /// IPv6 is never fragmented on the way: the sender must learn the path MTU (ICMPv6).
    #[error("IPv6 packet")]
    Ipv6,
    #[error("not an IP packet (ethertype {0:#06x})")]
    NotIp(u16),
    #[error("IPv4 packet with options")]
    Options,
    #[error("malformed IPv4 packet: {0}")]
    Malformed(&'static str),
    #[error("the frame limit leaves no room for a fragment's payload")]
    NoRoom,
}

/// Cut the IPv4 packet in `frame` (untagged Ethernet) into fragments of at most `max_frame`
/// bytes each; `emit` gets each fragment's Ethernet + IPv4 header and its payload. A packet
/// that is itself a fragment is cut further (offsets and MF kept right). Returns the number of
/// fragments.
pub fn fragment_parts(frame: &[u8], max_frame: usize, mut emit: impl FnMut(&[u8], &[u8])) -> Result<usize, FragError> {
    if frame.len() < ETH_HLEN {
        return Err(FragError::Malformed("shorter than an Ethernet header"));
    }
    match u16::from_be_bytes([frame[12], frame[13]]) {
        ETHERTYPE_IPV4 => {}
        ETHERTYPE_IPV6 => return Err(FragError::Ipv6),
        other => return Err(FragError::NotIp(other)),
    }
    let ip = &frame[ETH_HLEN..];
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return Err(FragError::Malformed("truncated header"));
    }
    if ip[0] & 0x0f != 5 {
        // Options would have to be sorted into those copied to every fragment and the rest.
        return Err(FragError::Options);
    }
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    if total < 20 || total > ip.len() {
        return Err(FragError::Malformed("total length"));
    }
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    if frag & IP_DF != 0 {
        return Err(FragError::DontFragment);
    }
    // Payload per fragment: a multiple of 8 bytes, except in the last.
    let step = (max_frame.saturating_sub(FRAGMENT_HEADERS) / 8) * 8;
    if step == 0 {
        return Err(FragError::NoRoom);
    }
    let payload = &ip[20..total];
    let base = frag & IP_OFFSET;
    let more_after = frag & IP_MF != 0;
    let n = payload.len().div_ceil(step).max(1);
    let mut h = [0u8; FRAGMENT_HEADERS];
    for i in 0..n {
        let chunk = &payload[i * step..((i + 1) * step).min(payload.len())];
        h.copy_from_slice(&frame[..FRAGMENT_HEADERS]);
        let ih = &mut h[ETH_HLEN..];
        ih[2..4].copy_from_slice(&((20 + chunk.len()) as u16).to_be_bytes());
        let offset = base + (i * step / 8) as u16;
        let mf = if i + 1 < n || more_after { IP_MF } else { 0 };
        ih[6..8].copy_from_slice(&(offset | mf).to_be_bytes());
        ih[10..12].fill(0);
        let csum = !fold(sum_words(ih, 0));
        ih[10..12].copy_from_slice(&csum.to_be_bytes());
        emit(&h, chunk);
    }
    Ok(n)
}

#[cfg(test)]
mod test {
    use super::*;

    fn ipv4_udp(payload: usize, frag: u16) -> Vec<u8> {
        let mut f = vec![0u8; ETH_HLEN + 20 + 8 + payload];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let total = (f.len() - ETH_HLEN) as u16;
        let ip = &mut f[ETH_HLEN..];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let csum = !fold(sum_words(&ip[..20], 0));
        ip[10..12].copy_from_slice(&csum.to_be_bytes());
        for (i, b) in ip[20..].iter_mut().enumerate() {
            *b = (i * 13 % 251) as u8;
        }
        f
    }

    fn run(frame: &[u8], max: usize) -> Result<Vec<Vec<u8>>, FragError> {
        let mut out = Vec::new();
        fragment_parts(frame, max, |h, p| out.push([h, p].concat()))?;
        Ok(out)
    }

    /// Reassemble by offset, checking every header on the way.
    fn reassemble(frags: &[Vec<u8>], max: usize) -> (Vec<u8>, bool) {
        let mut data = Vec::new();
        let mut last_mf = true;
        for f in frags {
            assert!(f.len() <= max, "fragment of {} bytes over {max}", f.len());
            let ip = &f[ETH_HLEN..];
            assert_eq!(fold(sum_words(&ip[..20], 0)), 0xffff, "IPv4 header checksum");
            assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, ip.len());
            assert_eq!(&ip[4..6], &0x1234u16.to_be_bytes(), "fragments keep the id");
            let frag = u16::from_be_bytes([ip[6], ip[7]]);
            let at = (frag & IP_OFFSET) as usize * 8;
            if data.len() < at + ip.len() - 20 {
                data.resize(at + ip.len() - 20, 0);
            }
            data[at..at + ip.len() - 20].copy_from_slice(&ip[20..]);
            last_mf = frag & IP_MF != 0;
        }
        (data, last_mf)
    }

    #[test]
    fn fragments_fit_and_reassemble() {
        let frame = ipv4_udp(9000 - 42, 0);
        let frags = run(&frame, 1472).unwrap();
        // (1472 - 34) rounded down to 8: 1432 payload bytes per fragment.
        assert_eq!(frags.len(), (9000 - 34usize).div_ceil(1432));
        let (data, last_mf) = reassemble(&frags, 1472);
        assert_eq!(data, frame[34..]);
        assert!(!last_mf, "the last fragment ends the packet");
        assert!(frags[..frags.len() - 1]
            .iter()
            .all(|f| u16::from_be_bytes([f[20], f[21]]) & IP_MF != 0));
    }

    #[test]
    fn a_fragment_is_cut_further_with_its_offset_and_mf() {
        // The middle fragment of some packet: offset 100 (800 bytes), more to come.
        let frame = ipv4_udp(3000, 100 | IP_MF);
        let frags = run(&frame, 1000).unwrap();
        let first = u16::from_be_bytes([frags[0][20], frags[0][21]]);
        assert_eq!(first & IP_OFFSET, 100);
        let (data, last_mf) = reassemble(&frags, 1000);
        assert_eq!(data[800..], frame[34..]);
        assert!(last_mf, "the last piece keeps MF: the original packet goes on");
    }

    #[test]
    fn refusals() {
        assert_eq!(run(&ipv4_udp(3000, IP_DF), 1000), Err(FragError::DontFragment));
        let mut v6 = ipv4_udp(100, 0);
        v6[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        assert_eq!(run(&v6, 100), Err(FragError::Ipv6));
        let mut arp = ipv4_udp(100, 0);
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(run(&arp, 100), Err(FragError::NotIp(0x0806)));
        let mut opts = ipv4_udp(100, 0);
        opts[14] = 0x46;
        assert_eq!(run(&opts, 100), Err(FragError::Options));
        assert_eq!(run(&ipv4_udp(100, 0), 40), Err(FragError::NoRoom));
        let frame = ipv4_udp(3000, 0);
        for len in 0..60 {
            assert!(run(&frame[..len], 1000).is_err(), "truncated to {len}");
        }
    }
}
