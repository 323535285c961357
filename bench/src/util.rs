//! Process plumbing the harness does not offer: running a command with a deadline (and giving up
//! at once on Ctrl-C), turning panics into error strings, and small formatting helpers.

use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static LAST_PANIC_AT: Mutex<Option<String>> = Mutex::new(None);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM only set a flag: the run stops at the next check and every namespace,
/// process and directory is removed by the normal `Drop`s instead of leaking.
pub fn install_signal_handlers() {
    let handler = on_interrupt as extern "C" fn(libc::c_int);
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

/// Whether the user asked the run to stop.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails with "interrupted" once the user asked the run to stop.
pub fn check_interrupted() -> Result<(), String> {
    if interrupted() {
        Err("interrupted".to_string())
    } else {
        Ok(())
    }
}

/// Replaces the default panic hook (which prints a backtrace banner) with one that only
/// remembers where the panic happened; [`catching`] turns the panic into an error string.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        if let Ok(mut g) = LAST_PANIC_AT.lock() {
            *g = Some(at);
        }
    }));
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// Runs `f`; a panic inside it (the harness reports failures by panicking) becomes `Err` with
/// the panic message and its source location. Everything `f` owned has been dropped (and so
/// cleaned up) by the time this returns.
pub fn catching<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let at = LAST_PANIC_AT.lock().ok().and_then(|mut g| g.take()).unwrap_or_default();
            let msg = panic_message(payload.as_ref());
            if at.is_empty() {
                Err(msg)
            } else {
                Err(format!("{msg} (at {at})"))
            }
        }
    }
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    })
}

/// Runs `cmd` to completion, killing it after `timeout` or as soon as the user interrupts.
/// Stdout and stderr are collected by threads, so a chatty child never blocks on a full pipe.
pub fn run_with_timeout(what: &str, mut cmd: Command, timeout: Duration) -> Result<Finished, String> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {what}: {e}"))?;
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    let started = Instant::now();
    let deadline = started + timeout;
    let mut killed = None;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for {what}: {e}")),
        }
        if killed.is_none() {
            if interrupted() {
                killed = Some("interrupted");
            } else if Instant::now() >= deadline {
                killed = Some("timed out");
            }
            if killed.is_some() {
                let _ = child.kill();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if let Some(why) = killed {
        return Err(format!(
            "{what} {why} after {:.0} s and was killed; stderr: {}",
            started.elapsed().as_secs_f64(),
            last_lines(&stderr, 5)
        ));
    }
    Ok(Finished { status, stdout, stderr })
}

/// The last `n` non-empty lines of `s`, joined with " | " (for one-line error messages).
pub fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Sleeps `d` in small steps, returning early (with an error) on interruption.
pub fn sleep_interruptible(d: Duration) -> Result<(), String> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        check_interrupted()?;
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
    }
    Ok(())
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// UTC time `secs` after the epoch split into (year, month, day, hour, minute, second).
pub fn utc_parts(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400) as u32;
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem / 3600, rem / 60 % 60, rem % 60)
}

/// `2024-05-01T12:34:56Z`, now.
pub fn utc_timestamp() -> String {
    utc_timestamp_of(now_secs())
}

/// `2024-05-01T12:34:56Z` for `secs` after the epoch.
pub fn utc_timestamp_of(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = utc_parts(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `20240501-123456`, now, for file names.
pub fn utc_file_stamp() -> String {
    let (y, mo, d, h, mi, s) = utc_parts(now_secs());
    format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}")
}

/// The names given to `flag` (all of them when none is named), without repeats and in the
/// canonical order of `all`, so runs compare line by line.
pub fn select_named<T: Copy + PartialEq>(
    flag: &str,
    only: &[String],
    all: impl IntoIterator<Item = T>,
    parse: impl Fn(&str) -> Option<T>,
    known: &str,
) -> Result<Vec<T>, String> {
    let all: Vec<T> = all.into_iter().collect();
    let mut chosen = Vec::new();
    for name in only.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let s = parse(name).ok_or_else(|| format!("{flag}: unknown name {name:?} (known: {known})"))?;
        if !chosen.contains(&s) {
            chosen.push(s);
        }
    }
    if chosen.is_empty() {
        chosen = all.clone();
    }
    chosen.sort_by_key(|s| all.iter().position(|x| x == s));
    Ok(chosen)
}

/// Write a bench's JSON document to `path` (pretty, trailing newline), creating its directory.
pub fn write_json(path: &std::path::Path, doc: &serde_json::Value) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(doc).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_skips_blank_lines() {
        assert_eq!(last_lines("a\n\nb\nc\n\n", 2), "b | c");
        assert_eq!(last_lines("", 3), "");
    }

    #[test]
    fn catching_turns_a_panic_into_an_error() {
        install_panic_hook();
        let r: Result<(), String> = catching(|| panic!("boom {}", 7));
        let e = r.unwrap_err();
        assert!(e.starts_with("boom 7"), "{e}");
        assert_eq!(catching(|| Ok::<_, String>(3)), Ok(3));
    }

    #[test]
    fn timestamps_look_right() {
        let t = utc_timestamp();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
        assert_eq!(utc_file_stamp().len(), 15);
        assert_eq!(utc_timestamp_of(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp_of(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp_of(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
