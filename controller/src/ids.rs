//! What the controller's modules name things by. A leaf module: everything may depend on it.
//!
//! Switches, networks and ports are numbers on the wire (OpenFlow, TCCS) and in etcd's keys;
//! inside the controller each is its own type, so a port cannot be passed for a network. The
//! conversions happen where messages are read and built. Debug prints the bare number, as the
//! log lines that print these did before they had types.

use std::fmt;

/// One switch connection, numbered by the server as it accepts it (a switch that reconnects
/// gets a new one).
pub type ConnId = u64;

/// A VM's (or a host's underlay) MAC address: the one MAC type, from the wire crate.
pub use cloudrack_wire::mac::Mac;

/// A switch's datapath id (`datapath_id` in OpenFlow, `dpid` in TCCS). Displays as the 16 hex
/// digits the logs and etcd keys use; `{:016x}` formats it the same.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Dpid(pub u64);

/// A virtual network: the GRE key of its tunnels, the `tunnel_id` of its flows and frames.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Vnet(pub u32);

/// An OpenFlow port number on one switch (a local port or a tunnel's end).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PortNo(pub u32);

impl Vnet {
    /// The network a 64-bit OpenFlow `tunnel_id` names: networks are 32-bit GRE keys, so a
    /// wider id is not one of ours.
    pub fn from_tunnel_id(id: u64) -> Option<Vnet> {
        u32::try_from(id).ok().map(Vnet)
    }

    /// As an OpenFlow `tunnel_id`.
    pub fn tunnel_id(self) -> u64 {
        u64::from(self.0)
    }
}

impl fmt::Display for Dpid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::LowerHex for Dpid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

/// Debug and Display as the bare number.
macro_rules! number {
    ($t:ty) => {
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    };
    ($t:ty, display) => {
        number!($t);
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

number!(Dpid);
number!(Vnet, display);
number!(PortNo, display);

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn they_print_as_their_numbers_did() {
        assert_eq!(Dpid(0x2a).to_string(), "000000000000002a");
        assert_eq!(format!("{:016x}", Dpid(0x2a)), format!("{:016x}", 0x2au64));
        assert_eq!(format!("{:?}", Some(Dpid(3))), "Some(3)");
        assert_eq!(
            (Vnet(7).to_string(), format!("{:?}", Vnet(7))),
            ("7".into(), "7".into())
        );
        assert_eq!(
            (PortNo(9).to_string(), format!("{:?}", PortNo(9))),
            ("9".into(), "9".into())
        );
    }

    #[test]
    fn networks_are_32_bit_tunnel_ids() {
        assert_eq!(Vnet::from_tunnel_id(5), Some(Vnet(5)));
        assert_eq!(Vnet::from_tunnel_id(1 << 32), None);
        assert_eq!(Vnet(u32::MAX).tunnel_id(), u64::from(u32::MAX));
    }
}
