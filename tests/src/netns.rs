//! Named network namespaces that clean up after themselves, and link helpers.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::time::Duration;

use crate::process::Proc;
use crate::util::{
    checked_output, command, describe_failure, exec_quiet, output_of, render_argv, require_root, require_tool,
    sanitize_name, unique_tag, wait_until,
};

/// Where `ip netns` keeps its namespace handles.
pub const NETNS_RUN_DIR: &str = "/var/run/netns";

/// A network namespace `<prefix>-<tag>` created with `ip netns add`.
///
/// Dropping it kills every process still inside it (SIGTERM, then SIGKILL)
/// and deletes it, which also destroys every interface in it (and the peers
/// of its veth pairs, wherever they are).
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `<prefix>-<unique tag>` and brings its `lo` up. Panics unless
    /// run as root with `ip` installed.
    pub fn new(prefix: &str) -> Netns {
        require_root();
        require_tool("ip");
        sweep_leftovers();
        let prefix = sanitize_name(prefix);
        for _ in 0..8 {
            let name = format!("{prefix}-{}", unique_tag());
            let o = output_of(&mut command(&["ip", "netns", "add", &name]));
            if o.status.success() {
                mark_owned(&name);
                let ns = Netns { name };
                ns.ip(&["link", "set", "lo", "up"]);
                return ns;
            }
            let err = String::from_utf8_lossy(&o.stderr);
            if err.contains("File exists") || err.contains("already exists") {
                continue; // a leftover of an earlier run, or a tag collision
            }
            panic!("{}", describe_failure(&format!("ip netns add {name}"), &o));
        }
        panic!("could not find a free namespace name for prefix {prefix:?}");
    }

    /// The namespace's name (as `ip netns` knows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A [`Command`] running `argv` inside the namespace via
    /// `ip netns exec` (which `exec`s, so the child's pid is the program's).
    /// A bare `argv[0]` is resolved to an absolute path (panicking if it
    /// is not installed).
    pub fn command(&self, argv: &[&str]) -> Command {
        assert!(!argv.is_empty(), "empty command line");
        let prog = require_tool(argv[0]);
        let mut c = command(&["ip", "netns", "exec", &self.name]);
        c.arg(prog).args(&argv[1..]);
        c
    }

    /// Runs `argv` inside the namespace; returns its output whatever the
    /// exit status.
    pub fn exec(&self, argv: &[&str]) -> Output {
        output_of(&mut self.command(argv))
    }

    /// Runs `argv` inside the namespace; panics with stdout and stderr
    /// unless it succeeds. Returns stdout.
    pub fn run(&self, argv: &[&str]) -> String {
        let o = self.exec(argv);
        if !o.status.success() {
            panic!(
                "{}",
                describe_failure(&format!("[netns {}] {}", self.name, render_argv(argv)), &o)
            );
        }
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `ip -n <ns> ARGS...`, panicking on failure. Returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut c = command(&["ip", "-n", &self.name]);
        c.args(args);
        checked_output(&mut c)
    }

    /// Starts `argv` inside the namespace as a [`Proc`] named after the
    /// program.
    pub fn spawn(&self, argv: &[&str]) -> Proc {
        let name = argv
            .first()
            .map(|a| a.rsplit('/').next().unwrap_or(a))
            .unwrap_or("proc");
        self.spawn_named(name, argv)
    }

    /// Starts `argv` inside the namespace as a [`Proc`] called `name`.
    pub fn spawn_named(&self, name: &str, argv: &[&str]) -> Proc {
        Proc::start(name, self.command(argv))
    }

    /// Process ids of every process whose network namespace this is.
    pub fn pids(&self) -> Vec<i32> {
        match exec_quiet(&["ip", "netns", "pids", &self.name]) {
            Some(o) => String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect(),
            None => Vec::new(),
        }
    }

    /// Runs `f` on a fresh thread that has joined this namespace (only that
    /// thread: the namespace of the rest of the process is untouched).
    /// Sockets created by `f` stay in this namespace. A panic in `f` is
    /// propagated.
    pub fn enter<T, F>(&self, f: F) -> T
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        let path = format!("{NETNS_RUN_DIR}/{}", self.name);
        let file = File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                // SAFETY: setns on a valid namespace fd only changes the
                // network namespace of this (new, scoped) thread.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    panic!("setns into {path} failed: {}", std::io::Error::last_os_error());
                }
                f()
            });
            match h.join() {
                Ok(v) => v,
                Err(e) => std::panic::resume_unwind(e),
            }
        })
    }

    fn kill_all(&self, sig: i32) -> usize {
        let pids = self.pids();
        for &pid in &pids {
            if pid > 1 && pid as u32 != std::process::id() {
                // SAFETY: plain kill(2); at worst the pid has already exited.
                unsafe {
                    libc::kill(pid, sig);
                }
            }
        }
        pids.len()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.kill_all(libc::SIGTERM) > 0 {
            let gone = wait_until(Duration::from_secs(2), Duration::from_millis(20), || {
                self.pids().is_empty()
            });
            if !gone {
                self.kill_all(libc::SIGKILL);
                wait_until(Duration::from_secs(2), Duration::from_millis(20), || {
                    self.pids().is_empty()
                });
            }
        }
        match exec_quiet(&["ip", "netns", "del", &self.name]) {
            Some(o) if o.status.success() => {}
            Some(o) => eprintln!(
                "cloudrack-tests: warning: {}",
                describe_failure(&format!("ip netns del {}", self.name), &o)
            ),
            None => eprintln!("cloudrack-tests: warning: cannot run `ip netns del {}`", self.name),
        }
        let _ = std::fs::remove_file(owner_dir().join(&self.name));
    }
}

