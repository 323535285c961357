//! `cloudrack-bench openflow`: the general OpenFlow pipeline under load, side by side with
//! Open vSwitch userspace, both programmed with the same OpenFlow messages:
//!
//! - `l2`: two VMs on one host, table 0 forwarding by in_port (the baseline);
//! - `acl`: a two-table pipeline, table 0 a 1,000-rule ACL of masked IPv4 prefixes and port
//!   ranges (none of which the test traffic hits, so every rule is considered) then goto
//!   table 1, which forwards;
//! - `100k`: 100,000 more flows installed in table 0 (exact 5-tuples of other traffic): the
//!   FLOW_MOD rate (messages to barrier reply) and then forwarding again, which the flow
//!   caches should keep as fast as before.
//!
//! Each pipeline is measured with one TCP stream (iperf3) and the 64-byte zero-loss rate
//! (RFC 2544, see flood.rs), for every system in turn, several rounds.

use crate::flood;
use crate::iperf::{self, Load};
use crate::ofclient::{OfClient, Target};
use crate::util::{check_interrupted, utc_file_stamp, utc_timestamp, write_json};
use clap::Args;
use cloudrack_tests::*;
use cloudrack_wire::ofp::{self, Action, Body, FlowMod, Instruction, Match, Message, Oxm};
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub struct OpenflowArgs {
    /// Seconds per TCP measurement (the zero-loss search takes about three times that).
    #[arg(long, default_value_t = 6)]
    duration: u32,
    /// Rounds (systems take turns); the table shows medians, the JSON every round.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Rules in the ACL table.
    #[arg(long, default_value_t = 1000)]
    rules: u32,
    /// Extra flows for the large-table measurement.
    #[arg(long, default_value_t = 100_000)]
    flows: u32,
    /// Systems: cloudrack, ovs (default both).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where to write the JSON (default bench/results/openflow-<date>.json).
    #[arg(long)]
    json: Option<PathBuf>,
}

const OFP_LISTEN: &str = "127.0.0.1:6636";
const A_IP: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);

/// One switch with two VMs on ports 1 and 2, and an OpenFlow connection to it.
struct Bed {
    name: &'static str,
    a: Vm,
    b: Vm,
    of: OfClient,
    _keep: Box<dyn std::any::Any>,
}

fn cloudrack_bed() -> Result<Bed, String> {
    let c = Cluster::standalone("tcp:127.0.0.1:1", OFP_LISTEN);
    let a = c.vm_system(0, "ofa", "02:00:00:78:00:01", "10.78.0.1/24", 0);
    let b = c.vm_system(0, "ofb", "02:00:00:78:00:02", "10.78.0.2/24", 0);
    let of = c.net[0]
        .ns
        .enter(|| OfClient::connect(&Target::Tcp(OFP_LISTEN.into())))?;
    Ok(Bed {
        name: "cloudrack",
        a,
        b,
        of,
        _keep: Box::new(c),
    })
}

fn ovs_bed() -> Result<Bed, String> {
    let net = HostNet::new(1);
    let ovs = OvsHost::start(&net[0].ns);
    ovs.add_bridge("br0");
    let a = vm_ns(&net[0], "ofa", "02:00:00:78:00:01", "10.78.0.1/24");
    let b = vm_ns(&net[0], "ofb", "02:00:00:78:00:02", "10.78.0.2/24");
    for (i, vm) in [(1, &a), (2, &b)] {
        // OVS's AF_PACKET ports need frames with real checksums and MTU-sized segments.
        vm.ns
            .run(&["ethtool", "-K", "eth0", "tx", "off", "tso", "off", "gso", "off"]);
        ovs.vsctl(&[
            "add-port",
            "br0",
            &vm.host_if,
            "--",
            "set",
            "Interface",
            &vm.host_if,
            &format!("ofport_request={i}"),
        ]);
    }
    let of = OfClient::connect(&Target::Unix(ovs.dir().join("br0.mgmt")))?;
    Ok(Bed {
        name: "ovs",
        a,
        b,
        of,
        _keep: Box::new((ovs, net)),
    })
}

fn flow(table: u8, priority: u16, m: Match, insts: Vec<Instruction>) -> Vec<u8> {
    Message::new(
        0,
        Body::FlowMod(FlowMod {
            table_id: table,
            priority,
            match_: m,
            instructions: insts,
            ..FlowMod::default()
        }),
    )
    .encode()
}

