//! Reading the control plane's state for assertions: what etcd holds (`cloudrack-controller
//! show --json`), which controller each switch has as master, and whether etcd and every
//! switch agree about where each VM is.

use crate::{bin_path, Cluster};
use serde_json::Value;
use std::time::Duration;

/// `cloudrack-controller show --json` run in host `h`'s namespace against `endpoints`; None if
/// it fails (an etcd member down, no quorum).
pub fn try_etcd_registry(c: &Cluster, h: usize, endpoints: &str) -> Option<Value> {
    let bin = bin_path("cloudrack-controller");
    let out = c.net[h]
        .ns
        .exec(&[bin.to_str().unwrap(), "show", "--etcd", endpoints, "--json"]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Like [`try_etcd_registry`]; panics with what it printed if there is no answer.
pub fn etcd_registry(c: &Cluster, h: usize, endpoints: &str) -> Value {
    try_etcd_registry(c, h, endpoints).unwrap_or_else(|| panic!("no registry from etcd at {endpoints}"))
}

/// The location etcd holds for (vnet, mac): the location entry, or None.
pub fn etcd_location<'a>(registry: &'a Value, vnet: u32, mac: &str) -> Option<&'a Value> {
    registry["locations"]
        .as_array()?
        .iter()
        .find(|l| l["vnet"] == vnet && l["mac"].as_str() == Some(mac))
}

/// Each controller connection of host `h`'s switch: (address, role).
pub fn switch_roles(c: &Cluster, h: usize) -> Vec<(String, String)> {
    c.try_ctl_json(h, &["controllers"])
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|l| {
            (
                l["controller"].as_str().unwrap_or("").to_string(),
                l["role"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The one controller (an index into `addrs`) every switch has as master, with every other
/// controller of `addrs` connected as slave; None while that is not so.
pub fn steady_master(c: &Cluster, addrs: &[String]) -> Option<usize> {
    let mut master = None;
    for h in 0..c.switches.len() {
        let roles = switch_roles(c, h);
        if roles.len() != addrs.len() {
            return None;
        }
        for (i, addr) in addrs.iter().enumerate() {
            let role = roles.iter().find(|(a, _)| a == addr).map(|(_, r)| r.as_str())?;
            match role {
                "master" if master.is_none_or(|m| m == i) => master = Some(i),
                "slave" => {}
                _ => return None,
            }
        }
    }
    master
}

/// Wait up to `timeout` for [`steady_master`].
pub fn wait_steady_master(c: &Cluster, addrs: &[String], timeout: Duration) -> Option<usize> {
    let mut master = None;
    crate::wait_until(timeout, Duration::from_millis(100), || {
        master = steady_master(c, addrs);
        master.is_some()
    });
    master
}

/// Where a VM is: its MAC, network, host and the name of its port on that host's switch.
#[derive(Debug, Clone)]
pub struct Placement {
    pub mac: String,
    pub vnet: u32,
    pub host: usize,
    pub port_name: String,
}

/// What one switch has: its ports and tunnels by number, and its flows.
struct SwitchView {
    ports: Vec<(u64, String)>,
    /// (port_no, remote underlay address, key).
    tunnels: Vec<(u64, String, u64)>,
    flows: Vec<Value>,
}

fn switch_view(c: &Cluster, h: usize) -> Result<SwitchView, String> {
    let show = c
        .try_ctl_json(h, &["show"])
        .ok_or_else(|| format!("host {h}: cloudrack-ctl show failed"))?;
    let flows = c
        .try_ctl_json(h, &["flows"])
        .ok_or_else(|| format!("host {h}: cloudrack-ctl flows failed"))?;
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    Ok(SwitchView {
        ports: list(&show["ports"])
            .iter()
            .map(|p| {
                (
                    p["port_no"].as_u64().unwrap_or(0),
                    p["name"].as_str().unwrap_or("").into(),
                )
            })
            .collect(),
        tunnels: list(&show["tunnels"])
            .iter()
            .map(|t| {
                (
                    t["port_no"].as_u64().unwrap_or(0),
                    t["remote_ip"].as_str().unwrap_or("").into(),
                    t["key"].as_u64().unwrap_or(0),
                )
            })
            .collect(),
        flows: list(&flows),
    })
}

/// Every way in which the switches' flows and etcd's locations disagree with each other or
/// with where the VMs really are (empty when all agree):
/// - a flow on any switch that leads to a port or tunnel the switch does not have;
/// - a VM whose location in etcd is missing, marked port-gone, or not its host and port;
/// - a VM whose own host has no flow to its port, or another host whose flow for it does not
///   lead through the tunnel to the VM's host.
pub fn disagreements(c: &Cluster, registry: &Value, vms: &[Placement]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut views = Vec::new();
    for h in 0..c.switches.len() {
        match switch_view(c, h) {
            Ok(v) => views.push(v),
            Err(e) => return vec![e],
        }
    }
    for (h, v) in views.iter().enumerate() {
        for f in &v.flows {
            let Some(out) = f["out_port"].as_u64() else { continue };
            if !v.ports.iter().any(|(p, _)| *p == out) && !v.tunnels.iter().any(|(p, _, _)| *p == out) {
                problems.push(format!(
                    "host {h}: flow for {} (vnet {}) leads to port {out}, which does not exist",
                    f["mac"], f["vnet"]
                ));
            }
        }
    }
    for vm in vms {
        let home = &views[vm.host];
        let Some(port_no) = home.ports.iter().find(|(_, n)| *n == vm.port_name).map(|(p, _)| *p) else {
            problems.push(format!("{}: host {} has no port {}", vm.mac, vm.host, vm.port_name));
            continue;
        };
        let dpid = format!("{:016x}", Cluster::dpid(vm.host));
        match etcd_location(registry, vm.vnet, &vm.mac) {
            None => problems.push(format!("{}: no location in etcd", vm.mac)),
            Some(l) => {
                if l["dpid"].as_str() != Some(dpid.as_str()) || l["port"].as_u64() != Some(port_no) {
                    problems.push(format!(
                        "{}: etcd says {} port {}, the VM is on host {} port {port_no}",
                        vm.mac, l["dpid"], l["port"], vm.host
                    ));
                }
                if l["port_gone"] == true {
                    problems.push(format!("{}: etcd marks its port as gone", vm.mac));
                }
            }
        }
        let home_ip = c.net[vm.host].underlay_ip.to_string();
        for (h, v) in views.iter().enumerate() {
            let flow = v
                .flows
                .iter()
                .find(|f| f["mac"].as_str() == Some(vm.mac.as_str()) && f["vnet"] == vm.vnet);
            let out = flow.and_then(|f| f["out_port"].as_u64());
            if h == vm.host {
                if out != Some(port_no) {
                    problems.push(format!(
                        "{}: its own host {h} forwards it to {out:?}, not its port {port_no}",
                        vm.mac
                    ));
                }
            } else if let Some(out) = out {
                let to_home = v
                    .tunnels
                    .iter()
                    .any(|(p, ip, key)| *p == out && *ip == home_ip && *key == u64::from(vm.vnet));
                if !to_home {
                    problems.push(format!(
                        "{}: host {h} forwards it to port {out}, not the tunnel to host {}",
                        vm.mac, vm.host
                    ));
                }
            }
        }
    }
    problems
}
