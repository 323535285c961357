//! GRE tunnels: the raw socket that carries them and the pure encapsulation logic.

pub mod decap;
pub mod socket;

pub use decap::{decap, DecapError, Decapped};
pub use socket::GreSocket;

/// Bytes the underlay adds to every tunnelled frame: outer IPv4 (20) + keyed GRE (8).
pub const OUTER_OVERHEAD: usize = 20 + cloudrack_wire::gre::KEYED_LEN;
