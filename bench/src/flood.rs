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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::util::interrupted;

/// Datagrams per `sendmmsg`/`recvmmsg` call.
const BATCH: usize = 64;
/// Receive buffer asked for, so that the count reflects the datapath, not a full socket.
const RCVBUF: libc::c_int = 16 << 20;
/// How long the receiver keeps counting after the sender stops (frames still in queues).
const GRACE: Duration = Duration::from_millis(300);
/// The longest wait after GRACE for queues to drain.
const SETTLE_MAX: Duration = Duration::from_secs(3);
/// A paced trial counts only if the sender kept up with the rate asked, within this share.
const PACE_KEPT: f64 = 0.97;

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct FloodReport {
    /// Datagrams the sender's `sendmmsg` accepted.
    pub sent: u64,
    /// Datagrams of the right size the receiver got.
    pub received: u64,
    /// How long the sender sent.
    pub seconds: f64,
}

impl FloodReport {
    /// Datagrams counted per second of sending.
    pub fn fps(&self) -> f64 {
        self.received as f64 / self.seconds.max(1e-9)
    }
}

/// The highest paced rate at which at most this share of the datagrams is lost (RFC 2544's
/// throughput, with a little slack for the odd drop on a shared machine).
pub const ZERO_LOSS_TOLERANCE: f64 = 0.001;
/// Paced trials of the rate search (after the unpaced one): first up until one fails, then
/// halving the interval.
const SEARCH_STEPS: u32 = 7;

/// A connected sender and a counting receiver, between two VMs.
struct Pair {
    tx: UdpSocket,
    len: usize,
    counted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    counter: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Pair {
    fn open(server: &Netns, client: &Netns, ip: Ipv4Addr, port: u16, len: usize) -> Result<Pair, String> {
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
        Ok(Pair::start(tx, rx, len))
    }

    fn start(tx: UdpSocket, rx: UdpSocket, len: usize) -> Pair {
        let counted = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let counter = {
            let (counted, stop) = (counted.clone(), stop.clone());
            std::thread::spawn(move || count(&rx, len, &counted, &stop))
        };
        Pair {
            tx,
            len,
            counted,
            stop,
            counter: Some(counter),
        }
    }

    /// Sends for `dur` at `rate` datagrams per second (as fast as possible when `None`), then
    /// waits for stragglers; what was sent and counted.
    fn trial(&self, rate: Option<f64>, dur: Duration) -> Result<FloodReport, String> {
        let before = self.counted.load(Ordering::Relaxed);
        let (sent, seconds) = send_for(&self.tx, self.len, dur, rate)?;
        self.settle();
        let received = self.counted.load(Ordering::Relaxed) - before;
        Ok(FloodReport {
            sent,
            received,
            seconds,
        })
    }

    /// Waits GRACE, then until the count has stood still for 100 ms (at most SETTLE_MAX): a
    /// flood leaves queues that take a while to drain, and what they hold must not be counted
    /// in the next trial.
    fn settle(&self) {
        std::thread::sleep(GRACE);
        let started = Instant::now();
        let mut last = self.counted.load(Ordering::Relaxed);
        while started.elapsed() < SETTLE_MAX {
            std::thread::sleep(Duration::from_millis(100));
            let now = self.counted.load(Ordering::Relaxed);
            if now == last {
                return;
            }
            last = now;
        }
    }

    fn close(mut self) -> Result<(), String> {
        self.stop.store(true, Ordering::Relaxed);
        match self.counter.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err("flood receiver panicked".to_string()),
            None => Ok(()),
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        // An early return still ends the counting thread (within its 50 ms read timeout).
        self.stop.store(true, Ordering::Relaxed);
    }
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
    with_pair(server, client, ip, port, len, |p| {
        p.trial(None, Duration::from_secs(u64::from(seconds)))
    })
}

/// Opens a sender and a counting receiver between two VMs, runs `f` with them, closes them.
fn with_pair<T>(
    server: &Netns,
    client: &Netns,
    ip: Ipv4Addr,
    port: u16,
    len: usize,
    f: impl FnOnce(&Pair) -> Result<T, String>,
) -> Result<T, String> {
    let pair = Pair::open(server, client, ip, port, len)?;
    let r = f(&pair);
    pair.close()?;
    r
}

/// What the zero-loss search found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ZeroLossReport {
    /// Highest rate delivered, datagrams per second, by a trial that lost at most
    /// ZERO_LOSS_TOLERANCE (0 if none did).
    pub rate: f64,
    /// That trial.
    pub at_rate: Option<FloodReport>,
    /// What the unpaced first trial delivered, per second.
    pub flood_delivered_fps: f64,
    /// Every trial: offered rate (None = unpaced) and its outcome.
    pub trials: Vec<(Option<f64>, FloodReport)>,
}