fn delete_all() -> Vec<u8> {
    Message::new(
        0,
        Body::FlowMod(FlowMod {
            command: ofp::OFPFC_DELETE,
            table_id: ofp::OFPTT_ALL,
            ..FlowMod::default()
        }),
    )
    .encode()
}

fn output(p: u32) -> Vec<Instruction> {
    vec![Instruction::ApplyActions(vec![Action::output(p)])]
}

/// Forwarding between ports 1 and 2 in `table`.
fn l2(table: u8) -> Vec<Vec<u8>> {
    vec![
        flow(table, 10, Match::new().with(Oxm::InPort(1)), output(2)),
        flow(table, 10, Match::new().with(Oxm::InPort(2)), output(1)),
    ]
}

/// Table 0: `rules` deny rules of other traffic (masked sources, exact or masked ports) above
/// an allow-all that goes to table 1; table 1 forwards.
fn acl(rules: u32) -> Vec<Vec<u8>> {
    let mut msgs = vec![delete_all()];
    for i in 0..rules {
        let net = Ipv4Addr::new(10, 100 + (i % 50) as u8, (i / 50) as u8, 0);
        let (plen, proto) = match i % 4 {
            0 => (24, 6),
            1 => (16, 6),
            2 => (24, 17),
            _ => (28, 17),
        };
        let mask = Ipv4Addr::from(u32::MAX << (32 - plen));
        let mut m = Match::new()
            .with(Oxm::EthType(0x0800))
            .with(Oxm::IpProto(proto))
            .with(Oxm::Ipv4Src {
                addr: Ipv4Addr::from(u32::from(net) & u32::from(mask)),
                mask: Some(mask),
            });
        let port_field = if proto == 6 {
            ofp::OFPXMT_OFB_TCP_DST
        } else {
            ofp::OFPXMT_OFB_UDP_DST
        };
        let port = (i as u16).wrapping_mul(64) | 0x400;
        m = m.with(if i % 3 == 0 {
            Oxm::basic(
                port_field,
                &(port & 0xffc0).to_be_bytes(),
                Some(&0xffc0u16.to_be_bytes()),
            )
        } else {
            Oxm::basic(port_field, &port.to_be_bytes(), None)
        });
        msgs.push(flow(0, 1000 + (i % 60000) as u16, m, vec![]));
    }
    msgs.push(flow(0, 1, Match::new(), vec![Instruction::GotoTable(1)]));
    msgs.extend(l2(1));
    msgs
}

/// `n` exact flows of traffic that is not the test's, in table 0 below its forwarding.
fn many(n: u32) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let m = Match::new()
                .with(Oxm::EthType(0x0800))
                .with(Oxm::IpProto(17))
                .with(Oxm::Ipv4Src {
                    addr: Ipv4Addr::new(10, 200, (i >> 8) as u8, i as u8),
                    mask: None,
                })
                .with(Oxm::Ipv4Dst {
                    addr: Ipv4Addr::new(10, 201, (i >> 16) as u8, (i >> 8) as u8),
                    mask: None,
                })
                .with(Oxm::UdpDst(1 + (i % 60000) as u16));
            flow(0, 5, m, vec![])
        })
        .collect()
}

