//! Small process-wide helpers: unique tags, tool lookup, running commands,
//! polling, locating the project's binaries.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static TAG_COUNTER: AtomicU32 = AtomicU32::new(0);

const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// `n` in lower-case base 36, exactly `width` digits (higher digits are
/// dropped, i.e. the value is taken modulo 36^width).
pub fn base36(mut n: u64, width: usize) -> String {
    let mut digits = vec![b'0'; width];
    for slot in digits.iter_mut().rev() {
        *slot = BASE36[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8(digits).expect("base36 digits are ASCII")
}

/// A short tag, unique within this process and (very nearly always) across
/// concurrently running processes: 4 base-36 digits of the pid followed by
/// 2 base-36 digits of a per-process counter, e.g. `"0rs401"`.
///
/// Six characters leave room for a prefix inside the 15-character limit of
/// Linux interface names. Namespace creation additionally retries with a new
/// tag if the name happens to exist already.
pub fn unique_tag() -> String {
    let pid = u64::from(std::process::id());
    let n = u64::from(TAG_COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{}{}", base36(pid, 4), base36(n, 2))
}

/// Panics unless the process runs as root (needed for namespaces).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        panic!(
            "this test needs root (it creates network namespaces, veth pairs and bridges), \
             but runs with euid {euid}. Run the tests as root, e.g. `sudo -E cargo test -p cloudrack-tests`. \
             Refusing to pass silently."
        );
    }
}

fn package_hint(name: &str) -> &'static str {
    match name {
        "ip" | "bridge" => "iproute2",
        "tcpdump" => "tcpdump",
        "tshark" => "tshark",
        "ethtool" => "ethtool",
        "iperf3" => "iperf3",
        "ovsdb-server" | "ovs-vswitchd" | "ovs-appctl" => "openvswitch-switch",
        "ovsdb-tool" | "ovs-vsctl" | "ovs-ofctl" => "openvswitch-common",
        "ping" => "iputils-ping",
        _ => "the package providing it",
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(p) {
        Ok(m) => m.is_file() && m.permissions().mode() & 0o111 != 0,
        Err(_) => false,
    }
}

fn tool_cache() -> &'static Mutex<HashMap<String, Option<PathBuf>>> {
    static CACHE: std::sync::OnceLock<Mutex<HashMap<String, Option<PathBuf>>>> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Looks a tool up on `PATH`, then in the usual sbin/bin directories (root's
/// `PATH` in CI does not always contain `/usr/sbin`). Returns its absolute
/// path, or `None`.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    let mut cache = tool_cache().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(hit) = cache.get(name) {
        return hit.clone();
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        dirs.push(PathBuf::from(d));
    }
    let found = dirs.into_iter().map(|d| d.join(name)).find(|p| is_executable(p));
    cache.insert(name.to_string(), found.clone());
    found
}

/// Panics with a clear message if `name` is not installed; returns its path.
pub fn require_tool(name: &str) -> PathBuf {
    match find_tool(name) {
        Some(p) => p,
        None => panic!(
            "required tool `{name}` not found on PATH (nor in /usr/sbin, /sbin, ...): \
             install {} — this test cannot run without it and refuses to pass silently",
            package_hint(name)
        ),
    }
}

/// Resolves `argv[0]` to an absolute path (panicking if it is missing) and
/// returns a [`Command`] for the whole argv with stdin closed.
pub fn command(argv: &[&str]) -> Command {
    assert!(!argv.is_empty(), "empty command line");
    let mut c = Command::new(require_tool(argv[0]));
    c.args(&argv[1..]).stdin(Stdio::null());
    c
}

