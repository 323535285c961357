//! Real QEMU guests in host namespaces, driven through `scripts/vm/cloudrack-vm`: the guest
//! image (built by `scripts/guest/build-guest.sh` when needed), booting a VM on a tap that QEMU
//! creates in a host namespace, running commands in the guest over its serial agent, live
//! migration between host namespaces, and a [`QemuVm`] guard that kills QEMU on drop (QEMU
//! daemonizes, so it is no child of ours and no [`Proc`](crate::Proc) would reap it).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::logs::{register_log, scratch_dir, TempDir};
use crate::netns::Netns;
use crate::util::{command, describe_failure, find_tool, output_of, render_argv, require_tool, workspace_dir};

/// The `cloudrack-vm` helper script.
pub fn cloudrack_vm_path() -> PathBuf {
    workspace_dir().join("scripts/vm/cloudrack-vm")
}

/// Where the guest image lives: `$CLOUDRACK_CACHE/guest` (default `/var/cache/cloudrack/guest`).
pub fn guest_dir() -> PathBuf {
    let cache = std::env::var_os("CLOUDRACK_CACHE").unwrap_or_else(|| "/var/cache/cloudrack".into());
    PathBuf::from(cache).join("guest")
}

/// Panics with a clear message unless QEMU (`qemu-system-x86_64`, or `$CLOUDRACK_QEMU`) and
/// python3 (for `cloudrack-vm`) are installed. Returns QEMU's path.
pub fn require_qemu() -> PathBuf {
    let qemu = std::env::var("CLOUDRACK_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".to_string());
    let Some(path) = find_tool(&qemu) else {
        panic!(
            "`{qemu}` not found: this test boots real QEMU VMs and cannot run without it. \
             Install it with `apt-get install qemu-system-x86` (scripts/test.sh does). \
             Refusing to pass silently."
        );
    };
    require_tool("python3");
    path
}

/// Makes sure the guest kernel and initramfs exist and are current by running
/// `scripts/guest/build-guest.sh` (idempotent: about 1.5 s when nothing changed). Panics with
/// its output if it fails. Returns the guest directory.
pub fn ensure_guest_image() -> PathBuf {
    let script = workspace_dir().join("scripts/guest/build-guest.sh");
    let started = Instant::now();
    let o = output_of(&mut command(&[script.to_str().unwrap()]));
    if !o.status.success() {
        panic!("{}", describe_failure(&script.display().to_string(), &o));
    }
    let dir = guest_dir();
    for f in ["vmlinuz", "initramfs.cpio.gz"] {
        assert!(
            dir.join(f).is_file(),
            "build-guest.sh succeeded but {} is missing",
            dir.join(f).display()
        );
    }
    println!(
        "guest image ready in {:.1} s ({})",
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&o.stderr).trim().lines().last().unwrap_or("")
    );
    dir
}

/// How to boot a guest.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// VM name (guest hostname), letters, digits, `_ . -`.
    pub name: String,
    /// Guest NIC MAC.
    pub mac: String,
    /// Guest IPv4 address with prefix length.
    pub ip_cidr: String,
    /// Guest NIC MTU (`None`: 1500).
    pub mtu: Option<u32>,
    /// Guest RAM in MB.
    pub mem_mb: u32,
}

impl VmSpec {
    /// A 256 MB guest with `mtu`.
    pub fn new(name: &str, mac: &str, ip_cidr: &str, mtu: Option<u32>) -> VmSpec {
        VmSpec {
            name: name.to_string(),
            mac: mac.to_ascii_lowercase(),
            ip_cidr: ip_cidr.to_string(),
            mtu,
            mem_mb: 256,
        }
    }

    /// The address without prefix length.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip_cidr
            .split('/')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad VM address {:?}", self.ip_cidr))
    }
}

/// What a command run in the guest returned.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    /// The guest command's exit code (124: no reply in time; 1 also when `cloudrack-vm` failed).
    pub code: i32,
    /// Its stdout and stderr, merged.
    pub stdout: String,
    /// `cloudrack-vm`'s own messages.
    pub stderr: String,
}