/// Where each namespace the harness made records the pid of the process that made it, so a
/// later run can remove what a killed run (SIGKILL, a timeout: no `Drop`) left behind.
fn owner_dir() -> std::path::PathBuf {
    std::path::PathBuf::from("/run/cloudrack-tests/netns")
}

fn mark_owned(name: &str) {
    let dir = owner_dir();
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join(name), std::process::id().to_string());
    }
}

/// Once per process: delete namespaces recorded by harness processes that no longer run.
fn sweep_leftovers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(entries) = std::fs::read_dir(owner_dir()) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid: Option<u32> = std::fs::read_to_string(e.path())
                .ok()
                .and_then(|s| s.trim().parse().ok());
            // A killed process stays a zombie until reaped: that counts as gone.
            let alive = pid.is_some_and(|p| {
                std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|st| {
                    st.rsplit(')')
                        .next()
                        .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
                })
            });
            if alive {
                continue;
            }
            let leftover = Netns { name: name.clone() };
            eprintln!("cloudrack-tests: removing namespace {name} left by a killed run (pid {pid:?})");
            drop(leftover);
        }
    });
}

/// Creates a veth pair directly between two namespaces (`name_a` in `a`,
/// `name_b` in `b`; it never appears in the root namespace) and brings both
/// ends up.
pub fn veth_into(a: &Netns, name_a: &str, b: &Netns, name_b: &str) {
    a.ip(&[
        "link",
        "add",
        name_a,
        "type",
        "veth",
        "peer",
        "name",
        name_b,
        "netns",
        b.name(),
    ]);
    link_up(a, name_a);
    link_up(b, name_b);
}

/// Sets an interface's MAC address.
pub fn set_mac(ns: &Netns, ifname: &str, mac: &str) {
    ns.ip(&["link", "set", "dev", ifname, "address", mac]);
}

/// Adds an address (`a.b.c.d/len`) to an interface.
pub fn add_addr(ns: &Netns, ifname: &str, ip_cidr: &str) {
    ns.ip(&["addr", "add", ip_cidr, "dev", ifname]);
}

/// Stops the namespace's bridges from passing frames through iptables (br_netfilter, built
/// into this machine's kernel, switches that on in every new namespace). A bridge standing in
/// for a physical switch should not filter, and a bridge under test should run the way a
/// dedicated VM host runs it. Does nothing where br_netfilter is not loaded.
pub fn bridge_netfilter_off(ns: &Netns) {
    let script = "for f in /proc/sys/net/bridge/bridge-nf-call-*; do [ -e \"$f\" ] && echo 0 > \"$f\"; done; true";
    let out = ns.exec(&["sh", "-c", script]);
    assert!(
        out.status.success(),
        "bridge_netfilter_off: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Brings an interface up.
pub fn link_up(ns: &Netns, ifname: &str) {
    ns.ip(&["link", "set", "dev", ifname, "up"]);
}

/// Sets an interface's MTU.
pub fn set_mtu(ns: &Netns, ifname: &str, mtu: u32) {
    ns.ip(&["link", "set", "dev", ifname, "mtu", &mtu.to_string()]);
}

/// The MAC address of an interface, lower-case `aa:bb:...`.
pub fn get_mac(ns: &Netns, ifname: &str) -> String {
    let out = ns.ip(&["-o", "link", "show", "dev", ifname]);
    let mut it = out.split_whitespace();
    while let Some(w) = it.next() {
        if w == "link/ether" {
            if let Some(mac) = it.next() {
                return mac.to_ascii_lowercase();
            }
        }
    }
    panic!("no MAC address for {ifname} in netns {}: {out}", ns.name());
}

/// Names of the interfaces in a namespace (without `@peer` suffixes).
pub fn link_names(ns: &Netns) -> Vec<String> {
    parse_link_names(&ns.ip(&["-o", "link", "show"]))
}

/// Names of the interfaces in the root namespace.
pub fn root_link_names() -> Vec<String> {
    parse_link_names(&checked_output(&mut command(&["ip", "-o", "link", "show"])))
}

fn parse_link_names(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

/// Names listed by `ip netns list`.
pub fn netns_list() -> Vec<String> {
    checked_output(&mut command(&["ip", "netns", "list"]))
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}