/// TCP Gbit/s and the 64-byte zero-loss rate (kframes/s) from a to b.
fn traffic(bed: &Bed, seconds: u32, port: u16) -> Result<(f64, f64), String> {
    check_interrupted()?;
    if !ping(&bed.a.ns, &B_IP.to_string(), 5, Duration::from_secs(10)) {
        return Err(format!("{}: the VMs cannot ping each other", bed.name));
    }
    let server = iperf::Server::start(&bed.b.ns, port)?;
    let v = iperf::client(&bed.a.ns, B_IP, port, Load::Tcp { streams: 1 }, seconds)
        .map_err(|e| format!("{e}; server log: {}", server.log_tail()))?;
    let gbps = iperf::parse_tcp(&v)?.bits_per_second / 1e9;
    drop(server);
    let trial = (f64::from(seconds) / 3.0).clamp(1.0, 3.0);
    let z = flood::zero_loss(&bed.b.ns, &bed.a.ns, B_IP, port + 1, 64, trial)?;
    let _ = A_IP;
    Ok((gbps, z.rate / 1000.0))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub fn run(a: OpenflowArgs) -> Result<i32, String> {
    let systems: Vec<&str> = if a.only.is_empty() {
        vec!["cloudrack", "ovs"]
    } else {
        a.only.iter().map(String::as_str).collect()
    };
    let started = utc_timestamp();
    let mut rounds: Vec<Value> = Vec::new();
    // metric -> system -> values
    let mut table: std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<f64>>> =
        Default::default();
    let mut record = |metric: &str, system: &str, v: f64| {
        table
            .entry(metric.to_string())
            .or_default()
            .entry(system.to_string())
            .or_default()
            .push(v);
    };
    let acl_msgs = acl(a.rules);
    let many_msgs = many(a.flows);
    for round in 0..a.rounds {
        for &sys in &systems {
            eprintln!("openflow bench: round {}/{} {sys}", round + 1, a.rounds);
            let mut bed = match sys {
                "cloudrack" => cloudrack_bed()?,
                "ovs" => ovs_bed()?,
                other => return Err(format!("unknown system {other:?}: cloudrack or ovs")),
            };
            let mut r = json!({ "round": round, "system": sys });
            let mut base = vec![delete_all()];
            base.extend(l2(0));
            bed.of.timed(&base, Duration::from_secs(30))?;
            let (g, z) = traffic(&bed, a.duration, 5301)?;
            record("l2: TCP 1 stream, Gbit/s", sys, g);
            record("l2: 64 B zero-loss, kframes/s", sys, z);
            r["l2"] = json!({ "tcp_gbps": g, "zero_loss_kfps": z });

            let t = bed.of.timed(&acl_msgs, Duration::from_secs(120))?;
            let (g, z) = traffic(&bed, a.duration, 5311)?;
            record("acl: TCP 1 stream, Gbit/s", sys, g);
            record("acl: 64 B zero-loss, kframes/s", sys, z);
            r["acl"] = json!({ "rules": a.rules, "install_s": t.as_secs_f64(), "tcp_gbps": g, "zero_loss_kfps": z });

            let t = bed.of.timed(&many_msgs, Duration::from_secs(600))?;
            let errors = bed.of.errors.load(std::sync::atomic::Ordering::Relaxed);
            if errors > 0 {
                return Err(format!(
                    "{sys} refused {errors} of the FLOW_MODs: the figures would not mean what they say"
                ));
            }
            let rate = f64::from(a.flows) / t.as_secs_f64();
            record("100k: FLOW_MOD rate, kflows/s", sys, rate / 1000.0);
            let (g, z) = traffic(&bed, a.duration, 5321)?;
            record("100k: TCP 1 stream, Gbit/s", sys, g);
            record("100k: 64 B zero-loss, kframes/s", sys, z);
            r["100k"] = json!({
                "flows": a.flows,
                "install_s": t.as_secs_f64(),
                "flow_mods_per_s": rate,
                "tcp_gbps": g,
                "zero_loss_kfps": z,
                "errors": bed.of.errors.load(std::sync::atomic::Ordering::Relaxed),
            });
            eprintln!("  {r}");
            rounds.push(r);
        }
    }
    let mut lines = vec![format!(
        "{:<36} {:>10} {:>10} {:>8}",
        "metric (median)", "cloudrack", "ovs", "cr/ovs"
    )];
    let mut summary = serde_json::Map::new();
    for (metric, by) in &table {
        let cr = by.get("cloudrack").map(|v| median(v.clone()));
        let ovs = by.get("ovs").map(|v| median(v.clone()));
        let ratio = match (cr, ovs) {
            (Some(c), Some(o)) if o > 0.0 => Some(c / o),
            _ => None,
        };
        let f = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.2}"));
        lines.push(format!("{metric:<36} {:>10} {:>10} {:>8}", f(cr), f(ovs), f(ratio)));
        summary.insert(metric.clone(), json!({ "cloudrack": cr, "ovs": ovs, "ratio": ratio }));
    }
    let text = lines.join("\n");
    println!("{text}");
    let path = a
        .json
        .unwrap_or_else(|| PathBuf::from(format!("bench/results/openflow-{}.json", utc_file_stamp())));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    write_json(
        &path,
        &json!({
            "started": started,
            "finished": utc_timestamp(),
            "loadavg_at_end": load.trim(),
            "settings": { "duration": a.duration, "rounds": a.rounds, "rules": a.rules, "flows": a.flows },
            "summary": summary,
            "table": text,
            "rounds": rounds,
        }),
    )?;
    eprintln!("wrote {}", path.display());
    Ok(0)
}