impl GuestOutput {
    /// Whether the command exited with 0.
    pub fn ok(&self) -> bool {
        self.code == 0
    }
}

/// A QEMU VM (TCG, 1 vCPU) running daemonized in a host namespace, with its tap created by
/// QEMU in that namespace and set up (attach it to a switch yourself). Dropping it quits QEMU
/// (`cloudrack-vm stop`: QMP quit, then SIGTERM, SIGKILL) and makes sure its process is gone.
#[derive(Debug)]
pub struct QemuVm {
    /// How it was booted.
    pub spec: VmSpec,
    /// The host namespace QEMU runs in.
    pub netns: String,
    /// The tap's name in that namespace.
    pub tap: String,
    /// The run directory (sockets, `console.log`, `qemu.log`, `vm.json`).
    pub dir: PathBuf,
    /// QEMU's pid.
    pub pid: i32,
    /// What `cloudrack-vm start` printed.
    pub info: serde_json::Value,
    stopped: bool,
    _dir: TempDir,
}

fn run_vm_tool(args: &[&str]) -> std::process::Output {
    let script = cloudrack_vm_path();
    let mut argv = vec!["python3", script.to_str().unwrap()];
    argv.extend_from_slice(args);
    output_of(&mut command(&argv))
}

fn run_vm_tool_checked(args: &[&str]) -> String {
    let o = run_vm_tool(args);
    if !o.status.success() {
        panic!(
            "{}",
            describe_failure(&format!("cloudrack-vm {}", render_argv(args)), &o)
        );
    }
    String::from_utf8_lossy(&o.stdout).into_owned()
}

