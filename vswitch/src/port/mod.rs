//! Port devices: where frames enter and leave the switch on this host.
//!
//! A port is an fd the workers poll, `recv_batch` of up to [`batch::BATCH`] frames (one
//! `recvmmsg` for AF_PACKET) and `send` of one frame; AF_PACKET ports also expose their socket
//! so the workers can send many frames with one `sendmmsg`. Ports that carry the
//! virtio-net header (AF_PACKET with PACKET_VNET_HDR) exchange offloaded super-frames whole;
//! the others get plain MTU frames. The datapath decides what to do with an offloaded frame
//! by asking [`PortIo::takes_vnet_hdr`].

pub mod afpacket;
pub mod batch;
pub mod mem;
pub mod tap;

use batch::{RxBatch, BATCH};
use cloudrack_wire::vnet_hdr::VnetHdr;
use std::io;
use std::os::fd::RawFd;

/// A received frame's position in the worker's buffer and its offload metadata.
#[derive(Debug, Clone, Copy)]
pub struct RxFrame {
    pub vnet: VnetHdr,
    pub offset: usize,
    pub len: usize,
}

/// One port's I/O. Shared between workers by `Arc`: the kernel serializes sends on one fd,
/// and only the worker that owns the port receives from it.
pub trait PortIo: Send + Sync {
    fn fd(&self) -> RawFd;
    /// Receive one frame into `buf` (which must have [`RX_HEADROOM`] bytes free in front).
    /// `WouldBlock` when nothing is queued.
    fn recv(&self, buf: &mut [u8]) -> io::Result<RxFrame>;
    /// Receive up to [`BATCH`] frames into `batch`'s slots (`batch.frames[i]` for slot i,
    /// `None` if malformed); `WouldBlock` when nothing is queued. Fewer than `BATCH` means the
    /// queue ran dry. This default calls [`recv`](Self::recv) per slot.
    fn recv_batch(&self, batch: &mut RxBatch) -> io::Result<usize> {
        let mut n = 0;
        while n < BATCH {
            match self.recv(&mut batch.bufs[n]) {
                Ok(f) => batch.frames[n] = Some(f),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => batch.frames[n] = None,
                Err(e) if n == 0 => return Err(e),
                // Reported again by the next call.
                Err(_) => break,
            }
            n += 1;
        }
        Ok(n)
    }
    /// Send one frame; `vnet` is only given to ports that take the header.
    fn send(&self, vnet: &VnetHdr, frame: &[u8]) -> io::Result<()>;
    /// A socket that takes one frame, virtio-net header first, per message: several frames
    /// then leave in one `sendmmsg`. `None` for ports that can only [`send`](Self::send).
    fn tx_socket(&self) -> Option<RawFd> {
        None
    }
    /// Whether this port accepts GSO super-frames and partial checksums.
    fn takes_vnet_hdr(&self) -> bool;
    /// The kernel interface this port is attached to.
    fn ifname(&self) -> &str;
    fn ifindex(&self) -> u32;
    /// Frames the kernel dropped before we could read them (a full socket queue) since the
    /// last call. Ports that cannot tell say 0.
    fn take_kernel_drops(&self) -> u64 {
        0
    }
}

/// The frame a port read: `n` bytes at `RX_HEADROOM - vnet_hdr::LEN` of the buffer, starting
/// with the virtio-net header (read into `room`, the buffer from that offset on).
pub(crate) fn vnet_rx_frame(room: &[u8], n: usize) -> io::Result<RxFrame> {
    if n > room.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame larger than the receive buffer",
        ));
    }
    let vnet =
        VnetHdr::parse(&room[..n]).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no virtio-net header"))?;
    Ok(RxFrame {
        vnet,
        offset: RX_HEADROOM,
        len: n - cloudrack_wire::vnet_hdr::LEN,
    })
}

/// Bytes kept free before a received frame, room for the virtio-net header.
pub const RX_HEADROOM: usize = 16;
/// Largest frame a port hands us: a 64 KB GSO frame plus its headers.
pub const MAX_FRAME: usize = 65_536 + 256;
/// The size of a worker's receive buffer.
pub const RX_BUF_LEN: usize = RX_HEADROOM + MAX_FRAME;
