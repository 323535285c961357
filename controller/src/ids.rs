//! What the controller's modules name things by. A leaf module: everything may depend on it.

/// One switch connection, numbered by the server as it accepts it (a switch that reconnects
/// gets a new one).
pub type ConnId = u64;
