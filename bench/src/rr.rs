//! Request/response latency, TCP_RR style: one TCP connection (Nagle off), the client writes one
//! byte and waits for the server to echo it, many times over; every round trip is timed.

use cloudrack_tests::Netns;
use serde::Serialize;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::util::interrupted;

/// Round trips before timing starts (connection warm, caches and flows hot).
const WARMUP: u32 = 200;
/// A single round trip slower than this counts as a failure (the path is broken).
const STALL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, Serialize)]
pub struct RrReport {
    /// Timed round trips.
    pub count: u32,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
    pub max_us: f64,
    /// Round trips per second over the timed part.
    pub rate: f64,
}

/// `count` timed round trips from `client` to a responder on `ip:port` in `server`, stopping
/// early (with what was timed so far) after `time_cap`.
pub fn run(
    server: &Netns,
    client: &Netns,
    ip: Ipv4Addr,
    port: u16,
    count: u32,
    time_cap: Duration,
) -> Result<RrReport, String> {
    let listener = server
        .enter(move || TcpListener::bind(SocketAddr::from((ip, port))))
        .map_err(|e| format!("RR responder cannot bind {ip}:{port}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("RR responder: {e}"))?;
    let responder = std::thread::spawn(move || respond(listener));
    let result = client.enter(move || ping_pong(ip, port, count, time_cap));
    // The responder ends when the client closes (or after its accept deadline).
    let responder_result = responder
        .join()
        .unwrap_or_else(|_| Err("RR responder panicked".to_string()));
    let samples = result?;
    responder_result?;
    summarize(samples)
}

fn respond(listener: TcpListener) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut s = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline || interrupted() {
                    return Err("RR responder: no connection arrived".to_string());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(format!("RR responder accept: {e}")),
        }
    };
    s.set_nonblocking(false).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(STALL * 2)).map_err(|e| e.to_string())?;
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(0) => return Ok(()),
            Ok(_) => s.write_all(&b).map_err(|e| format!("RR responder write: {e}"))?,
            // The client gave up (it reports why); nothing to add here.
            Err(_) => return Ok(()),
        }
    }
}

fn ping_pong(ip: Ipv4Addr, port: u16, count: u32, time_cap: Duration) -> Result<Vec<u32>, String> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::from((ip, port)), STALL)
        .map_err(|e| format!("RR connect to {ip}:{port}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(STALL)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(STALL)).map_err(|e| e.to_string())?;
    let mut b = [0u8; 1];
    let mut one = |i: u32| -> Result<(), String> {
        s.write_all(&[i as u8])
            .map_err(|e| format!("RR write (round trip {i}): {e}"))?;
        s.read_exact(&mut b)
            .map_err(|e| format!("RR read (round trip {i}): {e}"))?;
        if b[0] != i as u8 {
            return Err(format!("RR reply out of step at round trip {i}"));
        }
        Ok(())
    };
    for i in 0..WARMUP {
        one(i)?;
    }
    let mut samples = Vec::with_capacity(count as usize);
    let started = Instant::now();
    for i in 0..count {
        if interrupted() {
            return Err("interrupted".to_string());
        }
        if started.elapsed() > time_cap {
            break;
        }
        let t = Instant::now();
        one(i)?;
        samples.push(t.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
    }
    Ok(samples)
}

fn summarize(mut ns: Vec<u32>) -> Result<RrReport, String> {
    if ns.is_empty() {
        return Err("no round trips timed".to_string());
    }
    let total: f64 = ns.iter().map(|&x| f64::from(x)).sum();
    ns.sort_unstable();
    let pct = |p: usize| f64::from(ns[(ns.len() * p / 100).min(ns.len() - 1)]) / 1000.0;
    Ok(RrReport {
        count: ns.len() as u32,
        p50_us: pct(50),
        p90_us: pct(90),
        p99_us: pct(99),
        mean_us: total / ns.len() as f64 / 1000.0,
        max_us: f64::from(*ns.last().expect("non-empty")) / 1000.0,
        rate: ns.len() as f64 / (total / 1e9),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<u32> = (1..=100).map(|x| x * 1000).collect();
        let r = summarize(v).unwrap();
        assert_eq!(r.count, 100);
        assert_eq!(r.p50_us, 51.0);
        assert_eq!(r.p99_us, 100.0);
        assert_eq!(r.max_us, 100.0);
        assert!((r.mean_us - 50.5).abs() < 1e-9);
        assert!(summarize(Vec::new()).is_err());
    }
}
