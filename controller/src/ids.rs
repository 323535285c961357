//! What the controller's modules name things by. A leaf module: everything may depend on it.

/// One switch connection, numbered by the server as it accepts it (a switch that reconnects
/// gets a new one).
pub type ConnId = u64;

/// A VM's (or a host's underlay) MAC address: the one MAC type, from the wire crate.
pub use cloudrack_wire::mac::Mac;