impl QemuVm {
    /// Boots `spec` in `ns` on tap `tap` (at most 15 characters). With `incoming`
    /// (`tcp:IP:PORT`), starts a live-migration destination listening there instead. Returns
    /// as soon as QEMU runs; see [`wait_ready`](Self::wait_ready).
    pub fn start(ns: &Netns, tap: &str, spec: &VmSpec, incoming: Option<&str>) -> QemuVm {
        require_qemu();
        let label = if incoming.is_some() { "in" } else { "vm" };
        let dir = scratch_dir(&format!("{label}-{}", spec.name));
        let path = dir.path().to_path_buf();
        let mem = spec.mem_mb.to_string();
        let mtu = spec.mtu.map(|m| m.to_string());
        let mut args = vec![
            "start",
            "--name",
            spec.name.as_str(),
            "--netns",
            ns.name(),
            "--tap",
            tap,
            "--mac",
            spec.mac.as_str(),
            "--ip",
            spec.ip_cidr.as_str(),
            "--mem",
            mem.as_str(),
            "--smp",
            "1",
            "--accel",
            "tcg",
            "--dir",
            path.to_str().unwrap(),
        ];
        if let Some(m) = &mtu {
            args.extend_from_slice(&["--mtu", m]);
        }
        if let Some(uri) = incoming {
            args.extend_from_slice(&["--incoming", uri]);
        }
        let what = format!(
            "{} ({}{})",
            spec.name,
            ns.name(),
            if incoming.is_some() { ", incoming" } else { "" }
        );
        register_log(&format!("QEMU console of {what}"), &path.join("console.log"));
        register_log(&format!("QEMU messages of {what}"), &path.join("qemu.log"));
        let o = run_vm_tool(&args);
        if !o.status.success() {
            // QEMU may have started before a later step failed; `stop` finds it by its pidfile.
            let _ = run_vm_tool(&["stop", "--dir", path.to_str().unwrap(), "--timeout", "2"]);
            panic!(
                "{}",
                describe_failure(&format!("cloudrack-vm {}", render_argv(&args)), &o)
            );
        }
        let info: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("cloudrack-vm start printed no JSON ({e}): {:?}", o.stdout));
        let pid = info["pid"].as_i64().unwrap_or(-1) as i32;
        let vm = QemuVm {
            spec: spec.clone(),
            netns: ns.name().to_string(),
            tap: tap.to_string(),
            dir: path,
            pid,
            info,
            stopped: false,
            _dir: dir,
        };
        assert!(
            vm.process_alive(),
            "QEMU of {what} is not running after start (pid {pid})"
        );
        vm
    }

    fn dir_str(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    /// Whether QEMU's process (this VM's, checked by its command line) is alive.
    pub fn process_alive(&self) -> bool {
        qemu_alive(self.pid, &self.dir)
    }

    /// Waits until the guest agent answers; returns how long that took. Panics with the console's
    /// tail on timeout.
    pub fn wait_ready(&self, timeout: Duration) -> Duration {
        let started = Instant::now();
        let t = timeout.as_secs_f64().to_string();
        let o = run_vm_tool(&["wait-ready", "--dir", self.dir_str(), "--timeout", &t]);
        if !o.status.success() {
            panic!(
                "VM {} did not become ready within {timeout:?}: {}\nconsole tail:\n{}",
                self.spec.name,
                describe_failure("cloudrack-vm wait-ready", &o),
                crate::tail_file(&self.dir.join("console.log"), 30)
            );
        }
        started.elapsed()
    }

    /// Runs `script` (a shell command line) in the guest; the guest kills it after `timeout`.
    pub fn exec(&self, script: &str, timeout: Duration) -> GuestOutput {
        let t = format!("{}", timeout.as_secs().max(1));
        let o = run_vm_tool(&["exec", "--dir", self.dir_str(), "--timeout", &t, "--", script]);
        GuestOutput {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Like [`exec`](Self::exec) but panics unless the command exits with 0; returns its output.
    pub fn run(&self, script: &str, timeout: Duration) -> String {
        let o = self.exec(script, timeout);
        if !o.ok() {
            panic!(
                "in VM {}: `{script}` exited with {}\n--- output ---\n{}\n--- cloudrack-vm ---\n{}",
                self.spec.name,
                o.code,
                o.stdout.trim_end(),
                o.stderr.trim_end()
            );
        }
        o.stdout
    }

    /// Quits QEMU (QMP quit, then SIGTERM, SIGKILL) and checks that it is gone.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let _ = run_vm_tool(&["stop", "--dir", self.dir_str(), "--timeout", "3"]);
        if self.process_alive() {
            // SAFETY: plain kill(2) of a pid whose command line we just checked is this VM's QEMU.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
            }
            crate::wait_until(Duration::from_secs(3), Duration::from_millis(20), || {
                !self.process_alive()
            });
        }
        if self.process_alive() {
            eprintln!(
                "cloudrack-tests: warning: QEMU pid {} of VM {} survived SIGKILL",
                self.pid, self.spec.name
            );
        }
    }
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether `pid` is alive and is the QEMU whose run directory is `dir` (never signal anything
/// else: the pid may have been recycled).
fn qemu_alive(pid: i32, dir: &Path) -> bool {
    if pid <= 0 {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    // A zombie has an empty command line: it is dead (and not our child to reap).
    let qmp = dir.join("qmp.sock");
    let needle = qmp.to_string_lossy();
    let text = String::from_utf8_lossy(&cmdline);
    text.contains("qemu") && text.contains(needle.as_ref())
}

/// Live-migrates `src` to `dst` (started with [`QemuVm::start`] and `incoming = uri`) with
/// `cloudrack-vm migrate --dst-dir` plus `extra` arguments; panics unless it completed. Returns
/// its JSON: `total_time_ms`, `downtime_ms` (QEMU's source-side figure), `pause_ms` (the
/// destination's RESUME minus the source's STOP, the VM's true pause), `events`, ...
pub fn migrate(src: &QemuVm, dst: &QemuVm, uri: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "migrate",
        "--src-dir",
        src.dir_str(),
        "--dst-dir",
        dst.dir_str(),
        "--dst-uri",
        uri,
        "--timeout",
        "120",
    ];
    args.extend_from_slice(extra);
    let out = run_vm_tool_checked(&args);
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("cloudrack-vm migrate printed no JSON ({e}): {out}"));
    assert_eq!(v["status"], "completed", "migration did not complete: {v}");
    v
}
