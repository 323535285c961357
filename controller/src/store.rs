//! Where the registries live beyond this process. The app keeps its working state in memory
//! either way (every lookup is local, so the hot path never waits on a database); a `Store`
//! is told every change, in order, and hands everything back when a controller starts or
//! takes over as master.
//!
//! Two backends: `MemoryStore` (the default: nothing leaves the process, a restarted
//! controller rebuilds from the switches' flow tables as before) and `crate::etcd::EtcdStore`
//! (TCCS registry, tunnels and MAC locations in etcd, under leases of their hosts).

use crate::commander::Location;
use crate::ids::{Dpid, Mac, Vnet};
use crate::tccs::TunnelPair;
use std::net::Ipv4Addr;

/// One change to the registries, in the order the app made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A host registered (or re-registered) its underlay address.
    Host {
        dpid: Dpid,
        underlay_ip: Ipv4Addr,
        underlay_mac: Mac,
    },
    /// A host's switch is connected to us: keep its entries alive.
    HostUp { dpid: Dpid },
    /// Its connection ended: its entries expire unless it comes back (or another controller
    /// keeps them alive).
    HostDown { dpid: Dpid },
    /// A tunnel exists between two hosts (created by us, or reported by both ends).
    Tunnel(TunnelPair),
    /// A tunnel was released.
    TunnelGone(TunnelPair),
    /// Where a VM MAC is now.
    Location { vnet: Vnet, mac: Mac, at: Location },
    /// The port a VM MAC was located at is gone. The last location stays (the VM's next
    /// appearance is a move, so every holder gets re-pointed) and any port may claim the MAC;
    /// a master taking over must know, or it would refuse the VM at its new port.
    LocationReleased { vnet: Vnet, mac: Mac, at: Location },
}

/// A host as the registry keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostRecord {
    pub dpid: Dpid,
    pub underlay_ip: Ipv4Addr,
    pub underlay_mac: Mac,
}

/// A VM MAC's location as the registry keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocationRecord {
    pub vnet: Vnet,
    pub mac: Mac,
    pub at: Location,
    /// Its port was deleted (`Change::LocationReleased`).
    pub port_gone: bool,
}

/// Everything a store holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub hosts: Vec<HostRecord>,
    pub tunnels: Vec<TunnelPair>,
    pub locations: Vec<LocationRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("etcd: {0}")]
    Etcd(String),
}

pub trait Store: Send {
    /// Record a change. Never blocks the caller on the backend: changes are applied in order,
    /// in the background.
    fn record(&mut self, change: Change);
    /// Everything the backend holds (blocks; used at start and takeover, not per packet).
    fn load(&mut self) -> Result<Snapshot, StoreError>;
    /// The backend's name and counters, for the status report.
    fn status(&self) -> serde_json::Value;
}

/// The embedded default: the app's own tables are the registry.
#[derive(Debug, Default)]
pub struct MemoryStore;

impl Store for MemoryStore {
    fn record(&mut self, _change: Change) {}

    fn load(&mut self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::default())
    }

    fn status(&self) -> serde_json::Value {
        serde_json::json!({ "backend": "memory" })
    }
}
