//! `mem` ports: a Unix datagram socket pair in place of a network interface, for tests of the
//! whole datapath (workers, pipeline, caches, outputs) that need no root, as Open vSwitch tests
//! its datapath on netdev-dummy. The switch's end behaves like an AF_PACKET port with
//! PACKET_VNET_HDR: every message is a virtio-net header, then the frame.

use super::batch::RxBatch;
use super::{PortIo, RxFrame, RX_HEADROOM};
use crate::os as sys;
use cloudrack_wire::vnet_hdr::{self, VnetHdr};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// The switch's end.
pub struct MemPort {
    sock: UnixDatagram,
    name: String,
}

/// The test's end: what it sends, the switch receives on the port, and the other way round.
pub struct MemPeer {
    sock: UnixDatagram,
}

/// A port named `name` and the end that feeds and drains it.
pub fn pair(name: &str) -> io::Result<(MemPort, MemPeer)> {
    let (a, b) = UnixDatagram::pair()?;
    a.set_nonblocking(true)?;
    Ok((
        MemPort {
            sock: a,
            name: name.to_string(),
        },
        MemPeer { sock: b },
    ))
}

impl MemPeer {
    /// Put `frame` on the wire towards the switch, with offload metadata `vnet`.
    pub fn send(&self, vnet: &VnetHdr, frame: &[u8]) -> io::Result<()> {
        let mut msg = vec![0u8; vnet_hdr::LEN];
        vnet.emit(&mut msg);
        msg.extend_from_slice(frame);
        self.sock.send(&msg).map(|_| ())
    }

    /// The next frame the switch sent out of this port, within `wait`.
    pub fn recv(&self, wait: Duration) -> Option<(VnetHdr, Vec<u8>)> {
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; 70_000];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.sock.set_read_timeout(Some(left)).ok()?;
            match self.sock.recv(&mut buf) {
                Ok(n) if n >= vnet_hdr::LEN => {
                    let vnet = VnetHdr::parse(&buf[..n])?;
                    return Some((vnet, buf[vnet_hdr::LEN..n].to_vec()));
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return None,
                Err(_) => return None,
            }
        }
    }
}

impl PortIo for MemPort {
    fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<RxFrame> {
        let start = RX_HEADROOM - vnet_hdr::LEN;
        let room = &mut buf[start..];
        let n = sys::recv(self.sock.as_raw_fd(), room, libc::MSG_TRUNC)?;
        super::vnet_rx_frame(room, n)
    }

    fn recv_batch(&self, batch: &mut RxBatch) -> io::Result<usize> {
        let start = RX_HEADROOM - vnet_hdr::LEN;
        let n = batch.recv_mmsg(self.sock.as_raw_fd(), start)?;
        for i in 0..n {
            batch.frames[i] = super::vnet_rx_frame(&batch.bufs[i][start..], batch.lens[i]).ok();
        }
        Ok(n)
    }

    fn send(&self, vnet: &VnetHdr, frame: &[u8]) -> io::Result<()> {
        sys::write_with_vnet_hdr(self.sock.as_raw_fd(), vnet, frame)
    }

    fn tx_socket(&self) -> Option<RawFd> {
        Some(self.sock.as_raw_fd())
    }

    fn takes_vnet_hdr(&self) -> bool {
        true
    }

    fn ifname(&self) -> &str {
        &self.name
    }

    fn ifindex(&self) -> u32 {
        0
    }
}
