//! `cloudrack-bench lossy-wan`: TCP between VMs on two hosts across a routed WAN that loses
//! packets, Cloud Rack side by side with the kernel (bridges + VXLAN). See bench/README.md.
//!
//! Each system gets two hosts in subnets of their own behind a router namespace with a tc
//! rate limit (TBF) on its ports; the hosts' WAN links segment in software, so the router
//! forwards, limits and drops wire-sized packets. For each loss rate, the router drops that
//! share of what it forwards at random (nftables `numgen random`), both ways, and iperf3 runs
//! one TCP stream from the client VM to the server VM. Systems take turns per loss rate and
//! round, so load from elsewhere spreads over all of them.

use clap::Args;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::iperf::{self, Load};
use crate::systems::{Placement, System, Testbed, TestbedOptions};
use crate::util::{catching, interrupted, sleep_interruptible, utc_timestamp};

#[derive(Args)]
pub struct LossyArgs {
    /// Loss rates to measure, percent of the packets the router forwards, comma-separated.
    #[arg(long, value_name = "PERCENTS", value_delimiter = ',', default_values_t = vec![0.0, 0.1, 1.0])]
    loss: Vec<f64>,
    /// The router's rate limit on each of its ports (tc's syntax).
    #[arg(long, default_value = "1gbit")]
    rate: String,
    /// Seconds per iperf3 run.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    duration: u32,
    /// Measure every loss rate this many times; the table shows medians.
    #[arg(long, value_name = "N", default_value_t = 3)]
    rounds: u32,
    /// MTU of every WAN link, hosts' and router's (VMs keep 1500).
    #[arg(long, value_name = "BYTES", default_value_t = 1600)]
    wan_mtu: u32,
    /// Systems, comma-separated: cloudrack, kernel.
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    only: Vec<String>,
    /// Datapath worker threads per cloudrack-switch (default: the switch's own default).
    #[arg(long, value_name = "N")]
    workers: Option<u32>,
    /// Where to write the JSON results (default: bench/results/lossy-wan-<date>.json).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// One iperf3 run.
struct Sample {
    system: System,
    loss: f64,
    round: u32,
    outcome: Result<Value, String>,
}

pub fn run(a: LossyArgs) -> Result<i32, String> {
    let systems = crate::util::select_named(
        "--only",
        &a.only,
        [System::Cloudrack, System::Kernel],
        System::parse,
        "cloudrack, kernel",
    )?;
    if a.loss.is_empty() || a.loss.iter().any(|l| !(0.0..=50.0).contains(l)) {
        return Err("--loss takes percentages from 0 to 50".into());
    }
    if !(1..=600).contains(&a.duration) || !(1..=20).contains(&a.rounds) {
        return Err("--duration must be 1..=600 and --rounds 1..=20".into());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root: it creates network namespaces".into());
    }
    for t in ["ip", "iperf3", "tc", "nft", "ethtool"] {
        if cloudrack_tests::find_tool(t).is_none() {
            return Err(format!("`{t}` is not installed: run scripts/install-deps.sh"));
        }
    }
    let json_path = a.json.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("results")
            .join(format!("lossy-wan-{}.json", crate::util::utc_file_stamp()))
    });
    let opts = TestbedOptions {
        wan_mtu: a.wan_mtu,
        workers: a.workers,
        routed_rate: Some(a.rate.clone()),
    };
    let started = utc_timestamp();
    let load_before = crate::loadavg();
    let t_run = Instant::now();
    let mut beds: Vec<(System, Result<Testbed, String>)> = Vec::new();
    for &sys in &systems {
        eprintln!(
            "== {}: setting up on a routed WAN ({} per router port)",
            sys.name(),
            a.rate
        );
        beds.push((sys, catching(|| Ok(Testbed::setup(sys, &opts)))));
    }
    let mut samples = Vec::new();
    let total = a.rounds as usize * a.loss.len() * systems.len();
    let mut port = 5301u16;
    'rounds: for round in 1..=a.rounds {
        for &loss in &a.loss {
            for (sys, bed) in beds.iter_mut() {
                if interrupted() {
                    break 'rounds;
                }
                eprint!(
                    "[{}/{total}] {} at {loss} % loss (round {round}/{}) ... ",
                    samples.len() + 1,
                    sys.name(),
                    a.rounds
                );
                let outcome = match bed {
                    Err(e) => Err(format!("setup failed: {e}")),
                    Ok(tb) => catching(|| measure(tb, loss, a.duration, port)),
                };
                port = port.wrapping_add(1).max(5301);
                match &outcome {
                    Ok(v) => eprintln!(
                        "{:.0} Mbit/s, {} retransmits, router dropped {}",
                        v["mbit_per_s"].as_f64().unwrap_or(0.0),
                        v["retransmits"],
                        v["router_dropped"]
                    ),
                    Err(e) => eprintln!("ERROR: {e}"),
                }
                samples.push(Sample {
                    system: *sys,
                    loss,
                    round,
                    outcome,
                });
                let _ = sleep_interruptible(Duration::from_millis(300));
            }
        }
    }
    let mut system_info = serde_json::Map::new();
    for (sys, bed) in beds {
        let info = match bed {
            Ok(mut tb) => {
                let diag = catching(|| Ok(tb.diagnostics())).unwrap_or_else(|e| json!(e));
                json!({ "description": sys.description(), "diagnostics": diag })
            }
            Err(e) => json!({ "description": sys.description(), "error": e }),
        };
        system_info.insert(sys.name().into(), info);
    }

    let (table, rows) = summarize(&samples, &systems, &a.loss);
    let finished = utc_timestamp();
    let load_after = crate::loadavg();
    println!(
        "\nCloud Rack across a lossy WAN, {started} .. {finished} ({:.0} s): two hosts behind a router \
         limited to {} per port dropping a random share of what it forwards (nftables numgen), hosts \
         segmenting in software; iperf3 TCP, 1 stream, {} s, {} round{} (median shown)",
        t_run.elapsed().as_secs_f64(),
        a.rate,
        a.duration,
        a.rounds,
        if a.rounds == 1 { "" } else { "s" }
    );
    println!(
        "machine: {} CPUs, kernel {}, load average {load_before} before, {load_after} after; WAN MTU {}, VM MTU 1500\n",
        crate::num_cpus(),
        crate::read_trim("/proc/sys/kernel/osrelease"),
        a.wan_mtu
    );
    print!("{table}");
    let doc = json!({
        "bench": "lossy-wan",
        "started": started,
        "finished": finished,
        "run_seconds": t_run.elapsed().as_secs_f64(),
        "interrupted": interrupted(),
        "config": {
            "loss_percent": a.loss,
            "rate": a.rate,
            "iperf3_seconds": a.duration,
            "rounds": a.rounds,
            "wan_mtu": a.wan_mtu,
            "vm_mtu": 1500,
            "cloudrack_workers_flag": a.workers,
            "router": "tc tbf (burst 128kb, latency 5ms) on every router port; nftables inet forward: numgen random mod 1000000 < ppm drop",
            "hosts": "ethtool -K wan0 tso/gso/gro and tunnel segmentation off",
            "systems": systems.iter().map(|s| s.name()).collect::<Vec<_>>(),
        },
        "machine": {
            "cpus": crate::num_cpus(),
            "kernel": crate::read_trim("/proc/sys/kernel/osrelease"),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "iperf3": crate::first_line(&["iperf3", "--version"]),
            "cloudrack_binaries": crate::binaries_info(),
            "cloudrack_commit": crate::first_line(&[
                "git", "-C", &cloudrack_tests::workspace_dir().to_string_lossy(),
                "describe", "--always", "--dirty",
            ]),
        },
        "systems": system_info,
        "results": samples.iter().map(|s| json!({
            "system": s.system.name(),
            "loss_percent": s.loss,
            "round": s.round,
            "ok": s.outcome.is_ok(),
            "measurement": s.outcome.as_ref().ok(),
            "error": s.outcome.as_ref().err(),
        })).collect::<Vec<_>>(),
        "table": rows,
    });
    crate::util::write_json(&json_path, &doc)?;
    eprintln!("JSON written to {}", json_path.display());
    Ok(if interrupted() {
        130
    } else if samples.iter().all(|s| s.outcome.is_ok()) {
        0
    } else {
        1
    })
}

