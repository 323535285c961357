//! Decapsulation: from what a raw IPPROTO_GRE socket returns (the whole IPv4 packet) to the
//! inner Ethernet frame and its key. Pure: no I/O, every malformed input is an error value.

use cloudrack_wire::gre::{self, GreError, GrePacket, GreRepr};
use cloudrack_wire::vnet_hdr::{self, VnetHdr};
use std::net::Ipv4Addr;
use std::ops::Range;
use thiserror::Error;

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum DecapError {
    #[error("outer IPv4 header truncated or malformed")]
    BadIpv4,
    #[error("outer packet is not GRE")]
    NotGre,
    #[error(transparent)]
    Gre(#[from] GreError),
    #[error("GRE payload is protocol {0:#06x}, not Ethernet (0x6558)")]
    NotEthernet(u16),
    #[error("inner Ethernet frame shorter than 14 bytes")]
    ShortInner,
    #[error("offload header is not one we send: {0}")]
    BadOffload(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decapped {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// The GRE key; an unkeyed packet is key 0.
    pub key: u32,
    /// Where the inner Ethernet frame lies in the packet.
    pub inner: Range<usize>,
    /// Offload metadata of a super-frame from another Cloud Rack host (GRE protocol
    /// `PROTO_OFFLOAD`); `None` for plain Ethernet.
    pub vnet: Option<VnetHdr>,
}

/// Accept only the offload headers Cloud Rack makes (older hosts sent super-frames with one,
/// and the host's GRO yields one, see `inner_offload`), with offsets inside the frame: what
/// reaches a port's kernel must be well-formed.
fn check_offload(h: &VnetHdr, frame_len: usize) -> Result<(), DecapError> {
    if !matches!(
        h.gso_kind(),
        vnet_hdr::GSO_NONE | vnet_hdr::GSO_TCPV4 | vnet_hdr::GSO_TCPV6 | vnet_hdr::GSO_UDP_L4
    ) {
        return Err(DecapError::BadOffload("GSO type"));
    }
    if h.is_gso() && (h.gso_size == 0 || !h.needs_csum()) {
        return Err(DecapError::BadOffload("GSO without size or partial checksum"));
    }
    if h.needs_csum() && h.csum_start as usize + h.csum_offset as usize + 2 > frame_len {
        return Err(DecapError::BadOffload("checksum offsets beyond the frame"));
    }
    Ok(())
}

/// The offload metadata of the inner frame of a packet the kernel handed over with `kernel`,
/// its virtio-net header: `None` for a plain packet; for packets the host's GRO joined (the
/// header says GSO, with a partial checksum) the same metadata with its offsets moved from
/// the start of the packet read to the inner frame at `inner_start` of it. The checksum must
/// lie inside the inner frame, as must the headers.
pub fn inner_offload(kernel: &VnetHdr, packet: &[u8], inner_start: usize) -> Result<Option<VnetHdr>, DecapError> {
    if !kernel.needs_csum() && !kernel.is_gso() {
        return Ok(None);
    }
    let start = (kernel.csum_start as usize)
        .checked_sub(inner_start)
        .ok_or(DecapError::BadOffload("checksum starts before the inner frame"))?;
    let frame = packet.get(inner_start..).ok_or(DecapError::ShortInner)?;
    let mut h = VnetHdr {
        csum_start: start as u16,
        hdr_len: 0,
        ..*kernel
    };
    if h.is_gso() {
        // The inner headers end after the transport header the checksum starts at.
        let l4_len = match h.gso_kind() {
            vnet_hdr::GSO_UDP_L4 => 8,
            _ => (*frame.get(start + 12).ok_or(DecapError::ShortInner)? >> 4) as usize * 4,
        };
        h.hdr_len = (start + l4_len) as u16;
        if h.hdr_len as usize > frame.len() {
            return Err(DecapError::BadOffload("headers beyond the frame"));
        }
    }
    check_offload(&h, frame.len())?;
    Ok(Some(h))
}

/// Parse an IPv4 packet holding GRE with an Ethernet payload.
pub fn decap(packet: &[u8]) -> Result<Decapped, DecapError> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return Err(DecapError::BadIpv4);
    }
    let ihl = (packet[0] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([packet[2], packet[3]]) as usize;
    if ihl < 20 || total < ihl || total > packet.len() {
        return Err(DecapError::BadIpv4);
    }
    if packet[9] as i32 != gre::IPPROTO_GRE {
        return Err(DecapError::NotGre);
    }
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    let gre_bytes = &packet[ihl..total];
    let view = GrePacket::new_checked(gre_bytes)?;
    let repr = GreRepr::parse(&view)?;
    let mut start = ihl + view.header_len();
    let vnet = match repr.protocol {
        gre::PROTO_TEB => None,
        gre::PROTO_OFFLOAD => {
            let h = VnetHdr::parse(&packet[start..total]).ok_or(DecapError::ShortInner)?;
            start += vnet_hdr::LEN;
            Some(h)
        }
        other => return Err(DecapError::NotEthernet(other)),
    };
    if total - start < 14 {
        return Err(DecapError::ShortInner);
    }
    if let Some(h) = &vnet {
        check_offload(h, total - start)?;
    }
    Ok(Decapped {
        src,
        dst,
        key: repr.key.unwrap_or(0),
        inner: start..total,
        vnet,
    })
}

#[cfg(test)]
mod test {
    use super::*;

    fn ipv4_gre(gre_and_payload: &[u8]) -> Vec<u8> {
        let total = 20 + gre_and_payload.len();
        let mut p = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0,
            0,
            64,
            47,
            0,
            0,
            198,
            18,
            0,
            1,
            198,
            18,
            0,
            2,
        ];
        p.extend_from_slice(gre_and_payload);
        p
    }

    #[test]
    fn decaps_keyed_ethernet() {
        let mut g = vec![0x20, 0, 0x65, 0x58, 0, 0, 0, 7];
        g.extend_from_slice(&[0xaa; 60]);
        let pkt = ipv4_gre(&g);
        let d = decap(&pkt).unwrap();
        assert_eq!(d.src, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(d.key, 7);
        assert_eq!(d.inner, 28..88);
    }

    #[test]
    fn unkeyed_is_key_zero() {
        let mut g = vec![0, 0, 0x65, 0x58];
        g.extend_from_slice(&[0xaa; 14]);
        assert_eq!(decap(&ipv4_gre(&g)).unwrap().key, 0);
    }

    #[test]
    fn decaps_offloaded_super_frames() {
        let h = VnetHdr {
            flags: 1,
            gso_type: 1,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut g = vec![0x20, 0, 0x88, 0xb5, 0, 0, 0, 3];
        let mut hb = [0u8; 10];
        h.emit(&mut hb);
        g.extend_from_slice(&hb);
        g.extend_from_slice(&[0xaa; 3000]);
        let d = decap(&ipv4_gre(&g)).unwrap();
        assert_eq!(d.vnet, Some(h));
        assert_eq!(d.inner, 38..3038);
        // Checksum offsets past the end, or GSO without a partial checksum, are refused.
        let bad = VnetHdr { csum_start: 2990, ..h };
        bad.emit(&mut g[8..18]);
        assert_eq!(
            decap(&ipv4_gre(&g)),
            Err(DecapError::BadOffload("checksum offsets beyond the frame"))
        );
        let bad = VnetHdr { flags: 0, ..h };
        bad.emit(&mut g[8..18]);
        assert!(matches!(decap(&ipv4_gre(&g)), Err(DecapError::BadOffload(_))));
        let bad = VnetHdr { gso_type: 3, ..h };
        bad.emit(&mut g[8..18]);
        assert!(matches!(decap(&ipv4_gre(&g)), Err(DecapError::BadOffload(_))));
        assert_eq!(decap(&ipv4_gre(&g[..14])), Err(DecapError::ShortInner));
    }

    #[test]
    fn offload_of_a_packet_the_host_joined_moves_to_the_inner_frame() {
        // 14 Ethernet + 20 IPv4 + 8 GRE before the inner frame; its TCP header at 34 of it.
        let mut packet = vec![0u8; 42 + 34 + 32 + 3000];
        packet[42 + 34 + 12] = 8 << 4;
        let kernel = VnetHdr {
            flags: vnet_hdr::F_NEEDS_CSUM,
            gso_type: vnet_hdr::GSO_TCPV4,
            hdr_len: 200,
            gso_size: 1448,
            csum_start: 42 + 34,
            csum_offset: 16,
        };
        let h = inner_offload(&kernel, &packet, 42).unwrap().unwrap();
        assert_eq!((h.csum_start, h.csum_offset, h.hdr_len, h.gso_size), (34, 16, 66, 1448));
        assert_eq!(inner_offload(&VnetHdr::default(), &packet, 42), Ok(None));
        let early = VnetHdr {
            csum_start: 30,
            ..kernel
        };
        assert!(
            inner_offload(&early, &packet, 42).is_err(),
            "checksum in the outer headers"
        );
        let past = VnetHdr {
            csum_start: 60_000,
            ..kernel
        };
        assert!(inner_offload(&past, &packet, 42).is_err());
        assert!(inner_offload(&kernel, &packet[..100], 42).is_err(), "truncated");
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(decap(&[0x45, 0, 0]), Err(DecapError::BadIpv4));
        let mut g = vec![0x20, 0, 0x08, 0x00, 0, 0, 0, 7];
        g.extend_from_slice(&[0; 20]);
        assert_eq!(decap(&ipv4_gre(&g)), Err(DecapError::NotEthernet(0x0800)));
        assert_eq!(
            decap(&ipv4_gre(&[0x20, 0, 0x65, 0x58, 0, 0])),
            Err(DecapError::Gre(GreError::Truncated { have: 6, need: 8 }))
        );
        assert_eq!(
            decap(&ipv4_gre(&[0x20, 0, 0x65, 0x58, 0, 0, 0, 1, 1, 2])),
            Err(DecapError::ShortInner)
        );
        let mut udp = ipv4_gre(&[0; 30]);
        udp[9] = 17;
        assert_eq!(decap(&udp), Err(DecapError::NotGre));
        // Total length larger than what arrived.
        let mut long = ipv4_gre(&[0x20, 0, 0x65, 0x58, 0, 0, 0, 1]);
        long[3] = 200;
        assert_eq!(decap(&long), Err(DecapError::BadIpv4));
        for n in 0..40 {
            let _ = decap(&ipv4_gre(&vec![0x20; n]));
        }
    }
}
