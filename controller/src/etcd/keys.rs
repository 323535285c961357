//! How the registries are laid out in etcd: one key per host, tunnel and MAC location under a
//! prefix (default `/cloudrack`), JSON values so `etcdctl get --prefix /cloudrack` reads them.
//!
//! ```text
//! {prefix}/hosts/{dpid:016x}                   {"underlay_ip":"198.18.0.1","underlay_mac":"02:..."}
//! {prefix}/tunnels/{a:016x}-{b:016x}-{key}     {"port_a":16384,"port_b":16385}
//! {prefix}/locations/{vnet}/{mac}              {"dpid":"0000000000000001","port":3}
//!                                              (plus "port_gone":true once that port is deleted)
//! {prefix}/election                            etcd's election (one key per candidate)
//! ```
//! Locations live under their host's lease, tunnels under their lower host's: when a host
//! vanishes and nobody keeps its lease alive, its entries expire with it.

use crate::commander::Location;
use crate::ids::{Dpid, Mac, PortNo, Vnet};
use crate::store::HostRecord;
use crate::tccs::TunnelPair;
use serde::{Deserialize, Serialize};

/// What a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Host(Dpid),
    Tunnel { a: Dpid, b: Dpid, key: Vnet },
    Location { vnet: Vnet, mac: Mac },
}

pub fn host(prefix: &str, dpid: Dpid) -> String {
    format!("{prefix}/hosts/{dpid:016x}")
}

pub fn tunnel(prefix: &str, t: &TunnelPair) -> String {
    format!("{prefix}/tunnels/{:016x}-{:016x}-{}", t.a, t.b, t.key)
}

pub fn location(prefix: &str, vnet: Vnet, mac: &Mac) -> String {
    format!("{prefix}/locations/{vnet}/{mac}")
}

pub fn election(prefix: &str) -> String {
    format!("{prefix}/election")
}

/// A MAC in the canonical form we write (`02:00:00:00:0a:ff`); anything else is not our key.
pub fn parse_mac(s: &str) -> Option<Mac> {
    s.parse::<Mac>().ok().filter(|m| m.to_string() == s)
}

/// The key's meaning, or None for a key that is not ours (or malformed).
pub fn parse(prefix: &str, key: &str) -> Option<Key> {
    let rest = key.strip_prefix(prefix)?.strip_prefix('/')?;
    let (kind, rest) = rest.split_once('/')?;
    match kind {
        "hosts" => (rest.len() == 16)
            .then(|| u64::from_str_radix(rest, 16).ok())
            .flatten()
            .map(|d| Key::Host(Dpid(d))),
        "tunnels" => {
            let mut it = rest.splitn(3, '-');
            let a = Dpid(u64::from_str_radix(it.next()?, 16).ok()?);
            let b = Dpid(u64::from_str_radix(it.next()?, 16).ok()?);
            let key = Vnet(it.next()?.parse().ok()?);
            Some(Key::Tunnel { a, b, key })
        }
        "locations" => {
            let (vnet, mac) = rest.split_once('/')?;
            Some(Key::Location {
                vnet: Vnet(vnet.parse().ok()?),
                mac: parse_mac(mac)?,
            })
        }
        _ => None,
    }
}

#[derive(Serialize, Deserialize)]
struct HostValue {
    underlay_ip: std::net::Ipv4Addr,
    underlay_mac: String,
}

#[derive(Serialize, Deserialize)]
struct TunnelValue {
    port_a: u32,
    port_b: u32,
}

#[derive(Serialize, Deserialize)]
struct LocationValue {
    dpid: String,
    port: u32,
    /// Written only when true, so values from before it existed read the same.
    #[serde(default, skip_serializing_if = "is_false")]
    port_gone: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

pub fn host_value(h: &HostRecord) -> String {
    serde_json::to_string(&HostValue {
        underlay_ip: h.underlay_ip,
        underlay_mac: h.underlay_mac.to_string(),
    })
    .unwrap_or_default()
}

pub fn tunnel_value(t: &TunnelPair) -> String {
    serde_json::to_string(&TunnelValue {
        port_a: t.port_a.0,
        port_b: t.port_b.0,
    })
    .unwrap_or_default()
}

/// A location's value; `port_gone` once its port was deleted.
pub fn location_value(at: &Location, port_gone: bool) -> String {
    serde_json::to_string(&LocationValue {
        dpid: format!("{:016x}", at.dpid),
        port: at.port.0,
        port_gone,
    })
    .unwrap_or_default()
}

pub fn parse_host(dpid: Dpid, value: &[u8]) -> Option<HostRecord> {
    let v: HostValue = serde_json::from_slice(value).ok()?;
    Some(HostRecord {
        dpid,
        underlay_ip: v.underlay_ip,
        underlay_mac: parse_mac(&v.underlay_mac)?,
    })
}

pub fn parse_tunnel(a: Dpid, b: Dpid, key: Vnet, value: &[u8]) -> Option<TunnelPair> {
    let v: TunnelValue = serde_json::from_slice(value).ok()?;
    Some(TunnelPair {
        a,
        port_a: PortNo(v.port_a),
        b,
        port_b: PortNo(v.port_b),
        key,
    })
}

/// A location, and whether its port is gone.
pub fn parse_location(value: &[u8]) -> Option<(Location, bool)> {
    let v: LocationValue = serde_json::from_slice(value).ok()?;
    let at = Location {
        dpid: Dpid(u64::from_str_radix(&v.dpid, 16).ok()?),
        port: PortNo(v.port),
    };
    Some((at, v.port_gone))
}

#[cfg(test)]
mod test {
    use super::*;
    use std::net::Ipv4Addr;

