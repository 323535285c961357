//! Small-frame flood with batched system calls: a sender that pushes fixed-size UDP datagrams
//! with `sendmmsg` as fast as it can, and a receiver that only counts them with `recvmmsg`.
//!
//! iperf3 spends most of a CPU per ~100k datagrams (one `write` and a clock read each), so on a
//! small machine its UDP figure measures iperf3 as much as the datapath. This pair costs a few
//! hundred nanoseconds per frame at either end and leaves the rest of the CPUs to the switch.
//! Both sockets are made inside the VMs' namespaces and then driven from ordinary threads (a
//! socket keeps the namespace it was made in).

use cloudrack_tests::Netns;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::util::interrupted;

/// Datagrams per `sendmmsg`/`recvmmsg` call.
const BATCH: usize = 64;
/// Receive buffer asked for, so that the count reflects the datapath, not a full socket.
const RCVBUF: libc::c_int = 16 << 20;
/// How long the receiver keeps counting after the sender stops (frames still in queues).
const GRACE: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, Copy)]
pub struct FloodReport {
    /// Datagrams the sender's `sendmmsg` accepted.
    pub sent: u64,
    /// Datagrams of the right size the receiver got.
    pub received: u64,
    /// How long the sender sent.
    pub seconds: f64,
}

/// Floods `ip:port` in `server` from `client` with `len`-byte UDP payloads for `seconds`.
pub fn run(
    server: &Netns,
    client: &Netns,
    ip: Ipv4Addr,
    port: u16,
    len: usize,
    seconds: u32,
) -> Result<FloodReport, String> {
    let rx = server
        .enter(move || UdpSocket::bind(SocketAddr::from((ip, port))))
        .map_err(|e| format!("flood receiver cannot bind {ip}:{port}: {e}"))?;
    set_rcvbuf(&rx);
    rx.set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| format!("flood receiver: {e}"))?;
    let tx = client
        .enter(move || {
            let s = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?;
            s.connect(SocketAddr::from((ip, port)))?;
            Ok::<_, std::io::Error>(s)
        })
        .map_err(|e| format!("flood sender cannot reach {ip}:{port}: {e}"))?;

    let stop = Arc::new(AtomicBool::new(false));
    let counter = {
        let stop = stop.clone();
        std::thread::spawn(move || count(&rx, len, &stop))
    };
    let sent = send_for(&tx, len, Duration::from_secs(u64::from(seconds)));
    std::thread::sleep(GRACE);
    stop.store(true, Ordering::Relaxed);
    let received = counter
        .join()
        .unwrap_or_else(|_| Err("flood receiver panicked".to_string()))?;
    let (sent, secs) = sent?;
    Ok(FloodReport {
        sent,
        received,
        seconds: secs,
    })
}

fn set_rcvbuf(s: &UdpSocket) {
    // SO_RCVBUFFORCE passes rmem_max (we are root); fall back to what SO_RCVBUF allows.
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt with a valid fd and a c_int-sized option value.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&RCVBUF as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

/// Sends for `dur`; returns datagrams accepted and the seconds actually spent.
fn send_for(s: &UdpSocket, len: usize, dur: Duration) -> Result<(u64, f64), String> {
    let payload = vec![0x5au8; len];
    let mut iov: Vec<libc::iovec> = (0..BATCH)
        .map(|_| libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: len,
        })
        .collect();
    // SAFETY: mmsghdr is plain data; zero is a valid empty header.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    let started = Instant::now();
    let mut sent = 0u64;
    let mut errors = 0u64;
    let mut calls = 0u32;
    loop {
        // The clock is read once per 16 batches: cheap next to 1024 datagrams.
        if calls.is_multiple_of(16) && (started.elapsed() >= dur || interrupted()) {
            break;
        }
        calls = calls.wrapping_add(1);
        // SAFETY: msgs point at iovecs that point at `payload`, all alive for the call.
        let n = unsafe { libc::sendmmsg(s.as_raw_fd(), msgs.as_mut_ptr(), BATCH as libc::c_uint, 0) };
        if n > 0 {
            sent += n as u64;
            continue;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            // A full queue or an ICMP error from an earlier datagram: keep going.
            Some(libc::ENOBUFS | libc::EAGAIN | libc::ECONNREFUSED | libc::EINTR) => {
                errors += 1;
                if errors > 1_000_000 {
                    return Err("flood sender: a million failed sends in a row".to_string());
                }
            }
            _ => return Err(format!("flood sender: {}", std::io::Error::last_os_error())),
        }
    }
    Ok((sent, started.elapsed().as_secs_f64()))
}

/// Counts `len`-byte datagrams until `stop` (checked at least every 50 ms).
fn count(s: &UdpSocket, len: usize, stop: &AtomicBool) -> Result<u64, String> {
    // One byte more than expected, so a longer datagram shows as one (it is not counted).
    let mut bufs = vec![[0u8; 2048]; BATCH];
    let want = len.min(2047);
    let mut iov: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: want + 1,
        })
        .collect();
    // SAFETY: mmsghdr is plain data; zero is a valid empty header.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut got = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: msgs point at iovecs over `bufs`, alive for the call. The socket's read
        // timeout makes a blocking call return within 50 ms.
        let n = unsafe {
            libc::recvmmsg(
                s.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n > 0 {
            got += msgs[..n as usize].iter().filter(|m| m.msg_len as usize == want).count() as u64;
            continue;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN | libc::EINTR) => {}
            _ => return Err(format!("flood receiver: {}", std::io::Error::last_os_error())),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Over loopback the pair must count exactly what arrives: every datagram is either
    /// counted or lost, never more than sent.
    #[test]
    fn counts_over_loopback() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        set_rcvbuf(&rx);
        let addr = rx.local_addr().unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(addr).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let h = std::thread::spawn(move || count(&rx, 64, &st));
        let (sent, secs) = send_for(&tx, 64, Duration::from_millis(200)).unwrap();
        // A datagram of another size is not counted.
        tx.send(&[0u8; 65]).unwrap();
        std::thread::sleep(GRACE);
        stop.store(true, Ordering::Relaxed);
        let got = h.join().unwrap().unwrap();
        assert!(secs >= 0.2, "sent for {secs} s");
        assert!(sent >= BATCH as u64, "sent {sent}");
        assert!(got > 0 && got <= sent, "received {got} of {sent}");
    }
}
