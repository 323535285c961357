//! `tap` ports: a tap device the switch creates and owns (through the tun-tap crate), e.g. to
//! give a network namespace or the host stack a NIC on the virtual network.
//!
//! tun-tap opens the device without IFF_VNET_HDR, so the kernel segments and checksums before
//! it hands us a frame, and we must give it finished frames too: the datapath segments
//! offloaded frames in software before sending them here.

use super::{sys, PortIo, RxFrame, RX_HEADROOM};
use cloudrack_wire::vnet_hdr::VnetHdr;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use tun_tap::{Iface, Mode};

pub struct TapPort {
    iface: Iface,
    ifindex: u32,
}

impl TapPort {
    /// Create (or attach to) tap device `name`, up and non-blocking.
    pub fn create(name: &str) -> io::Result<TapPort> {
        let iface = Iface::without_packet_info(name, Mode::Tap)?;
        if iface.name() != name {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("kernel named the tap {:?}", iface.name()),
            ));
        }
        sys::set_nonblocking(iface.as_raw_fd())?;
        sys::set_up(name)?;
        let ifindex = sys::ifindex(name)?;
        Ok(TapPort { iface, ifindex })
    }
}

impl PortIo for TapPort {
    fn fd(&self) -> RawFd {
        self.iface.as_raw_fd()
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<RxFrame> {
        let n = self.iface.recv(&mut buf[RX_HEADROOM..])?;
        if n == 0 {
            // A tap read of 0 means the device is gone (or detached), not an empty frame.
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "tap returned end of file"));
        }
        Ok(RxFrame {
            vnet: VnetHdr::default(),
            offset: RX_HEADROOM,
            len: n,
        })
    }

    fn send(&self, _vnet: &VnetHdr, frame: &[u8]) -> io::Result<()> {
        self.iface.send(frame).map(|_| ())
    }

    fn takes_vnet_hdr(&self) -> bool {
        false
    }

    fn ifname(&self) -> &str {
        self.iface.name()
    }

    fn ifindex(&self) -> u32 {
        self.ifindex
    }
}
