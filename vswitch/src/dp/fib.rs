//! The forwarding snapshot the workers read: ports, tunnels, flood sets and the OpenFlow
//! pipeline (flow tables, groups, meters).
//!
//! Thread-safety: the control plane builds a new `Fib` and publishes it through an `ArcSwap`;
//! workers load the current one once per wakeup. Readers never lock and never wait on writers,
//! and a writer never sees a reader. Counters inside are shared atomics.

use super::stats::PortCounters;
use crate::pipeline::xlate::{PortRole, Ports};
use crate::pipeline::Pipeline;
use crate::port::PortIo;
use crate::tunnel::PathMtu;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

pub type Mac = [u8; 6];

/// The maps workers read per frame. aHash instead of the standard SipHash: a third of the
/// instructions of a forwarding decision went to SipHash (bench/PROFILE.md), and aHash keeps
/// per-process random keys, so MACs chosen by a tenant still cannot aim at one bucket.
pub type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PortKind {
    System,
    Tap,
}

/// A port on this host (a VM's tap, a veth, a switch-owned tap).
#[derive(Clone)]
pub struct LocalPort {
    pub port_no: u32,
    pub name: String,
    pub kind: PortKind,
    pub vnet: u32,
    pub io: Arc<dyn PortIo>,
    pub counters: Arc<PortCounters>,
    /// The worker that receives from this port.
    pub worker: usize,
    /// MACs of the VM bound to this port. When set, frames from any other source MAC are
    /// dropped (port security), and the controller lets only a bound port take a MAC over.
    pub bound_macs: Vec<Mac>,
}

/// A GRE tunnel to one remote host for one key.
pub struct Tunnel {
    pub port_no: u32,
    pub remote: Ipv4Addr,
    pub key: u32,
    pub remote_dpid: u64,
    /// Added by hand (`cloudrack-ctl add-tunnel`) to join an existing GRE mesh, rather than by
    /// the controller. Broadcasts from local ports go out static tunnels.
    pub is_static: bool,
    pub idle_timeout_s: u32,
    /// The path MTU to the remote, shared with its other tunnels: what every GRE packet must
    /// fit (see `tunnel::pmtu`).
    pub path_mtu: Arc<PathMtu>,
    /// The keyed Ethernet-over-GRE header, built once.
    pub header: [u8; cloudrack_wire::gre::KEYED_LEN],
    pub counters: Arc<PortCounters>,
}

impl Tunnel {
    pub fn new(
        port_no: u32,
        remote: Ipv4Addr,
        key: u32,
        remote_dpid: u64,
        is_static: bool,
        idle_timeout_s: u32,
        path_mtu: Arc<PathMtu>,
    ) -> Tunnel {
        use cloudrack_wire::gre::{GreRepr, KEYED_LEN};
        let mut header = [0u8; KEYED_LEN];
        GreRepr::keyed_ethernet(key).emit(&mut header);
        Tunnel {
            port_no,
            remote,
            key,
            remote_dpid,
            is_static,
            idle_timeout_s,
            path_mtu,
            header,
            counters: Arc::default(),
        }
    }
}

/// Where a flood in one virtual network goes.
#[derive(Default, Clone, Debug)]
pub struct FloodSet {
    pub local: Vec<u32>,
    pub static_tunnels: Vec<u32>,
}

#[derive(Clone)]
pub struct Fib {
    pub generation: u64,
    pub local: FastMap<u32, LocalPort>,
    pub tunnels: FastMap<u32, Arc<Tunnel>>,
    pub tunnel_by_remote: FastMap<(Ipv4Addr, u32), u32>,
    pub flood: FastMap<u32, FloodSet>,
    pub pipeline: Pipeline,
}

impl Default for Fib {
    fn default() -> Fib {
        Fib {
            generation: 0,
            local: FastMap::default(),
            tunnels: FastMap::default(),
            tunnel_by_remote: FastMap::default(),
            flood: FastMap::default(),
            pipeline: Pipeline::new(0),
        }
    }
}

impl Ports for Fib {
    fn role(&self, port: u32) -> PortRole {
        if let Some(p) = self.local.get(&port) {
            PortRole::Local { vnet: p.vnet }
        } else if let Some(t) = self.tunnels.get(&port) {
            PortRole::Tunnel {
                key: t.key,
                is_static: t.is_static,
            }
        } else {
            PortRole::Unknown
        }
    }

    fn local_in(&self, vnet: u32) -> &[u32] {
        self.flood.get(&vnet).map_or(&[], |s| &s.local)
    }

    fn static_tunnels_in(&self, vnet: u32) -> &[u32] {
        self.flood.get(&vnet).map_or(&[], |s| &s.static_tunnels)
    }
}

impl Fib {
    /// Recompute the flood sets from the ports and tunnels.
    pub fn rebuild_flood(&mut self) {
        let mut flood: FastMap<u32, FloodSet> = FastMap::default();
        let mut local: Vec<&LocalPort> = self.local.values().collect();
        local.sort_by_key(|p| p.port_no);
        for p in local {
            flood.entry(p.vnet).or_default().local.push(p.port_no);
        }
        let mut statics: Vec<&Arc<Tunnel>> = self.tunnels.values().filter(|t| t.is_static).collect();
        statics.sort_by_key(|t| t.port_no);
        for t in statics {
            flood.entry(t.key).or_default().static_tunnels.push(t.port_no);
        }
        self.flood = flood;
    }
}
