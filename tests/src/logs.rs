//! Per-test temporary directories and the `TestLogs` guard that prints the
//! tail of every process log when a test fails.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::util::{require_root, sanitize_name, unique_tag};

/// Lines printed per log when a test fails.
pub const LOG_TAIL_LINES: usize = 60;

/// Root of every directory the harness creates: `$TMPDIR/cloudrack-tests`.
pub fn harness_tmp_root() -> PathBuf {
    std::env::temp_dir().join("cloudrack-tests")
}

fn keep_requested() -> bool {
    std::env::var_os("CLOUDRACK_KEEP_LOGS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// A directory removed on drop — unless the thread is panicking (so logs and
/// captures of a failing test survive) or `CLOUDRACK_KEEP_LOGS=1` is set.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    remove_on_drop: bool,
}

impl TempDir {
    /// Creates `<parent>/<prefix>-<tag>`.
    pub fn new_in(parent: &Path, prefix: &str) -> TempDir {
        for _ in 0..16 {
            let path = parent.join(format!("{}-{}", sanitize_name(prefix), unique_tag()));
            if let Err(e) = std::fs::create_dir_all(parent) {
                panic!("cannot create {}: {e}", parent.display());
            }
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    return TempDir {
                        path,
                        remove_on_drop: true,
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create {}: {e}", path.display()),
            }
        }
        panic!("cannot find a free directory name under {}", parent.display());
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keep the directory after drop (e.g. for post-mortem inspection).
    pub fn keep(&mut self) {
        self.remove_on_drop = false;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.remove_on_drop && !std::thread::panicking() && !keep_requested() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[derive(Debug)]
struct Registry {
    name: String,
    dir: PathBuf,
    logs: Mutex<Vec<(String, PathBuf)>>,
}

thread_local! {
    static ACTIVE: RefCell<Vec<Arc<Registry>>> = const { RefCell::new(Vec::new()) };
}

fn active() -> Option<Arc<Registry>> {
    ACTIVE.try_with(|a| a.borrow().last().cloned()).ok().flatten()
}

/// A scratch directory for logs, captures and daemons' run directories.
///
/// Inside a [`TestLogs`] scope it is a subdirectory of the test's directory
/// (removed with it when the test passes); otherwise a directory of its own
/// under [`harness_tmp_root`], removed on drop unless the thread panics.
pub fn scratch_dir(prefix: &str) -> TempDir {
    match active() {
        Some(reg) => {
            let mut d = TempDir::new_in(&reg.dir, prefix);
            // The test's directory goes as a whole when the test passes, and
            // must survive (with this subdirectory) when it fails.
            d.keep();
            d
        }
        None => TempDir::new_in(&harness_tmp_root(), prefix),
    }
}

/// Registers a log file with the innermost active [`TestLogs`] of this
/// thread, so that its tail is printed if the test fails. Returns `false`
/// if no `TestLogs` is active on this thread.
pub fn register_log(label: &str, path: &Path) -> bool {
    match active() {
        Some(reg) => {
            reg.logs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((label.to_string(), path.to_path_buf()));
            true
        }
        None => false,
    }
}

/// Whether a [`TestLogs`] guard is active on this thread.
pub fn test_logs_active() -> bool {
    active().is_some()
}

/// The directory of the innermost active [`TestLogs`] of this thread.
pub fn current_test_dir() -> Option<PathBuf> {
    active().map(|r| r.dir.clone())
}

/// The last `n` lines of a file (lossy UTF-8); a note if it cannot be read.
pub fn tail_file(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            lines[start..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// Prints (to stderr, which the test harness shows for failed tests) the
/// tail of a log file with a header.
pub fn print_log_tail(label: &str, path: &Path, n: usize) {
    eprintln!(
        "===== {label}: last {n} lines of {} =====\n{}\n===== end of {label} =====",
        path.display(),
        tail_file(path, n)
    );
}

/// Per-test guard: owns the test's temporary directory (where every
/// [`Proc`](crate::Proc) started on this thread puts its log) and, if the
/// test panics, prints the tail of every registered log and keeps the
/// directory. When the test passes the directory is removed (set
/// `CLOUDRACK_KEEP_LOGS=1` to keep it).
///
/// Create it first in the test so that it is dropped last:
/// `let _logs = TestLogs::new("my_test");`
#[derive(Debug)]
pub struct TestLogs {
    reg: Arc<Registry>,
}

impl TestLogs {
    /// Starts a scope for test `name`; an empty name takes the current
    /// thread's name (libtest names threads after the test).
    ///
    /// Panics unless running as root: every test using the harness needs it.
    pub fn new(name: &str) -> TestLogs {
        require_root();
        let name = if name.is_empty() {
            std::thread::current()
                .name()
                .unwrap_or("test")
                .rsplit("::")
                .next()
                .unwrap_or("test")
                .to_string()
        } else {
            name.to_string()
        };
        let short: String = sanitize_name(&name).chars().take(24).collect();
        let mut dir = TempDir::new_in(&harness_tmp_root(), &short);
        dir.keep();
        let reg = Arc::new(Registry {
            name,
            dir: dir.path().to_path_buf(),
            logs: Mutex::new(Vec::new()),
        });
        ACTIVE.with(|a| a.borrow_mut().push(reg.clone()));
        TestLogs { reg }
    }

    /// The test's temporary directory.
    pub fn dir(&self) -> &Path {
        &self.reg.dir
    }

    /// Registers an extra log file (e.g. a daemon's `--log-file`).
    pub fn register(&self, label: &str, path: &Path) {
        self.reg
            .logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((label.to_string(), path.to_path_buf()));
    }

    /// The registered logs as `(label, path)`.
    pub fn logs(&self) -> Vec<(String, PathBuf)> {
        self.reg.logs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Prints the last `lines` lines of every registered log.
    pub fn dump(&self, lines: usize) {
        eprintln!(
            "##### logs of test `{}` (directory {}) #####",
            self.reg.name,
            self.reg.dir.display()
        );
        for (label, path) in self.logs() {
            print_log_tail(&label, &path, lines);
        }
    }
}

impl Drop for TestLogs {
    fn drop(&mut self) {
        let _ = ACTIVE.try_with(|a| {
            if let Ok(mut v) = a.try_borrow_mut() {
                v.retain(|r| !Arc::ptr_eq(r, &self.reg));
            }
        });
        if std::thread::panicking() {
            self.dump(LOG_TAIL_LINES);
            eprintln!(
                "##### test `{}` failed; its files are kept in {} #####",
                self.reg.name,
                self.reg.dir.display()
            );
        } else if !keep_requested() {
            let _ = std::fs::remove_dir_all(&self.reg.dir);
        }
    }
}
