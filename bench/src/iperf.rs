//! iperf3 between two namespaces: a one-shot server (`iperf3 -s -1`) in one, the client with
//! `-J` in the other, its JSON report parsed.

use cloudrack_tests::{Netns, Proc};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::util::{last_lines, run_with_timeout};

/// What the client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// TCP with this many parallel streams.
    Tcp { streams: u32 },
    /// UDP datagrams with a payload of `len` bytes, as fast as the sender can (`-b 0`).
    Udp { len: u32 },
}

/// A one-shot iperf3 server; killed (if still running) when dropped.
pub struct Server {
    proc: Proc,
}

impl Server {
    /// Starts `iperf3 -s -1 -p PORT` in `ns` and waits until it listens.
    pub fn start(ns: &Netns, port: u16) -> Result<Server, String> {
        let p = port.to_string();
        let mut proc = ns.spawn_named("iperf3-server", &["iperf3", "-s", "-1", "-p", &p, "--forceflush"]);
        if !proc.wait_for_log("Server listening", Duration::from_secs(10)) {
            return Err(format!("iperf3 server did not start: {}", last_lines(&proc.logs(), 5)));
        }
        Ok(Server { proc })
    }

    /// Its log so far (for error messages).
    pub fn log_tail(&self) -> String {
        last_lines(&self.proc.logs(), 5)
    }
}

/// Runs the client in `ns` against `ip:port` for `seconds`; returns its JSON report, or the
/// error iperf3 reported.
pub fn client(ns: &Netns, ip: Ipv4Addr, port: u16, load: Load, seconds: u32) -> Result<Value, String> {
    let ip_s = ip.to_string();
    let port_s = port.to_string();
    let secs = seconds.to_string();
    let mut argv: Vec<String> = [
        "iperf3",
        "-c",
        &ip_s,
        "-p",
        &port_s,
        "-t",
        &secs,
        "-J",
        "--connect-timeout",
        "5000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    match load {
        Load::Tcp { streams } => {
            if streams > 1 {
                argv.extend(["-P".to_string(), streams.to_string()]);
            }
        }
        Load::Udp { len } => {
            argv.extend(["-u", "-b", "0", "-l"].map(String::from));
            argv.push(len.to_string());
        }
    }
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let cmd = ns.command(&refs);
    let timeout = Duration::from_secs(u64::from(seconds) + 30);
    let out = run_with_timeout("iperf3 client", cmd, timeout)?;
    let v: Value = serde_json::from_str(&out.stdout).map_err(|e| {
        format!(
            "iperf3 client (exit {}) printed no JSON ({e}): {} {}",
            out.status,
            last_lines(&out.stdout, 3),
            last_lines(&out.stderr, 3)
        )
    })?;
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        return Err(format!("iperf3: {err}"));
    }
    if !out.status.success() {
        return Err(format!(
            "iperf3 client exited with {}: {}",
            out.status,
            last_lines(&out.stderr, 3)
        ));
    }
    Ok(v)
}

/// TCP figures from a client report.
#[derive(Debug, Clone, Copy)]
pub struct TcpReport {
    /// Receiver's throughput, bits per second.
    pub bits_per_second: f64,
    /// Bytes the receiver got.
    pub bytes: f64,
    /// Sender's retransmitted segments.
    pub retransmits: Option<u64>,
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_f64()
}

pub fn parse_tcp(v: &Value) -> Result<TcpReport, String> {
    let missing = || format!("iperf3 JSON lacks end.sum_received: {}", short(v));
    let bps = num(v, &["end", "sum_received", "bits_per_second"]).ok_or_else(missing)?;
    let bytes = num(v, &["end", "sum_received", "bytes"]).ok_or_else(missing)?;
    let retransmits = v["end"]["sum_sent"]["retransmits"].as_u64();
    Ok(TcpReport {
        bits_per_second: bps,
        bytes,
        retransmits,
    })
}

/// UDP figures from a client report (the receiver's side, which the client fetches from the
/// server at the end).
#[derive(Debug, Clone, Copy)]
pub struct UdpReport {
    /// Datagrams the sender sent.
    pub sent: f64,
    /// Datagrams the receiver got (bytes received / payload length).
    pub delivered: f64,
    pub seconds: f64,
    pub lost_percent: f64,
    /// Payload bytes the receiver got.
    pub bytes: f64,
}

pub fn parse_udp(v: &Value, len: u32) -> Result<UdpReport, String> {
    let missing = || format!("iperf3 JSON lacks end.sum_received: {}", short(v));
    let bytes = num(v, &["end", "sum_received", "bytes"]).ok_or_else(missing)?;
    let seconds = num(v, &["end", "sum_received", "seconds"]).ok_or_else(missing)?;
    let lost_percent = num(v, &["end", "sum_received", "lost_percent"]).unwrap_or(f64::NAN);
    let sent = num(v, &["end", "sum_sent", "packets"]).unwrap_or(f64::NAN);
    if seconds <= 0.0 {
        return Err(format!("iperf3 receiver ran for {seconds} s"));
    }
    Ok(UdpReport {
        sent,
        delivered: bytes / f64::from(len.max(1)),
        seconds,
        lost_percent,
        bytes,
    })
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    s.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_and_udp_reports() {
        let tcp = serde_json::json!({"end": {
            "sum_sent": {"bytes": 2.0e9, "retransmits": 12},
            "sum_received": {"bytes": 1.25e9, "seconds": 10.0, "bits_per_second": 1.0e9}}});
        let t = parse_tcp(&tcp).unwrap();
        assert_eq!(t.bits_per_second, 1.0e9);
        assert_eq!(t.retransmits, Some(12));
        let udp = serde_json::json!({"end": {
            "sum_sent": {"packets": 1000},
            "sum_received": {"bytes": 6400, "seconds": 2.0, "lost_percent": 90.0, "packets": 1000}}});
        let u = parse_udp(&udp, 64).unwrap();
        assert_eq!(u.delivered, 100.0);
        assert_eq!(u.sent, 1000.0);
        assert!(parse_tcp(&serde_json::json!({})).is_err());
    }
}
