//! Software checksum completion and segmentation for offloaded frames.
//!
//! Guests and namespaces hand the switch TCP super-frames of up to 64 KB with a partial checksum
//! (the virtio-net header says so). A port that takes the header along (AF_PACKET with
//! PACKET_VNET_HDR) gets the frame whole; everything else (GRE tunnels, plain taps) needs real
//! MTU-sized frames with real checksums, which this module makes, into a caller's scratch buffer
//! so the hot path does not allocate.

use cloudrack_wire::gre::{fold, sum_words};
use cloudrack_wire::vnet_hdr::{self, VnetHdr};
use thiserror::Error;

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum OffloadError {
    #[error("offloaded frame is malformed: {0}")]
    Malformed(&'static str),
    #[error("GSO type {0} is not supported")]
    Unsupported(u8),
    #[error("segment does not fit the scratch buffer")]
    NoRoom,
    #[error("a UDP datagram of {0} bytes does not fit the {1}-byte frame limit")]
    DatagramTooBig(usize, usize),
}

/// The longest header stack a segment can have: Ethernet with a VLAN tag (18), IPv4 with
/// options (60) and TCP with options (60); IPv6 extension headers are refused.
pub const MAX_HEADERS: usize = 18 + 60 + 60;

const ETH_HLEN: usize = 14;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Write the L4 checksum a NEEDS_CSUM frame still lacks. The field already holds the folded
/// pseudo-header sum, so summing from `csum_start` to the end gives the final value.
pub fn complete_checksum(frame: &mut [u8], hdr: &VnetHdr) -> Result<(), OffloadError> {
    let start = hdr.csum_start as usize;
    let field = start + hdr.csum_offset as usize;
    if start >= frame.len() || field + 2 > frame.len() {
        return Err(OffloadError::Malformed("checksum offsets beyond the frame"));
    }
    let mut csum = !fold(sum_words(&frame[start..], 0));
    // UDP sends a computed zero as all ones (RFC 768); TCP's field sits at offset 16.
    if hdr.csum_offset == 6 && csum == 0 {
        csum = 0xffff;
    }
    frame[field..field + 2].copy_from_slice(&csum.to_be_bytes());
    Ok(())
}

/// Where the headers of a frame are.
#[derive(Debug, Clone, Copy)]
struct Layout {
    l3: usize,
    l4: usize,
    payload: usize,
    ipv4: bool,
    l4_proto: u8,
}

fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn layout(frame: &[u8]) -> Result<Layout, OffloadError> {
    let short = OffloadError::Malformed("truncated headers");
    if frame.len() < ETH_HLEN {
        return Err(short);
    }
    let mut l3 = ETH_HLEN;
    let mut ethertype = be16(frame, 12);
    if ethertype == ETHERTYPE_VLAN {
        if frame.len() < l3 + 4 {
            return Err(short);
        }
        ethertype = be16(frame, 16);
        l3 += 4;
    }
    let (l4, ipv4, l4_proto) = match ethertype {
        ETHERTYPE_IPV4 => {
            let ihl = (*frame.get(l3).ok_or(short)? & 0x0f) as usize * 4;
            if ihl < 20 || frame.len() < l3 + ihl {
                return Err(short);
            }
            (l3 + ihl, true, frame[l3 + 9])
        }
        ETHERTYPE_IPV6 => {
            if frame.len() < l3 + 40 {
                return Err(short);
            }
            // Extension headers in a GSO frame are rare enough to refuse rather than walk.
            (l3 + 40, false, frame[l3 + 6])
        }
        _ => return Err(OffloadError::Malformed("GSO frame is not IP")),
    };
    let payload = match l4_proto {
        PROTO_TCP => {
            let off = (*frame.get(l4 + 12).ok_or(short)? >> 4) as usize * 4;
            if off < 20 {
                return Err(OffloadError::Malformed("TCP data offset below 20"));
            }
            l4 + off
        }
        PROTO_UDP => l4 + 8,
        _ => return Err(OffloadError::Malformed("GSO frame is neither TCP nor UDP")),
    };
    if payload > frame.len() {
        return Err(short);
    }
    Ok(Layout {
        l3,
        l4,
        payload,
        ipv4,
        l4_proto,
    })
}

/// Sum of the IPv4/IPv6 pseudo-header for an L4 segment of `l4_len` bytes.
fn pseudo_header_sum(frame: &[u8], lay: &Layout, l4_len: usize) -> u64 {
    let acc = if lay.ipv4 {
        sum_words(&frame[lay.l3 + 12..lay.l3 + 20], 0)
    } else {
        sum_words(&frame[lay.l3 + 8..lay.l3 + 40], 0)
    };
    acc + lay.l4_proto as u64 + l4_len as u64
}

/// Cut a GSO super-frame into frames whose L4 payload is at most `gso_size` bytes and whose
/// whole length is at most `max_frame` (0: no cap; a tunnel uses it to keep each segment
/// inside the path MTU, a smaller MSS being as valid to the receiver), each with
/// correct IP lengths, IPv4 id and checksum, TCP sequence numbers and flags, and L4 checksum.
/// UDP datagrams keep their size: a datagram over `max_frame` is an error. Every finished
/// frame is passed to `emit`, copied together in `scratch`. Returns the number of segments.
pub fn segment(
    frame: &[u8],
    hdr: &VnetHdr,
    max_frame: usize,
    scratch: &mut [u8],
    emit: impl FnMut(&mut [u8]),
) -> Result<usize, OffloadError> {
    let lay = check_gso(frame, hdr)?;
    let mss = segment_size(&lay, hdr, max_frame)?;
    cut(frame, &lay, mss, scratch, emit)
}

/// [`segment`] without copying the payload: `emit` gets each segment's rewritten headers
/// and its payload, a slice of `frame`, to send side by side (the headers are at most
/// [`MAX_HEADERS`] long).
pub fn segment_parts(
    frame: &[u8],
    hdr: &VnetHdr,
    max_frame: usize,
    emit: impl FnMut(&[u8], &[u8]),
) -> Result<usize, OffloadError> {
    let lay = check_gso(frame, hdr)?;
    let mss = segment_size(&lay, hdr, max_frame)?;
    for_each_segment(frame, &lay, mss, emit)
}

/// The payload per segment: the GSO size, smaller for TCP if the frame limit needs it.
fn segment_size(lay: &Layout, hdr: &VnetHdr, max_frame: usize) -> Result<usize, OffloadError> {
    let gso = hdr.gso_size as usize;
    if max_frame == 0 || lay.payload + gso <= max_frame {
        return Ok(gso);
    }
    if lay.l4_proto == PROTO_UDP {
        return Err(OffloadError::DatagramTooBig(lay.payload + gso, max_frame));
    }
    Ok(max_frame.saturating_sub(lay.payload))
}

/// The layout of a GSO frame whose type we can cut.
fn check_gso(frame: &[u8], hdr: &VnetHdr) -> Result<Layout, OffloadError> {
    let kind = hdr.gso_kind();
    if !matches!(kind, vnet_hdr::GSO_TCPV4 | vnet_hdr::GSO_TCPV6 | vnet_hdr::GSO_UDP_L4) {
        return Err(OffloadError::Unsupported(kind));
    }
    let lay = layout(frame)?;
    let expected_proto = if kind == vnet_hdr::GSO_UDP_L4 {
        PROTO_UDP
    } else {
        PROTO_TCP
    };
    if lay.l4_proto != expected_proto {
        return Err(OffloadError::Malformed("GSO type does not match the L4 protocol"));
    }
    // As the kernel's virtio_net_hdr_to_skb: TCPV4 means an IPv4 frame, TCPV6 an IPv6 one.
    if (kind == vnet_hdr::GSO_TCPV4 && !lay.ipv4) || (kind == vnet_hdr::GSO_TCPV6 && lay.ipv4) {
        return Err(OffloadError::Malformed("GSO type does not match the IP version"));
    }
    if hdr.gso_size == 0 {
        return Err(OffloadError::Malformed("gso_size is 0"));
    }
    Ok(lay)
}

/// Cut `frame` into pieces of `mss` payload bytes, fixing every header; `emit` gets each
/// piece, copied together in `scratch`.
fn cut(
    frame: &[u8],
    lay: &Layout,
    mss: usize,
    scratch: &mut [u8],
    mut emit: impl FnMut(&mut [u8]),
) -> Result<usize, OffloadError> {
    if mss > 0 && lay.payload + mss.min(frame.len() - lay.payload) > scratch.len() {
        return Err(OffloadError::NoRoom);
    }
    for_each_segment(frame, lay, mss, |h, payload| {
        let len = h.len() + payload.len();
        scratch[..h.len()].copy_from_slice(h);
        scratch[h.len()..len].copy_from_slice(payload);
        emit(&mut scratch[..len])
    })
}

/// For each piece of `mss` payload bytes of `frame`: its headers, rewritten for the piece
/// (IP length, IPv4 id and header checksum, TCP sequence number and flags, UDP length, the
/// L4 checksum over the headers and the payload), and the payload itself, passed to `emit`.
/// Returns the number of pieces.
fn for_each_segment(
    frame: &[u8],
    lay: &Layout,
    mss: usize,
    mut emit: impl FnMut(&[u8], &[u8]),
) -> Result<usize, OffloadError> {
    if mss == 0 {
        return Err(OffloadError::Malformed("headers fill the whole frame size limit"));
    }
    let hdrs = lay.payload;
    if hdrs > MAX_HEADERS {
        return Err(OffloadError::Malformed("headers longer than any valid stack"));
    }
    let payload = &frame[hdrs..];
    let ip_id = if lay.ipv4 { be16(frame, lay.l3 + 4) } else { 0 };
    let tcp_seq = if lay.l4_proto == PROTO_TCP {
        be32(frame, lay.l4 + 4)
    } else {
        0
    };
    let n_segments = payload.len().div_ceil(mss).max(1);
    let mut h = [0u8; MAX_HEADERS];
    let h = &mut h[..hdrs];

    for i in 0..n_segments {
        let start = i * mss;
        let chunk = &payload[start..(start + mss).min(payload.len())];
        let len = hdrs + chunk.len();
        h.copy_from_slice(&frame[..hdrs]);

        let l3 = lay.l3;
        if lay.ipv4 {
            h[l3 + 2..l3 + 4].copy_from_slice(&((len - l3) as u16).to_be_bytes());
            h[l3 + 4..l3 + 6].copy_from_slice(&ip_id.wrapping_add(i as u16).to_be_bytes());
            h[l3 + 10..l3 + 12].fill(0);
            let csum = !fold(sum_words(&h[l3..lay.l4], 0));
            h[l3 + 10..l3 + 12].copy_from_slice(&csum.to_be_bytes());
        } else {
            h[l3 + 4..l3 + 6].copy_from_slice(&((len - lay.l4) as u16).to_be_bytes());
        }

        let l4 = lay.l4;
        let l4_len = len - l4;
        let csum_field = if lay.l4_proto == PROTO_TCP {
            h[l4 + 4..l4 + 8].copy_from_slice(&tcp_seq.wrapping_add(start as u32).to_be_bytes());
            let mut flags = h[l4 + 13];
            if i + 1 < n_segments {
                flags &= !(TCP_FIN | TCP_PSH);
            }
            if i > 0 {
                flags &= !TCP_CWR;
            }
            h[l4 + 13] = flags;
            l4 + 16
        } else {
            h[l4 + 4..l4 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            l4 + 6
        };
        let sum = pseudo_header_sum(h, lay, l4_len);
        h[csum_field..csum_field + 2].fill(0);
        // The headers are an even number of bytes, so the payload's words line up.
        let mut csum = !fold(sum_words(chunk, sum_words(&h[l4..], sum)));
        if lay.l4_proto == PROTO_UDP && csum == 0 {
            csum = 0xffff;
        }
        h[csum_field..csum_field + 2].copy_from_slice(&csum.to_be_bytes());
        emit(h, chunk);
    }
    Ok(n_segments)
}

#[cfg(test)]
mod test {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    const SRC4: [u8; 4] = [10, 0, 0, 1];
    const DST4: [u8; 4] = [10, 0, 0, 2];

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn tcp4_frame(data: &[u8], fin: bool) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(SRC4, DST4, 64)
            .tcp(40000, 5201, 1_000_000, 65000)
            .psh()
            .cwr()
            .ack(77);
        if fin {
            b = b.fin();
        }
        let mut out = Vec::new();
        b.write(&mut out, data).unwrap();
        out
    }

    /// Check every segment's checksums with etherparse and return (seq, flags, payload).
    fn check_segments(frames: &[Vec<u8>]) -> Vec<(u32, bool, bool, bool, Vec<u8>)> {
        frames
            .iter()
            .map(|f| {
                let p = SlicedPacket::from_ethernet(f).unwrap();
                let Some(TransportSlice::Tcp(tcp)) = p.transport else {
                    panic!("not tcp")
                };
                let expected = match p.net.unwrap() {
                    etherparse::NetSlice::Ipv4(ip) => {
                        let h = ip.header().to_header();
                        assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 header checksum");
                        tcp.to_header().calc_checksum_ipv4(&h, tcp.payload()).unwrap()
                    }
                    etherparse::NetSlice::Ipv6(ip) => {
                        let h = ip.header().to_header();
                        tcp.to_header().calc_checksum_ipv6(&h, tcp.payload()).unwrap()
                    }
                    _ => panic!("not ip"),
                };
                assert_eq!(tcp.checksum(), expected, "TCP checksum");
                (
                    tcp.sequence_number(),
                    tcp.fin(),
                    tcp.psh(),
                    tcp.cwr(),
                    tcp.payload().to_vec(),
                )
            })
            .collect()
    }

    fn gso_hdr(kind: u8, size: u16) -> VnetHdr {
        VnetHdr {
            flags: vnet_hdr::F_NEEDS_CSUM,
            gso_type: kind,
            gso_size: size,
            ..Default::default()
        }
    }

    fn run(frame: &[u8], hdr: &VnetHdr, max: usize) -> Vec<Vec<u8>> {
        let mut scratch = vec![0u8; 70_000];
        let mut out = Vec::new();
        let n = segment(frame, hdr, max, &mut scratch, |s| out.push(s.to_vec())).unwrap();
        assert_eq!(n, out.len());
        out
    }

    #[test]
    fn tcp4_segments_carry_all_bytes_with_valid_checksums() {
        let data = payload(10_000);
        let frame = tcp4_frame(&data, true);
        let segs = run(&frame, &gso_hdr(vnet_hdr::GSO_TCPV4, 1448), 0);
        assert_eq!(segs.len(), 7);
        let parsed = check_segments(&segs);
        let mut joined = Vec::new();
        for (i, (seq, fin, psh, cwr, p)) in parsed.iter().enumerate() {
            assert_eq!(*seq, 1_000_000 + joined.len() as u32);
            let last = i == parsed.len() - 1;
            assert_eq!(*fin, last, "FIN only on the last segment");
            assert_eq!(*psh, last, "PSH only on the last segment");
            assert_eq!(*cwr, i == 0, "CWR only on the first segment");
            assert!(p.len() <= 1448);
            joined.extend_from_slice(p);
        }
        assert_eq!(joined, data);
        // IPv4 ids increase per segment.
        let ids: Vec<u16> = segs.iter().map(|s| be16(s, 18)).collect();
        assert!(ids.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
    }

    #[test]
    fn max_frame_caps_the_segment_size() {
        let data = payload(4000);
        let frame = tcp4_frame(&data, false);
        let segs = run(&frame, &gso_hdr(vnet_hdr::GSO_TCPV4, 1448), 14 + 20 + 20 + 1000);
        assert_eq!(segs.len(), 4);
        assert!(segs.iter().all(|s| s.len() <= 14 + 20 + 20 + 1000));
        let joined: Vec<u8> = check_segments(&segs).into_iter().flat_map(|s| s.4).collect();
        assert_eq!(joined, data);
    }

    #[test]
    fn a_gso_type_for_the_other_ip_version_is_refused() {
        let frame = tcp4_frame(&payload(3000), false);
        let mut scratch = vec![0u8; 70_000];
        let r = segment(&frame, &gso_hdr(vnet_hdr::GSO_TCPV6, 1200), 0, &mut scratch, |_| {});
        assert!(matches!(r, Err(OffloadError::Malformed(_))), "{r:?}");
        let mut v6 = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv6([1; 16], [2; 16], 64)
            .tcp(1, 2, 5, 1000)
            .write(&mut v6, &payload(3000))
            .unwrap();
        let r = segment(&v6, &gso_hdr(vnet_hdr::GSO_TCPV4, 1200), 0, &mut scratch, |_| {});
        assert!(matches!(r, Err(OffloadError::Malformed(_))), "{r:?}");
    }

    #[test]
    fn tcp6_segments() {
        let data = payload(3000);
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv6([1; 16], [2; 16], 64)
            .tcp(1, 2, 5, 1000)
            .write(&mut frame, &data)
            .unwrap();
        let segs = run(&frame, &gso_hdr(vnet_hdr::GSO_TCPV6, 1200), 0);
        assert_eq!(segs.len(), 3);
        let joined: Vec<u8> = check_segments(&segs).into_iter().flat_map(|s| s.4).collect();
        assert_eq!(joined, data);
    }

    #[test]
    fn udp_l4_segments_are_datagrams() {
        let data = payload(2500);
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4(SRC4, DST4, 64)
            .udp(7, 9)
            .write(&mut frame, &data)
            .unwrap();
        let segs = run(&frame, &gso_hdr(vnet_hdr::GSO_UDP_L4, 1000), 0);
        assert_eq!(segs.len(), 3);
        for (i, s) in segs.iter().enumerate() {
            let p = SlicedPacket::from_ethernet(s).unwrap();
            let Some(TransportSlice::Udp(udp)) = p.transport else {
                panic!()
            };
            let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
                panic!()
            };
            let h = ip.header().to_header();
            assert_eq!(
                udp.checksum(),
                udp.to_header().calc_checksum_ipv4(&h, udp.payload()).unwrap()
            );
            assert_eq!(udp.payload(), &data[i * 1000..((i + 1) * 1000).min(2500)]);
        }
    }

    #[test]
    fn parts_are_the_copied_segments() {
        let frame = tcp4_frame(&payload(20_000), true);
        let hdr = gso_hdr(vnet_hdr::GSO_TCPV4, 1448);
        let copied = run(&frame, &hdr, 1400);
        let mut parts = Vec::new();
        let n = segment_parts(&frame, &hdr, 1400, |h, p| parts.push([h, p].concat())).unwrap();
        assert_eq!(n, parts.len());
        assert_eq!(parts, copied);
        assert!(parts.iter().all(|s| s.len() <= 1400));
    }

    #[test]
    fn udp_datagrams_keep_their_size_or_are_refused() {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4(SRC4, DST4, 64)
            .udp(7, 9)
            .write(&mut frame, &payload(2500))
            .unwrap();
        let hdr = gso_hdr(vnet_hdr::GSO_UDP_L4, 1000);
        // 42 + 1000 fits 1100: three datagrams of (up to) 1000 bytes.
        assert_eq!(segment_parts(&frame, &hdr, 1100, |_, _| {}), Ok(3));
        // It does not fit 1000: cutting would change the datagrams the application sent.
        assert_eq!(
            segment_parts(&frame, &hdr, 1000, |_, _| {}),
            Err(OffloadError::DatagramTooBig(1042, 1000))
        );
    }

    #[test]
    fn complete_checksum_matches_full_computation() {
        let data = payload(333);
        let mut frame = tcp4_frame(&data, false);
        let good = be16(&frame, 14 + 20 + 16);
        // Emulate CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum.
        let lay = layout(&frame).unwrap();
        let pseudo = fold(pseudo_header_sum(&frame, &lay, frame.len() - lay.l4));
        frame[50..52].copy_from_slice(&pseudo.to_be_bytes());
        let hdr = VnetHdr {
            flags: vnet_hdr::F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            ..Default::default()
        };
        complete_checksum(&mut frame, &hdr).unwrap();
        assert_eq!(be16(&frame, 50), good);
    }

    #[test]
    fn bad_offsets_and_types_are_errors_not_panics() {
        let mut frame = tcp4_frame(&payload(10), false);
        let hdr = VnetHdr {
            flags: 1,
            csum_start: 60,
            csum_offset: 16,
            ..Default::default()
        };
        assert!(complete_checksum(&mut frame, &hdr).is_err());
        let mut scratch = [0u8; 2000];
        assert_eq!(
            segment(&frame, &gso_hdr(vnet_hdr::GSO_UDP, 100), 0, &mut scratch, |_| {}),
            Err(OffloadError::Unsupported(vnet_hdr::GSO_UDP))
        );
        for len in 0..frame.len() {
            let _ = segment(
                &frame[..len],
                &gso_hdr(vnet_hdr::GSO_TCPV4, 100),
                0,
                &mut scratch,
                |_| {},
            );
        }
        assert!(segment(&frame, &gso_hdr(vnet_hdr::GSO_TCPV4, 0), 0, &mut scratch, |_| {}).is_err());
    }
}