/// Searches the highest rate that loses (almost) nothing: one unpaced trial gives a first
/// guess by what arrived; paced trials of `trial` each then go up by half the guess's size
/// until one fails, and bisect between the last pass and the first failure. A trial fails by
/// losing more than the tolerance, or when the sender could not keep the pace (a path that
/// runs in the sender's own thread, like the kernel's, slows the sender instead of dropping).
/// The result is the best delivered rate of a trial without loss, the unpaced one included.
fn search(pair: &Pair, trial: Duration) -> Result<ZeroLossReport, String> {
    let first = pair.trial(None, trial)?;
    let delivered = first.received as f64 / first.seconds.max(1e-9);
    let mut trials = vec![(None, first)];
    let mut best = lossless(&first).then_some(first);
    // A paced sender wastes nothing on frames that are dropped, so more than the unpaced
    // delivery may pass.
    let step = (delivered * 0.5).max(1000.0);
    let mut lo = 0.0;
    let mut failed: Option<f64> = None;
    for _ in 0..SEARCH_STEPS {
        if interrupted() {
            break;
        }
        let rate = match failed {
            None if lo == 0.0 => delivered.max(step),
            None => lo + step,
            Some(hi) => (lo + hi) / 2.0,
        };
        let r = pair.trial(Some(rate), trial)?;
        trials.push((Some(rate), r));
        if lossless(&r) && best.is_none_or(|b| r.fps() > b.fps()) {
            best = Some(r);
        }
        if lossless(&r) && r.sent as f64 / r.seconds.max(1e-9) >= rate * PACE_KEPT {
            lo = rate;
        } else {
            failed = Some(rate);
        }
    }
    Ok(ZeroLossReport {
        rate: best.map_or(0.0, |b| b.fps()),
        at_rate: best,
        flood_delivered_fps: delivered,
        trials,
    })
}

/// The zero-loss search between two VMs, `trial_secs` per trial.
pub fn zero_loss(
    server: &Netns,
    client: &Netns,
    ip: Ipv4Addr,
    port: u16,
    len: usize,
    trial_secs: f64,
) -> Result<ZeroLossReport, String> {
    with_pair(server, client, ip, port, len, |p| {
        search(p, Duration::from_secs_f64(trial_secs))
    })
}

/// Lost no more than the tolerance (and something was sent).
fn lossless(r: &FloodReport) -> bool {
    r.sent > 0 && r.sent.saturating_sub(r.received) as f64 <= r.sent as f64 * ZERO_LOSS_TOLERANCE
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

/// One message header per iovec, each pointing at its own (which must outlive the headers).
fn headers_over(iov: &mut [libc::iovec]) -> Vec<libc::mmsghdr> {
    iov.iter_mut()
        .map(|v| {
            // SAFETY: mmsghdr is plain data; zero is a valid empty header.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect()
}

/// Sends for `dur`, as fast as possible or paced to `rate` datagrams per second (a batch at a
/// time); returns datagrams accepted and the seconds actually spent.
fn send_for(s: &UdpSocket, len: usize, dur: Duration, rate: Option<f64>) -> Result<(u64, f64), String> {
    let payload = vec![0x5au8; len];
    let mut iov: Vec<libc::iovec> = (0..BATCH)
        .map(|_| libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: len,
        })
        .collect();
    let mut msgs = headers_over(&mut iov);
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
        if let Some(rate) = rate {
            // The next batch is due when the ones before it have had their share of time.
            let due = Duration::from_secs_f64(sent as f64 / rate);
            let now = started.elapsed();
            if due > now {
                std::thread::sleep(due - now);
            }
            if started.elapsed() >= dur {
                break;
            }
        }
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
                    return Err("flood sender: a million failed sends".to_string());
                }
            }
            _ => return Err(format!("flood sender: {}", std::io::Error::last_os_error())),
        }
    }
    Ok((sent, started.elapsed().as_secs_f64()))
}

