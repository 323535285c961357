//! Cloud Rack's per-host virtual switch.
//!
//! Layers, after Open vSwitch's split: `port` (devices: AF_PACKET, tap), `tunnel` (GRE over a
//! raw IPv4 socket), `dp` (worker threads, the lock-free FIB, forwarding decisions, offloads),
//! `flow_table` + `switch` (control-plane state), `ofp` (OpenFlow 1.3 sessions with
//! controllers and the passive listener), `ctl` (the management socket behind cloudrack-ctl).

pub mod ctl;
pub mod dp;
pub mod flow_table;
pub mod ofp;
pub mod os;
pub mod pipeline;
pub mod port;
pub mod switch;
pub mod tunnel;
