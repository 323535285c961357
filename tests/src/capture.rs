//! Packet captures with tcpdump inside a namespace, decoded with tshark.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::logs::{scratch_dir, TempDir};
use crate::netns::Netns;
use crate::process::Proc;
use crate::util::{checked_output, command, require_tool, sanitize_name};

/// A running `tcpdump -i IF -w FILE [FILTER]` inside a namespace. The file
/// is complete once [`stop`](Self::stop) returns; dropping the capture stops
/// it too.
#[derive(Debug)]
pub struct Capture {
    proc: Option<Proc>,
    file: PathBuf,
    _dir: TempDir,
}

impl Capture {
    /// Starts capturing on `ifname` in `ns` with BPF `filter` (may be empty)
    /// and waits until tcpdump is listening. Panics if it does not start.
    pub fn start(ns: &Netns, ifname: &str, filter: &str) -> Capture {
        require_tool("tcpdump");
        let dir = scratch_dir("capture");
        let file = dir
            .path()
            .join(format!("{}-{}.pcap", sanitize_name(ns.name()), sanitize_name(ifname)));
        let file_s = file.to_string_lossy().into_owned();
        // -Z root: Debian's tcpdump otherwise drops to user `tcpdump`, which
        // cannot write into our root-owned directory. --immediate-mode and
        // -U: every packet reaches the file before stop() returns.
        let mut argv = vec![
            "tcpdump",
            "-i",
            ifname,
            "-n",
            "-s",
            "0",
            "-U",
            "--immediate-mode",
            "-Z",
            "root",
            "-w",
            &file_s,
        ];
        if !filter.is_empty() {
            argv.push(filter);
        }
        let mut proc = ns.spawn_named(&format!("tcpdump-{ifname}"), &argv);
        proc.expect_log("listening on", Duration::from_secs(10));
        Capture {
            proc: Some(proc),
            file,
            _dir: dir,
        }
    }

    /// Stops tcpdump (after a short pause so in-flight packets are written)
    /// and returns the pcap file. Idempotent.
    pub fn stop(&mut self) -> &Path {
        if let Some(mut p) = self.proc.take() {
            std::thread::sleep(Duration::from_millis(300));
            p.stop();
        }
        &self.file
    }

    /// The pcap file (complete only after [`stop`](Self::stop)).
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// Stops the capture and decodes it with [`tshark_decode`].
    pub fn decode(&mut self, display_filter: &str, fields: &[&str]) -> String {
        let f = self.stop().to_path_buf();
        tshark_decode(&f, display_filter, fields)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop();
        }
    }
}

/// `tshark -r FILE -n [-Y DISPLAY_FILTER] -T fields -e F1 -e F2 ...`: one
/// line per matching packet, fields separated by tabs. Panics with tshark's
/// output if it fails.
pub fn tshark_decode(file: &Path, display_filter: &str, fields: &[&str]) -> String {
    require_tool("tshark");
    let file_s = file.to_string_lossy().into_owned();
    let mut argv: Vec<&str> = vec!["tshark", "-r", &file_s, "-n"];
    if !display_filter.is_empty() {
        argv.push("-Y");
        argv.push(display_filter);
    }
    argv.push("-T");
    argv.push("fields");
    for f in fields {
        argv.push("-e");
        argv.push(f);
    }
    checked_output(&mut command(&argv))
}

/// `tshark -r FILE -n [-Y DISPLAY_FILTER] -V`: the full dissection, for
/// debugging or free-text assertions.
pub fn tshark_verbose(file: &Path, display_filter: &str) -> String {
    require_tool("tshark");
    let file_s = file.to_string_lossy().into_owned();
    let mut argv: Vec<&str> = vec!["tshark", "-r", &file_s, "-n", "-V"];
    if !display_filter.is_empty() {
        argv.push("-Y");
        argv.push(display_filter);
    }
    checked_output(&mut command(&argv))
}

/// Parses a number as tshark prints it in `-T fields` output: decimal, or
/// hexadecimal with `0x` (e.g. `gre.key` prints as `0x00000005`).
pub fn tshark_num(field: &str) -> Option<u64> {
    let f = field.trim();
    match f.strip_prefix("0x").or_else(|| f.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => f.parse().ok(),
    }
}
