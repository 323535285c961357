//! The path MTU to each tunnel remote: how large an outer IPv4 packet may be so that it
//! crosses the underlay whole.
//!
//! GRE leaves with DF set (see [`super::socket`]): a router on the way that cannot forward a
//! packet drops it and answers with ICMP "fragmentation needed", from which the kernel learns
//! the path MTU to that remote (a route exception, shared by every socket: the raw GRE socket's
//! ICMP error handler records it). Our next packet that is still too big then fails at once
//! with EMSGSIZE. The kernel's figure is read back by connecting a UDP socket to the remote
//! (a fresh route lookup, nothing is sent) and asking for IP_MTU; a socket connected once would
//! keep the route it had then.
//!
//! Each remote gets one [`PathMtu`], shared by all its tunnels (one per key). Workers read the
//! value with one relaxed load per frame. It is refreshed when a send fails with EMSGSIZE (by
//! the worker that saw it, at most every [`REFRESH_GAP_MS`]) and about once a second by the
//! datapath's refresh thread, which also notices when an exception expires and the path grows
//! back. `--underlay-mtu` caps the value: for paths whose routers drop ICMP (a PMTU black
//! hole), the operator says what fits.

use crate::dp::stats::now_ms;
use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};

/// The smallest path MTU believed: Linux's own floor for learned PMTUs (`min_pmtu`).
pub const MIN_PATH_MTU: u32 = 552;
/// An EMSGSIZE refreshes the value at most this often (a burst of segments all fail at once).
pub const REFRESH_GAP_MS: u64 = 10;

/// The path MTU to one remote.
pub struct PathMtu {
    remote: Ipv4Addr,
    mtu: AtomicU32,
    /// `--underlay-mtu`, or `u32::MAX`.
    cap: u32,
    /// What to assume when the kernel cannot be asked: the underlay interface's MTU.
    fallback: u32,
    /// A UDP socket, connected to `remote` at every refresh; `None` for a fixed value.
    probe: Option<OwnedFd>,
    last_refresh_ms: AtomicU64,
    /// Refreshes that found a new value.
    changes: AtomicU64,
}

impl PathMtu {
    /// A value that never changes (tests, tools).
    pub fn fixed(mtu: u32) -> Arc<PathMtu> {
        Arc::new(PathMtu {
            remote: Ipv4Addr::UNSPECIFIED,
            mtu: AtomicU32::new(mtu),
            cap: u32::MAX,
            fallback: mtu,
            probe: None,
            last_refresh_ms: AtomicU64::new(0),
            changes: AtomicU64::new(0),
        })
    }

    /// The path MTU to `remote`, asked of the kernel now, from `local`'s point of view.
    fn probed(local: Ipv4Addr, remote: Ipv4Addr, cap: u32, fallback: u32) -> PathMtu {
        let probe = match probe_socket(local) {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!(%remote, error = %e, "cannot open a socket to learn the path MTU; assuming the underlay's");
                None
            }
        };
        let p = PathMtu {
            remote,
            mtu: AtomicU32::new(fallback.min(cap)),
            cap,
            fallback,
            probe,
            last_refresh_ms: AtomicU64::new(now_ms()),
            changes: AtomicU64::new(0),
        };
        p.mtu.store(p.learn(), Relaxed);
        tracing::debug!(%remote, mtu = p.get(), "path MTU to a new tunnel remote");
        p
    }

    pub fn remote(&self) -> Ipv4Addr {
        self.remote
    }

    /// The outer packet size that crosses the path whole.
    pub fn get(&self) -> u32 {
        self.mtu.load(Relaxed)
    }

    /// The largest inner Ethernet frame that fits one outer packet: the path MTU minus the
    /// outer IPv4 and keyed GRE headers.
    pub fn max_frame(&self) -> usize {
        (self.get() as usize).saturating_sub(super::OUTER_OVERHEAD)
    }

    /// How many refreshes found a new value.
    pub fn changes(&self) -> u64 {
        self.changes.load(Relaxed)
    }

    /// What the kernel says now, capped; the fallback if it cannot tell.
    fn learn(&self) -> u32 {
        let Some(fd) = &self.probe else {
            return self.get();
        };
        let learned = match kernel_path_mtu(fd, self.remote) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(remote = %self.remote, error = %e, "path MTU unknown; assuming the underlay's");
                self.fallback
            }
        };
        learned.min(self.cap).max(MIN_PATH_MTU)
    }

    /// Ask the kernel again and store what it says (capped). Returns the value now in use.
    pub fn refresh(&self) -> u32 {
        self.last_refresh_ms.store(now_ms(), Relaxed);
        let mtu = self.learn();
        let old = self.mtu.swap(mtu, Relaxed);
        if old != mtu {
            self.changes.fetch_add(1, Relaxed);
            tracing::info!(remote = %self.remote, old, new = mtu, "path MTU to tunnel remote changed");
        }
        mtu
    }

    /// A send to this remote failed with EMSGSIZE: refresh, unless that was done just now.
    pub fn refresh_after_too_big(&self) {
        if now_ms().saturating_sub(self.last_refresh_ms.load(Relaxed)) >= REFRESH_GAP_MS {
            self.refresh();
        }
    }
}

/// A non-blocking UDP socket bound to `local`, never used to send.
fn probe_socket(local: Ipv4Addr) -> io::Result<OwnedFd> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    s.set_nonblocking(true)?;
    s.bind(&socket2::SockAddr::from(SocketAddrV4::new(local, 0)))?;
    Ok(s.into())
}

