//! `system` ports: an AF_PACKET socket bound to an existing interface (a QEMU tap's host side,
//! a veth end).
//!
//! PACKET_VNET_HDR puts a virtio-net header in front of every frame, so GSO super-frames and
//! partial checksums from offloading guests arrive intact and can be sent on whole.
//! PACKET_IGNORE_OUTGOING keeps frames that leave through the interface (ours, or the host
//! stack's) from coming back in as if received, which would loop. PACKET_AUXDATA gives back the
//! VLAN tag the kernel strips from received frames, which is put back in front of the
//! frame (in the receive slot's headroom) so the pipeline sees the frame as it was on the wire.

use super::batch::RxBatch;
use super::{PortIo, RxFrame, RX_HEADROOM};
use crate::os as sys;
use cloudrack_wire::vnet_hdr::{self, VnetHdr};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

const ETH_P_ALL: u16 = 0x0003;
// From linux/if_packet.h; libc lacks the newer ones on some versions.
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const SOCKET_BUFFER: libc::c_int = 16 << 20;
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_AUXDATA: libc::c_int = 8;

pub struct AfPacketPort {
    fd: OwnedFd,
    ifname: String,
    ifindex: u32,
}

impl AfPacketPort {
    /// Open a socket on interface `ifname` and bring the interface up.
    pub fn open(ifname: &str) -> io::Result<AfPacketPort> {
        let ifindex = sys::ifindex(ifname)?;
        // Up before bind: binding to a down interface leaves an ENETDOWN for the first recv.
        sys::set_up(ifname)?;
        // Protocol 0 at creation: no frame of another interface slips in before bind().
        let fd = sys::packet_socket(libc::SOCK_RAW)?;
        let raw = fd.as_raw_fd();
        sys::setsockopt_int(raw, libc::SOL_PACKET, PACKET_VNET_HDR, 1)?;
        sys::setsockopt_int(raw, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)?;
        sys::setsockopt_int(raw, libc::SOL_PACKET, PACKET_AUXDATA, 1)?;
        // Bigger queues ride out bursts while a worker is busy; failure only costs headroom.
        let _ = sys::setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, SOCKET_BUFFER);
        let _ = sys::setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, SOCKET_BUFFER);

        sys::bind_packet(raw, ETH_P_ALL, ifindex)?;
        Ok(AfPacketPort {
            fd,
            ifname: ifname.to_string(),
            ifindex,
        })
    }
}

/// Put a VLAN tag the kernel took off back into the frame: the 12 address bytes move 4 bytes
/// into the headroom (where the virtio-net header was, already parsed) and the tag goes after
/// them. The offload offsets move with the headers.
fn restore_vlan(buf: &mut [u8], f: &mut RxFrame, (tpid, tci): (u16, u16)) {
    if f.len < 12 || f.offset < 4 {
        return;
    }
    let at = f.offset;
    buf.copy_within(at..at + 12, at - 4);
    buf[at + 8..at + 10].copy_from_slice(&tpid.to_be_bytes());
    buf[at + 10..at + 12].copy_from_slice(&tci.to_be_bytes());
    f.offset -= 4;
    f.len += 4;
    if f.vnet.needs_csum() {
        f.vnet.csum_start += 4;
    }
    if f.vnet.hdr_len != 0 {
        f.vnet.hdr_len += 4;
    }
}

impl PortIo for AfPacketPort {
    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<RxFrame> {
        let start = RX_HEADROOM - vnet_hdr::LEN;
        let room = &mut buf[start..];
        let n = sys::recv(self.fd.as_raw_fd(), room, libc::MSG_TRUNC)?;
        super::vnet_rx_frame(room, n)
    }

    fn recv_batch(&self, batch: &mut RxBatch) -> io::Result<usize> {
        let start = RX_HEADROOM - vnet_hdr::LEN;
        let n = batch.recv_mmsg_aux(self.fd.as_raw_fd(), start)?;
        for i in 0..n {
            let mut f = super::vnet_rx_frame(&batch.bufs[i][start..], batch.lens[i]).ok();
            if let (Some(frame), Some(tag)) = (f.as_mut(), batch.vlans[i]) {
                restore_vlan(&mut batch.bufs[i], frame, tag);
            }
            batch.frames[i] = f;
        }
        Ok(n)
    }

    fn send(&self, vnet: &VnetHdr, frame: &[u8]) -> io::Result<()> {
        sys::write_with_vnet_hdr(self.fd.as_raw_fd(), vnet, frame)
    }

    fn tx_socket(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    fn takes_vnet_hdr(&self) -> bool {
        true
    }

    fn ifname(&self) -> &str {
        &self.ifname
    }

    fn ifindex(&self) -> u32 {
        self.ifindex
    }

    fn take_kernel_drops(&self) -> u64 {
        // struct tpacket_stats { tp_packets, tp_drops }; reading it resets both.
        let mut stats = [0u32; 2];
        let mut len = std::mem::size_of_val(&stats) as libc::socklen_t;
        // SAFETY: stats is writable for len bytes; the kernel writes at most len.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_STATISTICS,
                stats.as_mut_ptr() as *mut libc::c_void,
                &mut len,
            )
        };
        if rc < 0 {
            0
        } else {
            stats[1] as u64
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_stripped_tag_goes_back_in_front_of_the_ethertype() {
        let mut buf = vec![0u8; 64];
        let frame: Vec<u8> = (1..=20).collect();
        buf[RX_HEADROOM..RX_HEADROOM + 20].copy_from_slice(&frame);
        let mut f = RxFrame {
            vnet: VnetHdr {
                flags: cloudrack_wire::vnet_hdr::F_NEEDS_CSUM,
                csum_start: 14,
                ..VnetHdr::default()
            },
            offset: RX_HEADROOM,
            len: 20,
        };
        restore_vlan(&mut buf, &mut f, (0x8100, 0x200a));
        let got = &buf[f.offset..f.offset + f.len];
        assert_eq!(&got[..12], &frame[..12]);
        assert_eq!(&got[12..16], &[0x81, 0x00, 0x20, 0x0a]);
        assert_eq!(&got[16..], &frame[12..]);
        assert_eq!(f.vnet.csum_start, 18);
    }
}
