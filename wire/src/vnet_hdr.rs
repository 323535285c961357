//! The virtio-net header (`struct virtio_net_hdr`, 10 bytes) that Linux puts in front of frames
//! on tap devices opened with IFF_VNET_HDR and AF_PACKET sockets with PACKET_VNET_HDR.
//!
//! It tells whether a frame still needs its L4 checksum (partial checksum offload) and whether
//! it is a GSO super-frame (up to 64 KB) to be cut into `gso_size` segments. Fields are in the
//! host's byte order for these legacy (non-virtio-1.0) uses; we only run on little-endian hosts
//! and say so at compile time.

#[cfg(not(target_endian = "little"))]
compile_error!("virtio_net_hdr on AF_PACKET/tap is host-endian; only little-endian is supported");

pub const LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: checksum from `csum_start`, stored at `csum_start + csum_offset`.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was already verified.
pub const F_DATA_VALID: u8 = 2;

pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
pub const GSO_ECN: u8 = 0x80;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Parse the first 10 bytes; `None` if fewer are given.
    pub fn parse(buf: &[u8]) -> Option<VnetHdr> {
        let b = buf.get(..LEN)?;
        let le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
        })
    }

    /// Write into the first 10 bytes of `buf`.
    pub fn emit(&self, buf: &mut [u8]) {
        buf[0] = self.flags;
        buf[1] = self.gso_type;
        buf[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        buf[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        buf[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        buf[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
    }

    /// The GSO type without the ECN bit.
    pub fn gso_kind(&self) -> u8 {
        self.gso_type & !GSO_ECN
    }

    pub fn is_gso(&self) -> bool {
        self.gso_kind() != GSO_NONE
    }

    pub fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn round_trip() {
        let h = VnetHdr {
            flags: 1,
            gso_type: GSO_TCPV4 | GSO_ECN,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut b = [0u8; LEN];
        h.emit(&mut b);
        assert_eq!(b, [1, 0x81, 66, 0, 0xa8, 0x05, 34, 0, 16, 0]);
        assert_eq!(VnetHdr::parse(&b), Some(h));
        assert!(h.is_gso() && h.needs_csum());
        assert_eq!(h.gso_kind(), GSO_TCPV4);
    }

    #[test]
    fn short_input() {
        assert_eq!(VnetHdr::parse(&[0u8; 9]), None);
        assert!(!VnetHdr::default().is_gso());
    }
}