    const P: &str = "/cloudrack";

    #[test]
    fn keys_round_trip() {
        let t = TunnelPair {
            a: Dpid(1),
            port_a: PortNo(0x4000),
            b: Dpid(0xab),
            port_b: PortNo(0x4001),
            key: Vnet(7),
        };
        let mac = Mac([2, 0, 0, 0, 0xa, 0xff]);
        assert_eq!(host(P, Dpid(0x2a)), "/cloudrack/hosts/000000000000002a");
        assert_eq!(parse(P, &host(P, Dpid(0x2a))), Some(Key::Host(Dpid(0x2a))));
        assert_eq!(tunnel(P, &t), "/cloudrack/tunnels/0000000000000001-00000000000000ab-7");
        assert_eq!(
            parse(P, &tunnel(P, &t)),
            Some(Key::Tunnel {
                a: Dpid(1),
                b: Dpid(0xab),
                key: Vnet(7)
            })
        );
        assert_eq!(location(P, Vnet(5), &mac), "/cloudrack/locations/5/02:00:00:00:0a:ff");
        assert_eq!(
            parse(P, &location(P, Vnet(5), &mac)),
            Some(Key::Location { vnet: Vnet(5), mac })
        );
        assert_eq!(parse(P, "/other/hosts/000000000000002a"), None);
        assert_eq!(parse(P, "/cloudrack/hosts/2a"), None);
        assert_eq!(parse(P, "/cloudrack/locations/5/02:00"), None);
        assert_eq!(parse(P, "/cloudrack/election/694d"), None);
    }

    #[test]
    fn values_round_trip() {
        let h = HostRecord {
            dpid: Dpid(3),
            underlay_ip: Ipv4Addr::new(198, 18, 0, 3),
            underlay_mac: Mac([2, 0, 0, 0, 1, 3]),
        };
        // The values as etcdctl shows them (other controllers' versions read the same).
        assert_eq!(
            host_value(&h),
            r#"{"underlay_ip":"198.18.0.3","underlay_mac":"02:00:00:00:01:03"}"#
        );
        assert_eq!(parse_host(Dpid(3), host_value(&h).as_bytes()), Some(h));
        let t = TunnelPair {
            a: Dpid(1),
            port_a: PortNo(0x4000),
            b: Dpid(2),
            port_b: PortNo(0x4003),
            key: Vnet(0),
        };
        assert_eq!(tunnel_value(&t), r#"{"port_a":16384,"port_b":16387}"#);
        assert_eq!(
            parse_tunnel(Dpid(1), Dpid(2), Vnet(0), tunnel_value(&t).as_bytes()),
            Some(t)
        );
        let at = Location {
            dpid: Dpid(9),
            port: PortNo(4),
        };
        assert_eq!(parse_location(location_value(&at, false).as_bytes()), Some((at, false)));
        assert_eq!(parse_location(location_value(&at, true).as_bytes()), Some((at, true)));
        assert_eq!(
            location_value(&at, true),
            r#"{"dpid":"0000000000000009","port":4,"port_gone":true}"#
        );
        // Written before port_gone existed.
        let old = br#"{"dpid":"0000000000000009","port":4}"#;
        assert_eq!(parse_location(old), Some((at, false)));
        assert!(!location_value(&at, false).contains("port_gone"));
        assert_eq!(parse_location(b"{garbage"), None);
        assert_eq!(parse_mac("02:00:00:00:00:0g"), None);
        assert_eq!(parse_mac("02:00:00:00:00:01:02"), None);
    }
}
