//! The raw IPPROTO_GRE socket. The kernel writes the outer IPv4 header (we do not set
//! IP_HDRINCL) and routes it, so the underlay's ARP and routing serve us. On receive it hands
//! us the whole IPv4 packet.
//!
//! No fragmentation, chosen deliberately: the socket uses IP_PMTUDISC_DO, so every packet
//! leaves with DF set and one too big for the path MTU fails at once with EMSGSIZE instead of
//! leaving as outer fragments (a lost fragment loses the whole packet, and many networks drop
//! fragments outright). The datapath cuts what it sends to the path MTU (`dp::tunnel_tx`,
//! `tunnel::pmtu`), and routers on the path that cannot forward a packet answer with ICMP
//! "fragmentation needed", from which the kernel learns the smaller path MTU (through this
//! socket's ICMP error handler) and our next send to that remote fails, so we learn it too.

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, IoSlice};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};

pub struct GreSocket {
    sock: Socket,
}

impl GreSocket {
    /// Open the socket, sending from `local` (the host's underlay address).
    pub fn open(local: Ipv4Addr) -> io::Result<GreSocket> {
        let sock = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(cloudrack_wire::gre::IPPROTO_GRE)),
        )?;
        sock.set_nonblocking(true)?;
        sock.bind(&SockAddr::from(SocketAddrV4::new(local, 0)))?;
        // Large buffers for bursts of segments (and, on the raw-receive fallback, fragmented
        // packets from peers that fragment). Root may exceed rmem_max.
        for (opt, size) in [(libc::SO_RCVBUFFORCE, 64 << 20), (libc::SO_SNDBUFFORCE, 16 << 20)] {
            if crate::os::setsockopt_int(sock.as_raw_fd(), libc::SOL_SOCKET, opt, size).is_err() {
                let _ = sock.set_recv_buffer_size(size as usize);
            }
        }
        crate::os::setsockopt_int(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )?;
        Ok(GreSocket { sock })
    }

    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Stop receiving: GRE arrives on the fanout sockets instead ([`super::fanout`]), and a
    /// raw socket nobody reads would fill its queue with a copy of every packet. It must stay
    /// open all the same: while a raw socket takes protocol 47, the kernel does not answer
    /// our GRE with ICMP "protocol unreachable".
    pub fn set_send_only(&self) -> io::Result<()> {
        super::fanout::attach_filter(self.fd(), &super::fanout::DROP_ALL)?;
        let _ = crate::os::setsockopt_int(self.fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 4096);
        // What queued before the filter went on.
        let mut buf = [0u8; 64];
        while self.recv(&mut buf).is_ok() {}
        Ok(())
    }

    /// Send one GRE packet (header + inner frame) to `remote`, without copying them together.
    pub fn send(&self, remote: Ipv4Addr, gre_header: &[u8], frame: &[u8]) -> io::Result<()> {
        self.send_parts(remote, &[IoSlice::new(gre_header), IoSlice::new(frame)])
    }

    /// Send one GRE packet made of `parts` (header, optional offload header, frame).
    pub fn send_parts(&self, remote: Ipv4Addr, parts: &[IoSlice<'_>]) -> io::Result<()> {
        let to = SockAddr::from(SocketAddrV4::new(remote, 0));
        self.sock.send_to_vectored(parts, &to)?;
        Ok(())
    }

    /// Receive one IPv4 packet into `buf`; `WouldBlock` when none is queued.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        crate::os::recv(self.sock.as_raw_fd(), buf, 0)
    }
}
