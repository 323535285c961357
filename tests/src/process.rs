//! `Proc`: a child process whose output goes to a log file, killed and
//! reaped on drop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::logs::{current_test_dir, print_log_tail, register_log, scratch_dir, test_logs_active, TempDir};
use crate::logs::{tail_file, LOG_TAIL_LINES};
use crate::util::{sanitize_name, unique_tag};

/// How long [`Proc::stop`] waits after SIGTERM before sending SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(3);

/// A running child process with a name and a log file holding its stdout
/// and stderr. Dropping it sends SIGTERM, waits up to [`TERM_GRACE`], sends
/// SIGKILL and reaps it. If the thread is panicking and no
/// [`TestLogs`](crate::TestLogs) guard is active, the tail of its log is
/// printed.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
    log: PathBuf,
    _dir: Option<TempDir>,
}

impl Proc {
    /// Starts `cmd` (stdin closed; stdout and stderr both appended to a log
    /// file in a scratch directory) and registers the log with the active
    /// [`TestLogs`](crate::TestLogs). Panics if it cannot be started.
    pub fn start(name: &str, mut cmd: Command) -> Proc {
        let (dir, parent) = match current_test_dir() {
            Some(d) => (None, d),
            None => {
                let d = scratch_dir(&format!("proc-{}", sanitize_name(name)));
                let p = d.path().to_path_buf();
                (Some(d), p)
            }
        };
        let log = parent.join(format!("{}-{}.log", sanitize_name(name), unique_tag()));
        let file = File::create(&log).unwrap_or_else(|e| panic!("cannot create log {}: {e}", log.display()));
        let file2 = file.try_clone().unwrap_or_else(|e| panic!("cannot dup log fd: {e}"));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(file2));
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => panic!(
                "cannot start process `{name}` ({:?} {:?}): {e}",
                cmd.get_program(),
                cmd.get_args().collect::<Vec<_>>()
            ),
        };
        register_log(&format!("process `{name}` (pid {})", child.id()), &log);
        Proc {
            name: name.to_string(),
            child,
            status: None,
            log,
            _dir: dir,
        }
    }

    /// The name given at start.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Path of the log file (stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the process has written so far (lossy UTF-8).
    pub fn logs(&self) -> String {
        match std::fs::read(&self.log) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => format!("<cannot read {}: {e}>", self.log.display()),
        }
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        tail_file(&self.log, n)
    }

    /// The exit status if the process has exited (reaping it), else `None`.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.status = Some(st);
            }
        }
        self.status
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Sends a signal (e.g. `libc::SIGHUP`) unless the process was reaped.
    pub fn signal(&mut self, sig: i32) {
        if self.try_status().is_none() {
            // SAFETY: the pid belongs to our unreaped child, so it cannot
            // have been recycled for another process.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, sig);
            }
        }
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_status() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, wait up to [`TERM_GRACE`], then SIGKILL; reaps the process
    /// and returns its exit status (`None` only if waiting failed).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Some(st) = self.try_status() {
            return Some(st);
        }
        self.signal(libc::SIGTERM);
        if let Some(st) = self.wait_exit(TERM_GRACE) {
            return Some(st);
        }
        self.signal(libc::SIGKILL);
        match self.child.wait() {
            Ok(st) => {
                self.status = Some(st);
                Some(st)
            }
            Err(_) => None,
        }
    }

    /// Waits until the log contains `needle`. Returns `false` on timeout or
    /// if the process exits without having written it.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.logs().contains(needle) {
                return true;
            }
            if self.try_status().is_some() {
                return self.logs().contains(needle);
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Like [`wait_for_log`](Self::wait_for_log) but panics with the log's
    /// tail (and the exit status, if it exited) when `needle` does not show.
    pub fn expect_log(&mut self, needle: &str, timeout: Duration) {
        if !self.wait_for_log(needle, timeout) {
            let st = match self.try_status() {
                Some(st) => format!("exited with {st}"),
                None => "still running".to_string(),
            };
            panic!(
                "process `{}` (pid {}, {st}) did not log {needle:?} within {timeout:?}; log tail:\n{}",
                self.name,
                self.pid(),
                self.log_tail(LOG_TAIL_LINES)
            );
        }
    }

    /// Panics with the log's tail if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(st) = self.try_status() {
            panic!(
                "process `{}` exited unexpectedly with {st}; log tail:\n{}",
                self.name,
                self.log_tail(LOG_TAIL_LINES)
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() && !test_logs_active() {
            print_log_tail(&format!("process `{}`", self.name), &self.log, LOG_TAIL_LINES);
        }
    }
}
