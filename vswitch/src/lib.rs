//! Cloud Rack's per-host virtual switch.
//!
//! Layers, after Open vSwitch's split: `port` (devices: AF_PACKET, tap), `tunnel` (GRE over a
//! raw IPv4 socket), `os` (the Linux calls), `pipeline` (the OpenFlow 1.3 flow tables, groups
//! and meters, translation, caches and the executor: pure, no I/O), `dp` (worker threads, the
//! lock-free FIB, where packets leave, offloads), `switch` (control-plane state), `ofp`
//! (OpenFlow 1.3 sessions with controllers and the passive listener), `ctl` (the management
//! socket behind cloudrack-ctl).

pub mod ctl;
pub mod dp;
pub mod ofp;
pub mod os;
pub mod pipeline;
pub mod port;
pub mod switch;
pub mod tunnel;
