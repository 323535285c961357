//! The controller under test as a child process (killed on drop, also when a phase fails), what
//! /proc says about a process (CPU, RSS, peak RSS, threads), file-descriptor limits, and what
//! the controller's log says afterwards.

use serde_json::{json, Value};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::cpu::process_cpu_seconds;

/// A running `cloudrack-controller`, its stdout and stderr in `log`. Dropping it sends SIGTERM,
/// then SIGKILL after two seconds, and reaps it.
pub struct Controller {
    child: Child,
    pub pid: u32,
    pub log: PathBuf,
    status: Option<ExitStatus>,
}

impl Controller {
    pub fn start(
        bin: &Path,
        listen: SocketAddr,
        extra: &[String],
        log_level: &str,
        log: PathBuf,
    ) -> Result<Self, String> {
        let file = File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let file2 = file.try_clone().map_err(|e| format!("cannot dup a log fd: {e}"))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--listen")
            .arg(listen.to_string())
            .args(extra)
            .env("RUST_LOG", log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(file2));
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        Ok(Controller {
            pid: child.id(),
            child,
            log,
            status: None,
        })
    }

    /// `Some(description)` once the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        if self.status.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.status = Some(st);
            }
        }
        self.status
            .map(|st| format!("controller exited ({st}); log: {}", log_tail(&self.log, 4)))
    }

    /// Waits until the controller listens on `port` (seen in /proc/PID/net/tcp, so no probe
    /// connection disturbs its counters).
    pub fn wait_listening(&mut self, port: u16, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.exited() {
                return Err(e);
            }
            if listening(self.pid, port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("controller not listening on port {port} after {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until the controller's log contains `needle` (an etcd-backed controller serves
    /// only once elected).
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.exited() {
                return Err(e);
            }
            if std::fs::read_to_string(&self.log).is_ok_and(|l| l.contains(needle)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("controller never logged {needle:?} within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        // SAFETY: the pid is our unreaped child, so it cannot have been recycled.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        if let Ok(st) = self.child.wait() {
            self.status = Some(st);
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free TCP port on loopback (bound and released; the controller binds it a moment later).
pub fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot find a free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn listening(pid: u32, port: u16) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")) else {
        return false;
    };
    text.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3
            && f[3] == "0A"
            && f[1].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok()) == Some(port)
    })
}

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    pub cpu_s: f64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub threads: u64,
}

pub fn sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some(ProcSample {
        cpu_s: process_cpu_seconds(pid)?,
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        threads: field("Threads:"),
    })
}

/// Raise RLIMIT_NOFILE (soft, and hard if needed: root may) to at least `needed`; the
/// controller started afterwards inherits it. Returns (soft, hard).
pub fn raise_nofile(needed: u64) -> Result<(u64, u64), String> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
    }
    if r.rlim_cur >= needed {
        return Ok((r.rlim_cur, r.rlim_max));
    }
    let new = libc::rlimit {
        rlim_cur: needed,
        rlim_max: r.rlim_max.max(needed),
    };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
        return Err(format!(
            "cannot raise the open-files limit to {needed} (hard limit {}): {}; raising the hard limit needs \
             CAP_SYS_RESOURCE (root outside a container) or a higher `ulimit -Hn` before the run",
            r.rlim_max,
            std::io::Error::last_os_error()
        ));
    }
    Ok((new.rlim_cur, new.rlim_max))
}

/// Kernel limits that bound a thread-per-connection server.
pub fn kernel_limits() -> Value {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse::<u64>().ok()))
    };
    let mut nproc = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut nproc) };
    json!({
        "pid_max": read("/proc/sys/kernel/pid_max"),
        "threads_max": read("/proc/sys/kernel/threads-max"),
        "max_map_count": read("/proc/sys/vm/max_map_count"),
        "somaxconn": read("/proc/sys/net/core/somaxconn"),
        "rlimit_nproc": nproc.rlim_cur,
        "mem_total_mib": meminfo("MemTotal:").map(|k| k / 1024),
        "mem_available_mib": meminfo("MemAvailable:").map(|k| k / 1024),
    })
}

