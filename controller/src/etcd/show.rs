//! `cloudrack-controller show`: what the registries in etcd hold and who is master, read
//! straight from etcd (works whichever controllers are up, or none).

use super::{keys, Etcd};
use crate::store::StoreError;
use serde_json::{json, Value};

/// The registry and the election as JSON.
pub fn registry(etcd: &Etcd) -> Result<Value, StoreError> {
    let kvs = etcd.rt.block_on(etcd.scan())?;
    let election = keys::election(&etcd.prefix);
    let (mut hosts, mut tunnels, mut locations, mut candidates) = (vec![], vec![], vec![], vec![]);
    for kv in &kvs {
        let Ok(key) = kv.key_str() else { continue };
        match keys::parse(&etcd.prefix, key) {
            Some(keys::Key::Host(dpid)) => {
                if let Some(h) = keys::parse_host(dpid, kv.value()) {
                    hosts.push(json!({
                        "dpid": format!("{dpid:016x}"),
                        "underlay_ip": h.underlay_ip,
                        "underlay_mac": h.underlay_mac.to_string(),
                        "lease": format!("{:x}", kv.lease()),
                    }));
                }
            }
            Some(keys::Key::Tunnel { a, b, key }) => {
                if let Some(t) = keys::parse_tunnel(a, b, key, kv.value()) {
                    tunnels.push(json!({
                        "a": format!("{a:016x}"), "port_a": t.port_a.0,
                        "b": format!("{b:016x}"), "port_b": t.port_b.0,
                        "key": key.0,
                    }));
                }
            }
            Some(keys::Key::Location { vnet, mac }) => {
                if let Some((at, port_gone)) = keys::parse_location(kv.value()) {
                    locations.push(json!({
                        "vnet": vnet.0,
                        "mac": mac.to_string(),
                        "dpid": format!("{:016x}", at.dpid),
                        "port": at.port.0,
                        "port_gone": port_gone,
                    }));
                }
            }
            None if key.starts_with(&election) => candidates.push(json!({
                "name": String::from_utf8_lossy(kv.value()),
                "generation": kv.create_revision(),
                "lease": format!("{:x}", kv.lease()),
            })),
            None => {}
        }
    }
    // etcd's election: the candidate with the oldest key is master.
    candidates.sort_by_key(|c| c["generation"].as_i64());
    let master = candidates.first().cloned();
    Ok(json!({
        "endpoints": etcd.endpoints,
        "prefix": etcd.prefix,
        "master": master,
        "candidates": candidates,
        "hosts": hosts,
        "tunnels": tunnels,
        "locations": locations,
    }))
}

/// The same for people.
pub fn render(v: &Value, all: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let s = |v: &Value| v.as_str().map(String::from).unwrap_or_else(|| v.to_string());
    let _ = writeln!(out, "etcd {} prefix {}", v["endpoints"], s(&v["prefix"]));
    match v["master"].as_object() {
        Some(m) => {
            let _ = writeln!(out, "master: {} (generation {})", s(&m["name"]), m["generation"]);
        }
        None => out.push_str("master: none elected\n"),
    }
    for c in v["candidates"].as_array().into_iter().flatten().skip(1) {
        let _ = writeln!(
            out,
            "standby: {} (candidate since revision {})",
            s(&c["name"]),
            c["generation"]
        );
    }
    let list = |k: &str| v[k].as_array().cloned().unwrap_or_default();
    let hosts = list("hosts");
    let _ = writeln!(out, "hosts: {}", hosts.len());
    for h in &hosts {
        let _ = writeln!(
            out,
            "  {}  {:<15} {}",
            s(&h["dpid"]),
            s(&h["underlay_ip"]),
            s(&h["underlay_mac"])
        );
    }
    let tunnels = list("tunnels");
    let _ = writeln!(out, "tunnels: {}", tunnels.len());
    for t in tunnels.iter().take(if all { usize::MAX } else { 50 }) {
        let _ = writeln!(
            out,
            "  {}:{} <-> {}:{}  key {}",
            s(&t["a"]),
            t["port_a"],
            s(&t["b"]),
            t["port_b"],
            t["key"]
        );
    }
    let locations = list("locations");
    let _ = writeln!(out, "locations: {}", locations.len());
    for l in locations.iter().take(if all { usize::MAX } else { 50 }) {
        let _ = writeln!(
            out,
            "  vnet {:<5} {}  at {} port {}{}",
            l["vnet"],
            s(&l["mac"]),
            s(&l["dpid"]),
            l["port"],
            if l["port_gone"] == true { " (port gone)" } else { "" }
        );
    }
    if !all && (tunnels.len() > 50 || locations.len() > 50) {
        out.push_str("  ... (--all lists every entry)\n");
    }
    out
}
