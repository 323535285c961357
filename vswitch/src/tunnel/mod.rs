//! GRE tunnels: the raw socket that sends them, the fanout sockets that receive them, and the
//! pure encapsulation logic.

pub mod cbpf;
pub mod claim;
pub mod decap;
pub mod fanout;
pub mod flow_hash;
pub mod socket;

pub use claim::GreClaim;
pub use decap::{decap, DecapError, Decapped};
pub use fanout::{GreRx, GreRxGroup};
pub use socket::GreSocket;

/// Bytes the underlay adds to every tunnelled frame: outer IPv4 (20) + keyed GRE (8).
pub const OUTER_OVERHEAD: usize = 20 + cloudrack_wire::gre::KEYED_LEN;

/// Largest frame carried whole with its offload header: the outer IPv4 packet (20 + GRE 8 +
/// virtio-net header 10 + frame) must fit IPv4's 65 535-byte total length.
pub const MAX_OFFLOAD_FRAME: usize = 65_535 - OUTER_OVERHEAD - cloudrack_wire::vnet_hdr::LEN;
