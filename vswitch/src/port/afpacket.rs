//! `system` ports: an AF_PACKET socket bound to an existing interface (a QEMU tap's host side,
//! a veth end).
//!
//! PACKET_VNET_HDR puts a virtio-net header in front of every frame, so GSO super-frames and
//! partial checksums from offloading guests arrive intact and can be sent on whole.
//! PACKET_IGNORE_OUTGOING keeps frames that leave through the interface (ours, or the host
//! stack's) from coming back in as if received, which would loop.

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
        let n = batch.recv_mmsg(self.fd.as_raw_fd(), start)?;
        for i in 0..n {
            batch.frames[i] = super::vnet_rx_frame(&batch.bufs[i][start..], batch.lens[i]).ok();
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