/// The path MTU the kernel's routing holds for `remote`: connect (a route lookup that takes
/// learned PMTU exceptions into account; nothing is sent) and read IP_MTU.
fn kernel_path_mtu(fd: &OwnedFd, remote: Ipv4Addr) -> io::Result<u32> {
    let mut sin: libc::sockaddr_in = {
        // SAFETY: plain data; all-zero is a valid sockaddr_in.
        unsafe { std::mem::zeroed() }
    };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    // The discard port: any port works, nothing is sent.
    sin.sin_port = 9u16.to_be();
    sin.sin_addr.s_addr = u32::from(remote).to_be();
    // SAFETY: sin is a valid sockaddr_in of the length given.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &sin as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: mtu is writable for len bytes; the kernel writes at most len.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU,
            &mut mtu as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    u32::try_from(mtu).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "negative IP_MTU"))
}

/// Every remote's [`PathMtu`], handed out to tunnels as they are created. Only the control
/// plane and the refresh thread take the lock; workers hold `Arc`s.
pub struct PmtuTable {
    local: Ipv4Addr,
    cap: u32,
    fallback: u32,
    remotes: Mutex<HashMap<Ipv4Addr, Weak<PathMtu>>>,
}

impl PmtuTable {
    /// Paths from `local`, capped at `cap` (`--underlay-mtu`), assuming `fallback` (the
    /// underlay interface's MTU) where the kernel cannot tell.
    pub fn new(local: Ipv4Addr, cap: Option<u32>, fallback: u32) -> PmtuTable {
        PmtuTable {
            local,
            cap: cap.unwrap_or(u32::MAX),
            fallback,
            remotes: Mutex::new(HashMap::new()),
        }
    }

    /// The shared entry for `remote`, probed now if new.
    pub fn for_remote(&self, remote: Ipv4Addr) -> Arc<PathMtu> {
        let mut m = self.remotes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = m.get(&remote).and_then(Weak::upgrade) {
            return p;
        }
        let p = Arc::new(PathMtu::probed(self.local, remote, self.cap, self.fallback));
        m.insert(remote, Arc::downgrade(&p));
        p
    }

    /// Refresh every remote still in use; forget the others.
    pub fn refresh_all(&self) {
        let live: Vec<Arc<PathMtu>> = {
            let mut m = self.remotes.lock().unwrap_or_else(|e| e.into_inner());
            m.retain(|_, w| w.strong_count() > 0);
            m.values().filter_map(Weak::upgrade).collect()
        };
        for p in live {
            p.refresh();
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// In a network namespace of its own (root only; skipped otherwise): a remote behind a
    /// route with `mtu 1400` is probed at 1400, the cap wins when lower, entries are shared per
    /// remote, a route change is seen at the next refresh, and EMSGSIZE refreshes are spaced.
    #[test]
    fn learns_caps_shares_and_refreshes() {
        let t = std::thread::spawn(|| {
            // SAFETY: unshare affects only this thread, which owns nothing yet.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                println!("skipped: no CAP_SYS_ADMIN for a network namespace");
                return;
            }
            let ip = |args: &[&str]| {
                let ok = std::process::Command::new("ip")
                    .args(args)
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "ip {args:?} failed");
            };
            ip(&["link", "add", "d0", "mtu", "1600", "type", "veth", "peer", "name", "d1"]);
            ip(&["link", "set", "d0", "up"]);
            ip(&["link", "set", "d1", "up"]);
            ip(&["addr", "add", "198.18.5.1/24", "dev", "d0"]);
            ip(&["route", "add", "198.18.6.0/24", "via", "198.18.5.2", "mtu", "1400"]);
            let local = Ipv4Addr::new(198, 18, 5, 1);
            let far = Ipv4Addr::new(198, 18, 6, 9);
            let near = Ipv4Addr::new(198, 18, 5, 7);

            let table = PmtuTable::new(local, None, 1600);
            let p = table.for_remote(far);
            assert_eq!(p.get(), 1400, "route MTU");
            assert_eq!(p.max_frame(), 1400 - 28);
            let n = table.for_remote(near);
            assert_eq!(n.get(), 1600, "interface MTU");
            assert!(Arc::ptr_eq(&p, &table.for_remote(far)), "one entry per remote");
            assert_eq!(p.changes(), 0, "the first value is no change");

            let capped = PmtuTable::new(local, Some(1500), 1600);
            assert_eq!(capped.for_remote(near).get(), 1500, "the cap wins when lower");
            assert_eq!(capped.for_remote(far).get(), 1400, "the path wins when lower");

            ip(&["route", "change", "198.18.6.0/24", "via", "198.18.5.2", "mtu", "1300"]);
            std::thread::sleep(std::time::Duration::from_millis(REFRESH_GAP_MS + 5));
            table.refresh_all();
            assert_eq!(p.get(), 1300, "refresh sees the new route");
            assert_eq!(p.changes(), 1);
            // Right after a refresh, an EMSGSIZE does not ask again.
            ip(&["route", "change", "198.18.6.0/24", "via", "198.18.5.2", "mtu", "1200"]);
            p.refresh_after_too_big();
            assert_eq!(p.get(), 1300);
            std::thread::sleep(std::time::Duration::from_millis(REFRESH_GAP_MS + 5));
            p.refresh_after_too_big();
            assert_eq!(p.get(), 1200);

            // No route at all: the fallback, capped.
            ip(&["route", "del", "198.18.6.0/24"]);
            p.refresh();
            assert_eq!(p.get(), 1600);
            drop(p);
            table.refresh_all();
            assert_eq!(table.remotes.lock().unwrap().len(), 1, "unused remote forgotten");
            assert_eq!(n.get(), 1600);
        });
        t.join().unwrap();
    }

    #[test]
    fn fixed_values_never_change() {
        let p = PathMtu::fixed(1500);
        assert_eq!(p.refresh(), 1500);
        assert_eq!(p.max_frame(), 1472);
    }
}
