//! The OS layer: the few Linux calls the switch makes directly (interface ioctls: index, flags,
//! MAC, MTU; AF_PACKET sockets, socket options, receive, vnet-header writes). Everything unsafe
//! about talking to the kernel outside the port and tunnel devices lives here.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The kernel's index of interface `name`, or an error if it does not exist.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(idx)
    }
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name must be 1-15 bytes",
        ));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn ctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ioctl(req: libc::c_ulong, ifr: &mut libc::ifreq) -> io::Result<()> {
    let sock = ctl_socket()?;
    // SAFETY: ifr is a valid ifreq for these interface ioctls.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), req as _, ifr as *mut libc::ifreq) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Bring interface `name` up (IFF_UP), as `ip link set NAME up` does.
pub fn set_up(name: &str) -> io::Result<()> {
    let mut ifr = ifreq(name)?;
    ioctl(libc::SIOCGIFFLAGS, &mut ifr)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe {
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    ioctl(libc::SIOCSIFFLAGS, &mut ifr)
}

fn hwaddr(name: &str) -> io::Result<libc::sockaddr> {
    let mut ifr = ifreq(name)?;
    ioctl(libc::SIOCGIFHWADDR, &mut ifr)?;
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    Ok(unsafe { ifr.ifr_ifru.ifru_hwaddr })
}

/// The link type of interface `name` (ARPHRD_ETHER = 1 for Ethernet and veth).
pub fn link_type(name: &str) -> io::Result<u16> {
    Ok(hwaddr(name)?.sa_family)
}

/// The hardware address of interface `name`.
pub fn mac(name: &str) -> io::Result<[u8; 6]> {
    let sa = hwaddr(name)?;
    let mut out = [0u8; 6];
    for (o, b) in out.iter_mut().zip(sa.sa_data.iter()) {
        *o = *b as u8;
    }
    Ok(out)
}

/// The MTU of interface `name`.
pub fn mtu(name: &str) -> io::Result<u32> {
    let mut ifr = ifreq(name)?;
    ioctl(libc::SIOCGIFMTU, &mut ifr)?;
    // SAFETY: SIOCGIFMTU filled the mtu member of the union.
    Ok(unsafe { ifr.ifr_ifru.ifru_mtu } as u32)
}

/// Put `fd` into non-blocking mode.
pub fn set_nonblocking(fd: i32) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The interface that carries IPv4 address `ip`, if any.
pub fn iface_with_ipv4(ip: std::net::Ipv4Addr) -> io::Result<Option<String>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills head with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = None;
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned, valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr whose family we check before the cast.
            let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
            if family == libc::AF_INET {
                // SAFETY: AF_INET addresses are sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                if u32::from_be(sin.sin_addr.s_addr) == u32::from(ip) {
                    // SAFETY: ifa_name is a NUL-terminated string owned by the list.
                    let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
                    found = Some(name.to_string_lossy().into_owned());
                    break;
                }
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(found)
}

/// Set an integer socket option.
pub fn setsockopt_int(fd: i32, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    setsockopt(fd, level, name, &value)
}

/// setsockopt(2) with any plain value (an int, a `sock_fprog`, ...).
pub fn setsockopt<T>(fd: i32, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: the value lives across the call and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A non-blocking AF_PACKET socket of `kind` (SOCK_RAW or SOCK_DGRAM). Protocol 0 at creation:
/// nothing is queued until bind() names the interface (and a filter can go on before that).
pub fn packet_socket(kind: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the fd is owned right away.
    let raw = unsafe { libc::socket(libc::AF_PACKET, kind | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// recv(2) into `buf`. With MSG_TRUNC in `flags` a packet socket returns the full length of
/// a packet that did not fit.
pub fn recv(fd: i32, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of its length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), flags) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Write one frame preceded by its virtio-net header, without copying them together.
/// Bind an AF_PACKET socket to one interface and one ethertype (network byte order is done
/// here: pass e.g. `ETH_P_ALL`).
pub fn bind_packet(fd: i32, protocol: u16, ifindex: u32) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is valid before we fill it.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: sll is a valid sockaddr_ll and its size is passed.
    let rc = unsafe {
        libc::bind(
            fd,
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn write_with_vnet_hdr(fd: i32, vnet: &cloudrack_wire::vnet_hdr::VnetHdr, frame: &[u8]) -> io::Result<()> {
    let mut hdr = [0u8; cloudrack_wire::vnet_hdr::LEN];
    vnet.emit(&mut hdr);
    let iov = [
        libc::iovec {
            iov_base: hdr.as_ptr() as *mut libc::c_void,
            iov_len: hdr.len(),
        },
        libc::iovec {
            iov_base: frame.as_ptr() as *mut libc::c_void,
            iov_len: frame.len(),
        },
    ];
    // SAFETY: both iovecs point at live buffers of the stated lengths; writev only reads them.
    let n = unsafe { libc::writev(fd, iov.as_ptr(), 2) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub use cloudrack_wire::mac::{fmt as fmt_mac, parse as parse_mac};

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn finds_loopback_by_address() {
        assert_eq!(
            iface_with_ipv4(std::net::Ipv4Addr::LOCALHOST).unwrap().as_deref(),
            Some("lo")
        );
    }

    #[test]
    fn loopback_exists() {
        assert_eq!(ifindex("lo").unwrap(), 1);
        assert!(ifindex("no-such-if-x").is_err());
        assert!(ifreq("a-name-that-is-far-too-long").is_err());
        assert_eq!(link_type("lo").unwrap(), libc::ARPHRD_LOOPBACK);
        assert!(link_type("no-such-if-x").is_err());
    }
}
