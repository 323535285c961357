//! Cloud Rack controller library: the OpenFlow server (`server`), the single-threaded app that
//! owns all state (`app`), and its two halves, the Commander (`commander`: MAC locations,
//! forwarding) and TCCS (`tccs`: host registry, tunnels). The binary in main.rs wires them up.

pub mod app;
pub mod commander;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod members;
pub mod server;
pub mod store;
pub mod tccs;
