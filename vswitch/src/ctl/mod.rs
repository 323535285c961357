//! The management socket: `cloudrack-ctl` talks to the running switch over a Unix socket, one
//! JSON request per line, one JSON reply per line (`{"ok":true,"data":...}` or
//! `{"ok":false,"error":"..."}`).

pub mod client;

use crate::dp::fib::PortKind;
use crate::ofp::Hub;
use crate::os::fmt_mac;
use crate::switch::{Switch, TunnelSpec};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use tracing::{info, warn};

/// A request on the management socket.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    AddPort {
        name: String,
        kind: PortKind,
        vnet: u32,
        /// MACs of the VM behind the port (port security, MAC-move authorization).
        #[serde(default)]
        macs: Vec<String>,
    },
    /// Bind a VM MAC to a port (`bound`), or release it.
    Bind {
        port: String,
        mac: String,
        bound: bool,
    },
    DelPort {
        name: String,
    },
    AddTunnel {
        remote: Ipv4Addr,
        key: u32,
    },
    DelTunnel {
        port: String,
    },
    MigrateIn {
        port: String,
        mac: String,
    },
    Show,
    Tunnels,
    Macs,
    Flows,
    Stats,
    /// The controller connections and their OpenFlow roles.
    Controllers,
}

impl<'de> Deserialize<'de> for PortKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "system" => Ok(PortKind::System),
            "tap" => Ok(PortKind::Tap),
            other => Err(serde::de::Error::custom(format!(
                "unknown port kind {other:?} (system or tap)"
            ))),
        }
    }
}

/// Bind the socket (replacing a stale one) and serve it on a thread.
pub fn serve(switch: Arc<Switch>, hub: Arc<Hub>, path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        // A live switch answers on it; a dead one left a stale file behind.
        if UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another switch is serving {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    info!(path = %path.display(), "management socket ready");
    std::thread::Builder::new().name("ctl".into()).spawn(move || {
        for conn in listener.incoming() {
            match conn {
                Ok(stream) => {
                    let (sw, hub) = (switch.clone(), hub.clone());
                    let _ = std::thread::Builder::new()
                        .name("ctl-conn".into())
                        .spawn(move || handle(sw, hub, stream));
                }
                Err(e) => warn!(error = %e, "management accept failed"),
            }
        }
    })?;
    Ok(())
}

fn handle(switch: Arc<Switch>, hub: Arc<Hub>, stream: UnixStream) {
    let Ok(mut out) = stream.try_clone() else { return };
    let reader = BufReader::new(stream);
    for line in reader.lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(req) => match execute(&switch, &hub, req) {
                Ok(data) => json!({"ok": true, "data": data}),
                Err(e) => json!({"ok": false, "error": e}),
            },
            Err(e) => json!({"ok": false, "error": format!("bad request: {e}")}),
        };
        if writeln!(out, "{reply}").is_err() {
            return;
        }
    }
}

fn parse_mac(s: &str) -> Result<crate::dp::fib::Mac, String> {
    crate::os::parse_mac(s).ok_or_else(|| format!("{s:?} is not a MAC address"))
}