/// Adds `len`-byte datagrams to `counted` until `stop` (checked at least every 50 ms).
fn count(s: &UdpSocket, len: usize, counted: &AtomicU64, stop: &AtomicBool) -> Result<(), String> {
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
    let mut msgs = headers_over(&mut iov);
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
            let got = msgs[..n as usize].iter().filter(|m| m.msg_len as usize == want).count();
            counted.fetch_add(got as u64, Ordering::Relaxed);
            continue;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN | libc::EINTR) => {}
            _ => return Err(format!("flood receiver: {}", std::io::Error::last_os_error())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback_pair() -> Pair {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        set_rcvbuf(&rx);
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        Pair::start(tx, rx, 64)
    }

    /// Over loopback the pair must count exactly what arrives: every datagram is either
    /// counted or lost, never more than sent, and one of another size not at all.
    #[test]
    fn counts_over_loopback() {
        let pair = loopback_pair();
        let r = pair.trial(None, Duration::from_millis(200)).unwrap();
        assert!(r.seconds >= 0.2, "sent for {} s", r.seconds);
        assert!(r.sent >= BATCH as u64, "sent {}", r.sent);
        assert!(
            r.received > 0 && r.received <= r.sent,
            "received {} of {}",
            r.received,
            r.sent
        );
        pair.tx.send(&[0u8; 65]).unwrap();
        std::thread::sleep(GRACE);
        assert_eq!(
            pair.counted.load(Ordering::Relaxed),
            r.received,
            "a 65-byte datagram counted"
        );
        pair.close().unwrap();
    }

    /// A paced trial sends at the asked rate (within the batch granularity), and loopback
    /// delivers 20k datagrams a second without loss.
    #[test]
    fn paces_and_passes_at_a_low_rate() {
        let pair = loopback_pair();
        let r = pair.trial(Some(20_000.0), Duration::from_millis(500)).unwrap();
        let rate = r.sent as f64 / r.seconds;
        assert!((15_000.0..=25_000.0).contains(&rate), "paced at {rate}/s");
        assert!(lossless(&r), "lost {} of {}", r.sent - r.received, r.sent);
        pair.close().unwrap();
    }

    /// The search ends on a rate that passed, above zero, after all its trials.
    #[test]
    fn search_finds_a_passing_rate_over_loopback() {
        let pair = loopback_pair();
        let z = search(&pair, Duration::from_millis(150)).unwrap();
        assert_eq!(z.trials.len(), 1 + SEARCH_STEPS as usize);
        assert!(z.trials[0].0.is_none() && z.trials[1..].iter().all(|t| t.0.is_some()));
        assert!(z.rate > 0.0, "{z:?}");
        let best = z.at_rate.expect("a lossless trial");
        assert!(lossless(&best));
        assert_eq!(z.rate, best.fps());
        // No lossless trial delivered more.
        assert!(z
            .trials
            .iter()
            .filter(|(_, t)| lossless(t))
            .all(|(_, t)| t.fps() <= z.rate));
        pair.close().unwrap();
    }

    #[test]
    fn tolerance() {
        let r = |sent, received| FloodReport {
            sent,
            received,
            seconds: 1.0,
        };
        assert!(lossless(&r(10_000, 10_000)));
        assert!(lossless(&r(10_000, 9_990)));
        assert!(!lossless(&r(10_000, 9_989)));
        assert!(!lossless(&r(0, 0)));
    }
}
