//! GRE tunnels: the raw socket that sends them, the fanout sockets that receive them, and the
//! pure encapsulation logic.

pub mod cbpf;
pub mod claim;
pub mod decap;
pub mod fanout;
pub mod flow_hash;
pub mod pmtu;
pub mod socket;

pub use claim::GreClaim;
pub use decap::{decap, inner_offload, DecapError, Decapped};
pub use fanout::{GreRx, GreRxGroup};
pub use pmtu::{PathMtu, PmtuTable};
pub use socket::GreSocket;

/// Bytes the underlay adds to every tunnelled frame: outer IPv4 (20) + keyed GRE (8).
pub const OUTER_OVERHEAD: usize = 20 + cloudrack_wire::gre::KEYED_LEN;