/// Carry out one request.
pub fn execute(switch: &Switch, hub: &Hub, req: Request) -> Result<Value, String> {
    let to_json = |v: &dyn erased::Ser| v.to_value();
    match req {
        Request::AddPort { name, kind, vnet, macs } => {
            let macs = macs.iter().map(|m| parse_mac(m)).collect::<Result<Vec<_>, _>>()?;
            switch
                .add_port(&name, kind, vnet, &macs)
                .map(|p| to_json(&p))
                .map_err(|e| e.to_string())
        }
        Request::Bind { port, mac, bound } => {
            let m = parse_mac(&mac)?;
            switch
                .bind_port(&port, m, bound)
                .map(|(port_no, vnet)| json!({"port_no": port_no, "vnet": vnet, "mac": fmt_mac(&m), "bound": bound}))
                .map_err(|e| e.to_string())
        }
        Request::DelPort { name } => switch.del_port(&name).map(|()| Value::Null).map_err(|e| e.to_string()),
        Request::AddTunnel { remote, key } => switch
            .add_tunnel(TunnelSpec {
                port_no: None,
                remote,
                key,
                remote_dpid: 0,
                is_static: true,
                idle_timeout_s: 0,
            })
            .map(|t| to_json(&t))
            .map_err(|e| e.to_string()),
        Request::DelTunnel { port } => {
            let port_no = switch
                .tunnels()
                .into_iter()
                .find(|t| t.name == port || t.port_no.to_string() == port || t.remote_ip.to_string() == port)
                .map(|t| t.port_no)
                .ok_or_else(|| format!("no tunnel {port:?}"))?;
            switch
                .del_tunnel(port_no)
                .map(|()| Value::Null)
                .map_err(|e| e.to_string())
        }
        Request::MigrateIn { port, mac } => {
            let m = parse_mac(&mac)?;
            switch
                .migrate_in(&port, m)
                .map(|p| json!({"port_no": p}))
                .map_err(|e| e.to_string())
        }
        Request::Show => Ok(json!({
            "dpid": format!("{:016x}", switch.cfg.dpid),
            "underlay_ip": switch.cfg.underlay_ip,
            "underlay_mac": fmt_mac(&switch.cfg.underlay_mac),
            "controller_connected": switch.dp.shared.controller_up.load(std::sync::atomic::Ordering::Relaxed),
            "ports": to_json(&switch.ports()),
            "tunnels": to_json(&switch.tunnels()),
        })),
        Request::Tunnels => Ok(to_json(&switch.tunnels())),
        Request::Macs | Request::Flows => {
            let names: std::collections::HashMap<u32, String> = switch
                .ports()
                .into_iter()
                .map(|p| (p.port_no, p.name))
                .chain(switch.tunnels().into_iter().map(|t| (t.port_no, t.name)))
                .collect();
            let macs_only = matches!(req, Request::Macs);
            let flows = switch.flows(&Default::default());
            Ok(Value::Array(
                flows.iter().filter_map(|f| flow_json(f, &names, macs_only)).collect(),
            ))
        }
        Request::Stats => Ok(switch.stats()),
        Request::Controllers => Ok(hub.controllers()),
    }
}

/// One flow entry as JSON. Entries of the L2 shape (table 0, exactly {tunnel_id, eth_dst},
/// one output or none) also carry `vnet`, `mac` and `out_port`: the MAC table (`macs`) is
/// those alone.
fn flow_json(
    f: &crate::pipeline::table::FlowEntry,
    names: &std::collections::HashMap<u32, String>,
    macs_only: bool,
) -> Option<Value> {
    use crate::pipeline::key::off;
    use crate::pipeline::text;
    let mut l2_mask = crate::pipeline::key::Key::default();
    l2_mask.0[off::TUNNEL_ID].fill(0xff);
    l2_mask.0[off::ETH_DST].fill(0xff);
    let l2 = f.table_id == 0 && f.m.mask == l2_mask && (f.insts.single_output().is_some() || f.instructions.is_empty());
    if macs_only && !l2 {
        return None;
    }
    let mut v = json!({
        "table": f.table_id,
        "priority": f.priority,
        "match": text::match_text(&f.m),
        "actions": text::instructions_text(&f.instructions),
        "cookie": format!("{:#x}", f.cookie),
        "idle_timeout": f.idle_timeout,
        "hard_timeout": f.hard_timeout,
        "packets": f.counters.packets.load(std::sync::atomic::Ordering::Relaxed),
        "bytes": f.counters.bytes.load(std::sync::atomic::Ordering::Relaxed),
    });
    if l2 {
        let out = f.insts.single_output();
        v["vnet"] = json!(f.m.value.tunnel_id());
        v["mac"] = json!(fmt_mac(&f.m.value.eth_dst()));
        v["out_port"] = json!(out);
        v["out_name"] = json!(out.and_then(|p| names.get(&p).cloned()));
    }
    Some(v)
}

/// Serialize anything into a JSON value without repeating `serde_json::to_value(..).unwrap()`.
mod erased {
    pub trait Ser {
        fn to_value(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_value(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
        }
    }
}