/// Shell-like rendering of a command line, for messages.
pub fn render_argv<S: AsRef<OsStr>>(argv: &[S]) -> String {
    argv.iter()
        .map(|a| {
            let s = a.as_ref().to_string_lossy();
            if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
                format!("'{}'", s.replace('\'', "'\\''"))
            } else {
                s.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn render_command(c: &Command) -> String {
    let mut v: Vec<&OsStr> = vec![c.get_program()];
    v.extend(c.get_args());
    render_argv(&v)
}

/// Runs `c` to completion, capturing stdout and stderr. Panics only if the
/// program cannot be started at all.
pub fn output_of(c: &mut Command) -> Output {
    c.stdin(Stdio::null());
    match c.output() {
        Ok(o) => o,
        Err(e) => panic!("cannot start `{}`: {e}", render_command(c)),
    }
}

/// Runs `c` and panics with its exit status, stdout and stderr unless it
/// succeeds; returns its stdout.
pub fn checked_output(c: &mut Command) -> String {
    let o = output_of(c);
    if !o.status.success() {
        panic!("{}", describe_failure(&render_command(c), &o));
    }
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A readable description of a failed command.
pub fn describe_failure(what: &str, o: &Output) -> String {
    format!(
        "command failed ({}): `{}`\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        what,
        String::from_utf8_lossy(&o.stdout).trim_end(),
        String::from_utf8_lossy(&o.stderr).trim_end()
    )
}

/// Runs a command in the current (root) namespace and returns its output,
/// whatever its exit status.
pub fn exec_cmd(argv: &[&str]) -> Output {
    output_of(&mut command(argv))
}

/// Runs a command in the current (root) namespace; panics with its output
/// unless it succeeds. Returns stdout.
pub fn run_cmd(argv: &[&str]) -> String {
    checked_output(&mut command(argv))
}

/// Like [`exec_cmd`] but never panics (for `Drop` implementations); returns
/// `None` if the program could not be started.
pub(crate) fn exec_quiet(argv: &[&str]) -> Option<Output> {
    let prog = find_tool(argv[0])?;
    Command::new(prog).args(&argv[1..]).stdin(Stdio::null()).output().ok()
}

/// Calls `f` every `interval` until it returns true (→ `true`) or `timeout`
/// has passed (→ `false`). `f` is always called at least once, and once more
/// at the deadline.
pub fn wait_until(timeout: Duration, interval: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(interval.min(deadline - now));
        if Instant::now() >= deadline {
            return f();
        }
    }
}

/// The workspace root (the parent of this package's manifest directory).
pub fn workspace_dir() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ws = here.parent().unwrap_or(here);
    ws.canonicalize().unwrap_or_else(|_| ws.to_path_buf())
}

/// Locates one of the project's binaries (`cloudrack-switch`,
/// `cloudrack-controller`, `cloudrack-ctl`, ...):
/// `$CLOUDRACK_BIN_DIR/NAME` if that variable is set, else
/// `<workspace>/target/release/NAME`, else `<workspace>/target/debug/NAME`
/// (`$CARGO_TARGET_DIR` replaces `<workspace>/target` when set).
/// Panics if none exists.
pub fn bin_path(name: &str) -> PathBuf {
    let mut tried = Vec::new();
    if let Some(dir) = std::env::var_os("CLOUDRACK_BIN_DIR") {
        let p = PathBuf::from(dir).join(name);
        if is_executable(&p) {
            return p;
        }
        panic!(
            "binary `{name}` not found in CLOUDRACK_BIN_DIR ({}): build the workspace first: cargo build --release",
            p.display()
        );
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => {
            let t = PathBuf::from(t);
            if t.is_absolute() {
                t
            } else {
                workspace_dir().join(t)
            }
        }
        None => workspace_dir().join("target"),
    };
    for profile in ["release", "debug"] {
        let p = target.join(profile).join(name);
        if is_executable(&p) {
            refuse_stale(&p, name);
            return p;
        }
        tried.push(p.display().to_string());
    }
    panic!(
        "binary `{name}` not found (tried {}): build the workspace first: cargo build --release",
        tried.join(", ")
    );
}

/// The files cargo's dep-info (`NAME.d` beside the binary) says the binary was built from:
/// the same list cargo checks to decide whether to rebuild it.
fn dep_info_files(bin: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(bin.with_extension("d")) else {
        return Vec::new();
    };
    // One make rule, "target: dep dep ...", with spaces inside names escaped as "\ ".
    let Some((_, deps)) = text.lines().next().and_then(|l| l.split_once(": ")) else {
        return Vec::new();
    };
    let mut files = Vec::new();
    let mut cur = String::new();
    let mut chars = deps.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&' ') => cur.push(chars.next().unwrap_or(' ')),
            ' ' => {
                if !cur.is_empty() {
                    files.push(PathBuf::from(std::mem::take(&mut cur)));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        files.push(PathBuf::from(cur));
    }
    files
}

/// The newest file the binary at `bin` was built from, if it is newer than the binary, and by
/// how much.
fn stale_source(bin: &Path) -> Option<(PathBuf, Duration)> {
    let built = std::fs::metadata(bin).and_then(|m| m.modified()).ok()?;
    let (changed, file) = dep_info_files(bin)
        .into_iter()
        .filter_map(|f| Some((std::fs::metadata(&f).and_then(|m| m.modified()).ok()?, f)))
        .max_by_key(|(t, _)| *t)?;
    (changed > built).then(|| (file, changed.duration_since(built).unwrap_or_default()))
}

/// Panics when a source file of binary `name` is newer than the binary at `path`: a test
/// would otherwise exercise yesterday's code and pass or fail for the wrong reason (`cargo
/// test -p cloudrack-tests` does not rebuild the binaries the tests start).
/// `CLOUDRACK_ALLOW_STALE=1` skips the check.
fn refuse_stale(path: &Path, name: &str) {
    if std::env::var_os("CLOUDRACK_ALLOW_STALE").is_some_and(|v| !v.is_empty() && v != "0") {
        return;
    }
    if let Some((file, age)) = stale_source(path) {
        panic!(
            "binary `{name}` ({}) is older than its source {} (changed {:.0} s after the build): \
             run `cargo build --release --workspace` first (scripts/test.sh does), or set \
             CLOUDRACK_ALLOW_STALE=1 to run the old binary anyway",
            path.display(),
            file.display(),
            age.as_secs_f64()
        );
    }
}

/// Keeps only characters that are safe in namespace, file and interface
/// names (`[A-Za-z0-9_-]`); others become `_`.
pub fn sanitize_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, File, FileTimes};
    use std::time::SystemTime;

    fn touch(p: &Path, t: SystemTime) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let f = File::create(p).unwrap();
        f.set_times(FileTimes::new().set_modified(t)).unwrap();
    }

    #[test]
    fn a_binary_older_than_a_file_it_was_built_from_is_stale() {
        let dir = std::env::temp_dir().join(format!("cr-stale-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let t0 = SystemTime::now() - Duration::from_secs(3600);
        let bin = dir.join("release/cloudrack-switch");
        let (a, b) = (dir.join("src/lib.rs"), dir.join("src dir/x.rs"));
        touch(&a, t0);
        touch(&b, t0);
        touch(&dir.join("src/unused.rs"), t0 + Duration::from_secs(60));
        touch(&bin, t0 + Duration::from_secs(1));
        // Without dep-info nothing is known, so nothing is called stale.
        assert_eq!(stale_source(&bin), None);
        let escaped = b.display().to_string().replace(' ', "\\ ");
        fs::write(
            bin.with_extension("d"),
            format!("{}: {} {escaped}\n", bin.display(), a.display()),
        )
        .unwrap();
        assert_eq!(dep_info_files(&bin), vec![a.clone(), b.clone()]);
        // A file the binary was not built from does not count.
        assert_eq!(stale_source(&bin), None);
        touch(&b, t0 + Duration::from_secs(60));
        assert_eq!(stale_source(&bin), Some((b, Duration::from_secs(59))));
        fs::remove_dir_all(&dir).unwrap();
    }
}
