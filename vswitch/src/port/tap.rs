//! `tap` ports: a tap device the switch creates and owns, e.g. to give a network namespace or
//! the host stack a NIC on the virtual network.
//!
//! Created through the `tun-rs` crate with offloads on (IFF_VNET_HDR, TUNSETOFFLOAD with
//! checksum and TSO): every frame in either direction carries a virtio-net header, so 64 KB TCP
//! super-frames pass whole, as on AF_PACKET ports. (The user first named `tun-tap`, which has no
//! vnet header: the kernel then cut every frame to the MTU and checksummed it in software on the
//! way to us, and we had to segment on the way back, at about a third of the speed.)

use super::{PortIo, RxFrame, RX_HEADROOM};
use crate::os as sys;
use cloudrack_wire::vnet_hdr::{self, VnetHdr};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use tun_rs::{DeviceBuilder, Layer, SyncDevice};

pub struct TapPort {
    dev: SyncDevice,
    name: String,
    ifindex: u32,
}

impl TapPort {
    /// Create tap device `name` with offloads, up and non-blocking.
    pub fn create(name: &str) -> io::Result<TapPort> {
        let dev = DeviceBuilder::new()
            .name(name)
            .layer(Layer::L2)
            .offload(true)
            .build_sync()?;
        let actual = dev.name()?;
        if actual != name {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("kernel named the tap {actual:?}"),
            ));
        }
        dev.set_nonblocking(true)?;
        sys::set_up(name)?;
        let ifindex = sys::ifindex(name)?;
        Ok(TapPort {
            dev,
            name: name.to_string(),
            ifindex,
        })
    }
}

impl PortIo for TapPort {
    fn fd(&self) -> RawFd {
        self.dev.as_raw_fd()
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<RxFrame> {
        let start = RX_HEADROOM - vnet_hdr::LEN;
        // SAFETY: the slice is valid for writes of its length.
        let room = &mut buf[start..];
        let n = unsafe { libc::read(self.dev.as_raw_fd(), room.as_mut_ptr() as *mut libc::c_void, room.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n == 0 {
            // A tap read of 0 means the device is gone (or detached), not an empty frame.
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "tap returned end of file"));
        }
        super::vnet_rx_frame(room, n)
    }

    fn send(&self, vnet: &VnetHdr, frame: &[u8]) -> io::Result<()> {
        sys::write_with_vnet_hdr(self.dev.as_raw_fd(), vnet, frame)
    }

    fn takes_vnet_hdr(&self) -> bool {
        true
    }

    fn ifname(&self) -> &str {
        &self.name
    }

    fn ifindex(&self) -> u32 {
        self.ifindex
    }
}