/// One iperf3 TCP stream across the testbed's WAN, the router dropping `loss` percent.
fn measure(tb: &Testbed, loss: f64, seconds: u32, port: u16) -> Result<Value, String> {
    let per_million = (loss * 10_000.0).round() as u32;
    tb.wan().set_loss_per_million(0);
    tb.warm_up(Placement::Cross)?;
    tb.wan().set_loss_per_million(per_million);
    let pair = tb.pair(Placement::Cross).ok_or("no cross-host pair")?;
    let server = iperf::Server::start(pair.server, port)?;
    let v = iperf::client(pair.client, pair.server_ip, port, Load::Tcp { streams: 1 }, seconds)
        .map_err(|e| format!("{e}; server log: {}", server.log_tail()))?;
    let dropped = tb.wan().dropped();
    tb.wan().set_loss_per_million(0);
    let r = iperf::parse_tcp(&v)?;
    Ok(json!({
        "mbit_per_s": r.bits_per_second / 1e6,
        "bytes": r.bytes,
        "retransmits": r.retransmits,
        "router_dropped": dropped,
        "loss_per_million": per_million,
    }))
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The table (loss rows; each system's median Mbit/s, its rounds, and Cloud Rack / kernel),
/// as text and as JSON rows.
fn summarize(samples: &[Sample], systems: &[System], losses: &[f64]) -> (String, Vec<Value>) {
    let mut text = format!("{:>8}", "loss %");
    for s in systems {
        text += &format!("  {:>12}  {:<28}", format!("{} Mbit/s", s.name()), "(rounds)");
    }
    if systems.len() == 2 {
        text += "  cloudrack/kernel";
    }
    text += "\n";
    let mut rows = Vec::new();
    for &loss in losses {
        let mut row = json!({ "loss_percent": loss });
        let mut line = format!("{loss:>8}");
        let mut med = Vec::new();
        for s in systems {
            let all: Vec<f64> = samples
                .iter()
                .filter(|x| x.system == *s && x.loss == loss)
                .filter_map(|x| x.outcome.as_ref().ok()?["mbit_per_s"].as_f64())
                .collect();
            let failed = samples
                .iter()
                .filter(|x| x.system == *s && x.loss == loss && x.outcome.is_err())
                .count();
            let m = median(all.clone());
            let rounds = all.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(" ");
            let rounds = if failed > 0 {
                format!("{rounds} ERR[{failed}]")
            } else {
                rounds
            };
            line += &format!(
                "  {:>12}  {:<28}",
                m.map(|m| format!("{m:.0}")).unwrap_or("-".into()),
                format!("({rounds})")
            );
            row[s.name()] = json!({ "median_mbit_per_s": m, "rounds_mbit_per_s": all, "failed": failed });
            med.push(m);
        }
        if let [Some(cr), Some(k)] = med[..] {
            if systems == [System::Cloudrack, System::Kernel] && k > 0.0 {
                line += &format!("  {:>16.2}", cr / k);
                row["ratio_cloudrack_kernel"] = json!(cr / k);
            }
        }
        text += &line;
        text += "\n";
        rows.push(row);
    }
    (text, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(system: System, loss: f64, round: u32, mbit: Option<f64>) -> Sample {
        Sample {
            system,
            loss,
            round,
            outcome: mbit
                .map(|m| json!({ "mbit_per_s": m }))
                .ok_or_else(|| "stalled".to_string()),
        }
    }

    #[test]
    fn medians_and_ratios_per_loss_rate() {
        let (c, k) = (System::Cloudrack, System::Kernel);
        let samples = vec![
            sample(c, 1.0, 1, Some(800.0)),
            sample(k, 1.0, 1, Some(500.0)),
            sample(c, 1.0, 2, Some(900.0)),
            sample(k, 1.0, 2, Some(600.0)),
            sample(c, 1.0, 3, None),
            sample(k, 1.0, 3, Some(400.0)),
        ];
        let (text, rows) = summarize(&samples, &[c, k], &[1.0]);
        assert_eq!(rows[0]["cloudrack"]["median_mbit_per_s"], 850.0);
        assert_eq!(rows[0]["cloudrack"]["failed"], 1);
        assert_eq!(rows[0]["kernel"]["median_mbit_per_s"], 500.0);
        assert_eq!(rows[0]["ratio_cloudrack_kernel"], 1.7);
        assert!(text.contains("ERR[1]") && text.contains("1.70"), "{text}");
    }

    #[test]
    fn defaults() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            a: LossyArgs,
        }
        let a = <Cli as clap::Parser>::parse_from(["x"]).a;
        assert_eq!(a.loss, vec![0.0, 0.1, 1.0]);
        assert_eq!((a.rate.as_str(), a.wan_mtu, a.rounds), ("1gbit", 1600, 3));
    }
}
