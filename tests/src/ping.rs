//! ICMP echo from inside a namespace, implemented with a raw socket (no
//! dependency on a `ping` binary, which minimal images lack).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use crate::netns::Netns;

/// Interval between echo requests.
pub const PING_INTERVAL: Duration = Duration::from_millis(100);

static PING_ID: AtomicU16 = AtomicU16::new(0);

/// Outcome of [`ping_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingStats {
    /// Echo requests sent.
    pub sent: u32,
    /// Distinct echo replies received.
    pub received: u32,
}

/// Pings `ip` from inside `ns`: sends an echo request every
/// [`PING_INTERVAL`] until `count` replies have arrived or `timeout` has
/// passed. Returns whether `count` replies arrived (like
/// `ping -c COUNT -w TIMEOUT`).
pub fn ping(ns: &Netns, ip: &str, count: u32, timeout: Duration) -> bool {
    ping_stats(ns, ip, count, timeout).received >= count
}

/// Like [`ping`], returning how many requests were sent and replies
/// received. Panics if `ip` is not an IPv4 address or the socket fails.
pub fn ping_stats(ns: &Netns, ip: &str, count: u32, timeout: Duration) -> PingStats {
    let dst: Ipv4Addr = ip
        .parse()
        .unwrap_or_else(|_| panic!("ping: {ip:?} is not an IPv4 address"));
    let id = (std::process::id() as u16)
        .wrapping_mul(31)
        .wrapping_add(PING_ID.fetch_add(1, Ordering::Relaxed));
    ns.enter(move || ping_here(dst, id, count, timeout))
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

struct Fd(i32);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own this descriptor.
        unsafe {
            libc::close(self.0);
        }
    }
}

fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut pkt = vec![8u8, 0, 0, 0];
    pkt.extend_from_slice(&id.to_be_bytes());
    pkt.extend_from_slice(&seq.to_be_bytes());
    pkt.extend_from_slice(b"cloudrack-tests ping payload....");
    let c = checksum(&pkt);
    pkt[2..4].copy_from_slice(&c.to_be_bytes());
    pkt
}

fn ping_here(dst: Ipv4Addr, id: u16, count: u32, timeout: Duration) -> PingStats {
    // SAFETY: plain socket(2) call.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    if raw < 0 {
        panic!("ping: cannot open raw ICMP socket: {}", std::io::Error::last_os_error());
    }
    let fd = Fd(raw);
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(dst).to_be(),
        },
        sin_zero: [0; 8],
    };
    let deadline = Instant::now() + timeout;
    let mut stats = PingStats { sent: 0, received: 0 };
    let mut got: HashSet<u16> = HashSet::new();
    let mut next_send = Instant::now();
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline && stats.received < count {
        let now = Instant::now();
        if now >= next_send {
            let pkt = echo_request(id, stats.sent as u16);
            // SAFETY: pkt and addr are valid for the given lengths.
            let rc = unsafe {
                libc::sendto(
                    fd.0,
                    pkt.as_ptr().cast(),
                    pkt.len(),
                    0,
                    (&addr as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            // A send error (e.g. no route yet, ARP failure) counts as a
            // lost request.
            let _ = rc;
            stats.sent += 1;
            next_send = now + PING_INTERVAL;
        }
        let wait = next_send.min(deadline).saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: fd.0,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = wait.as_millis().clamp(1, 1000) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n <= 0 {
            continue;
        }
        // SAFETY: buf is valid for its length.
        let len = unsafe { libc::recv(fd.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if len <= 0 {
            continue;
        }
        let pkt = &buf[..len as usize];
        if pkt.len() < 20 {
            continue;
        }
        let ihl = usize::from(pkt[0] & 0x0f) * 4;
        let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
        if src != dst || pkt.len() < ihl + 8 {
            continue;
        }
        let icmp = &pkt[ihl..];
        let rid = u16::from_be_bytes([icmp[4], icmp[5]]);
        let rseq = u16::from_be_bytes([icmp[6], icmp[7]]);
        if icmp[0] == 0 && rid == id && u32::from(rseq) < stats.sent && got.insert(rseq) {
            stats.received += 1;
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_request_verifies() {
        let pkt = echo_request(0x1234, 7);
        assert_eq!(checksum(&pkt), 0);
    }
}