/// Machine-wide TCP listen-queue counters (ListenOverflows, ListenDrops) from
/// /proc/net/netstat: a switch whose handshake found the accept queue full waits for a SYN
/// retransmission (1 s, then 3 s...).
pub fn listen_overflows() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    if lines.len() < 2 {
        return (0, 0);
    }
    let names: Vec<&str> = lines[0].split_whitespace().collect();
    let vals: Vec<&str> = lines[1].split_whitespace().collect();
    let get = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .and_then(|i| vals.get(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("ListenOverflows"), get("ListenDrops"))
}

/// A field of /proc/meminfo, in KiB.
pub fn meminfo(name: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find(|l| l.starts_with(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    crate::util::last_lines(&text, n)
}

/// What the controller's log says: its own move timings and the warnings, by kind.
#[derive(Debug, Default)]
pub struct LogFacts {
    pub bytes: u64,
    pub lines: u64,
    pub move_ms: crate::scale::stats::Samples,
    pub dropped: u64,
    pub echo_timeouts: u64,
    pub move_unconfirmed: u64,
    pub warn: u64,
    pub error: u64,
    pub status_lines: u64,
    pub status_bytes: u64,
    pub first_warnings: Vec<String>,
    /// The last periodic state report (JSON), e.g. its "store" part: etcd commit latency.
    pub last_status: Option<serde_json::Value>,
}

pub fn read_log(path: &Path) -> LogFacts {
    let mut f = LogFacts::default();
    let Ok(file) = File::open(path) else { return f };
    let mut r = BufReader::new(file);
    let mut line = Vec::new();
    let mut last_status = None;
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                f.bytes += n as u64;
                f.lines += 1;
            }
        }
        let l = String::from_utf8_lossy(&line);
        if let Some(i) = l.find("move_repointed_ms=") {
            let v: String = l[i + 18..]
                .chars()
                .skip_while(|c| *c == '"')
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            if let Ok(ms) = v.parse() {
                f.move_ms.push(ms);
            }
        }
        if l.contains("controller state") {
            f.status_lines += 1;
            f.status_bytes += line.len() as u64;
            if let Some(i) = l.find("status=") {
                last_status = Some(l[i + 7..].trim().to_string());
            }
        }
        let is_warn = l.contains(" WARN ");
        let is_error = l.contains(" ERROR ");
        if is_warn {
            f.warn += 1;
        }
        if is_error {
            f.error += 1;
        }
        if l.contains("message dropped") {
            f.dropped += 1;
        } else if l.contains("stopped answering echo") {
            f.echo_timeouts += 1;
        } else if l.contains("not confirmed by every switch") {
            f.move_unconfirmed += 1;
        } else if (is_warn || is_error) && f.first_warnings.len() < 5 && !l.contains("switch disconnected") {
            f.first_warnings.push(l.trim().chars().take(300).collect());
        }
    }
    f.last_status = last_status.and_then(|s| serde_json::from_str(&s).ok());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_status() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0 && s.threads >= 1, "{s:?}");
    }

    #[test]
    fn log_facts() {
        let dir = std::env::temp_dir().join(format!("scale-logtest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.log");
        std::fs::write(
            &p,
            "2026-01-01T00:00:00Z  INFO cloudrack_controller::app: MAC move re-pointed on every switch vnet=1 switches=3 move_repointed_ms=\"1.250\"\n\
             2026-01-01T00:00:00Z  WARN cloudrack_controller::app: switch is not reading; message dropped dpid=\"1\"\n\
             2026-01-01T00:00:00Z  WARN cloudrack_controller::server: something else\n",
        )
        .unwrap();
        let f = read_log(&p);
        assert_eq!(f.move_ms.pct(50.0), Some(1.25));
        assert_eq!((f.dropped, f.warn, f.first_warnings.len()), (1, 2, 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
