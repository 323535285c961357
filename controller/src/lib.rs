//! Cloud Rack controller library: the OpenFlow server (`server`: I/O threads), the
//! single-threaded app that owns all state (`app`) and sends through a handle per switch
//! (`conn_tx`), and the app's two halves, the Commander (`commander`: MAC locations,
//! forwarding) and TCCS (`tccs`: host registry, tunnels). The binary in main.rs wires them up.
//!
//! Dependencies run one way: `ids` and `io_counters` at the bottom, `conn_tx` on them, `event`
//! (what the app thread receives) on `conn_tx`; the server and etcd produce events, the app
//! consumes them, and neither knows the other.

pub mod app;
pub mod commander;
pub mod conn_tx;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod event;
pub mod ids;
pub mod io_counters;
pub mod members;
pub mod reconcile;
pub mod server;
pub mod store;
pub mod tccs;
