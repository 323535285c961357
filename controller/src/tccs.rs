//! TCCS, the Topology Central Control Service: which host (dpid) has which underlay address,
//! and which GRE tunnels exist between hosts. Pure state; the app sends the messages.

use crate::ids::{Dpid, Mac, PortNo, Vnet};
use cloudrack_wire::tccs::port_ranges;
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// Tunnel port numbers the controller hands out (the switch numbers its local ports below and
/// its static tunnels above this range: `cloudrack_wire::tccs::port_ranges`).
pub const FIRST_TUNNEL_PORT: PortNo = PortNo(port_ranges::FIRST_CONTROLLER_TUNNEL);
pub const LAST_TUNNEL_PORT: PortNo = PortNo(port_ranges::LAST_CONTROLLER_TUNNEL);

#[derive(Debug, Clone)]
pub struct Host {
    pub dpid: Dpid,
    pub underlay_ip: Ipv4Addr,
    pub underlay_mac: Mac,
    next_tunnel_port: PortNo,
}

/// One tunnel between two hosts for one key: the port number on each end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelPair {
    pub a: Dpid,
    pub port_a: PortNo,
    pub b: Dpid,
    pub port_b: PortNo,
    /// The network it carries (its GRE key).
    pub key: Vnet,
}

impl TunnelPair {
    /// The port on `dpid`'s end.
    pub fn port_on(&self, dpid: Dpid) -> Option<PortNo> {
        if dpid == self.a {
            Some(self.port_a)
        } else if dpid == self.b {
            Some(self.port_b)
        } else {
            None
        }
    }
}

#[derive(Default)]
pub struct Tccs {
    pub hosts: HashMap<Dpid, Host>,
    /// Keyed by (lower dpid, higher dpid, key).
    tunnels: HashMap<(Dpid, Dpid, Vnet), TunnelPair>,
    /// (dpid, port_no) -> tunnel key, to find a tunnel from one end's report.
    by_port: HashMap<(Dpid, PortNo), (Dpid, Dpid, Vnet)>,
    /// Static tunnels (configured by hand on a switch): (dpid, port_no) -> key.
    pub static_ports: HashMap<(Dpid, PortNo), Vnet>,
}

fn norm(a: Dpid, b: Dpid, key: Vnet) -> (Dpid, Dpid, Vnet) {
    if a <= b {
        (a, b, key)
    } else {
        (b, a, key)
    }
}

/// What `ensure_tunnel` decided.
pub enum Ensure {
    Exists(TunnelPair),
    /// New: the caller must send TunnelAdd to both ends.
    Created(TunnelPair),
}

impl Tccs {
    pub fn register(&mut self, dpid: Dpid, underlay_ip: Ipv4Addr, underlay_mac: Mac) {
        let next = self.hosts.get(&dpid).map_or(FIRST_TUNNEL_PORT, |h| h.next_tunnel_port);
        self.hosts.insert(
            dpid,
            Host {
                dpid,
                underlay_ip,
                underlay_mac,
                next_tunnel_port: next,
            },
        );
    }

    pub fn host_by_ip(&self, ip: Ipv4Addr) -> Option<&Host> {
        self.hosts.values().find(|h| h.underlay_ip == ip)
    }

    /// A free tunnel port on `dpid`, always within FIRST_TUNNEL_PORT..=LAST_TUNNEL_PORT; None
    /// when every one is taken.
    fn alloc_port(&mut self, dpid: Dpid) -> Option<PortNo> {
        let next = |p: PortNo| {
            if p >= LAST_TUNNEL_PORT {
                FIRST_TUNNEL_PORT
            } else {
                PortNo(p.0 + 1)
            }
        };
        let host = self.hosts.get(&dpid)?;
        let mut p = host.next_tunnel_port;
        if !(FIRST_TUNNEL_PORT..=LAST_TUNNEL_PORT).contains(&p) {
            p = FIRST_TUNNEL_PORT;
        }
        for _ in FIRST_TUNNEL_PORT.0..=LAST_TUNNEL_PORT.0 {
            if !self.by_port.contains_key(&(dpid, p)) {
                self.hosts.get_mut(&dpid)?.next_tunnel_port = next(p);
                return Some(p);
            }
            p = next(p);
        }
        None
    }

    /// The tunnel between `a` and `b` for `key`, created if needed. `None` if either host is
    /// not registered.
    pub fn ensure_tunnel(&mut self, a: Dpid, b: Dpid, key: Vnet) -> Option<Ensure> {
        let k = norm(a, b, key);
        if let Some(t) = self.tunnels.get(&k) {
            return Some(Ensure::Exists(*t));
        }
        if !self.hosts.contains_key(&a) || !self.hosts.contains_key(&b) || a == b {
            return None;
        }
        let port_a = self.alloc_port(k.0)?;
        let port_b = self.alloc_port(k.1)?;
        let t = TunnelPair {
            a: k.0,
            port_a,
            b: k.1,
            port_b,
            key,
        };
        self.insert(t);
        Some(Ensure::Created(t))
    }

    fn insert(&mut self, t: TunnelPair) {
        let k = norm(t.a, t.b, t.key);
        self.by_port.insert((t.a, t.port_a), k);
        self.by_port.insert((t.b, t.port_b), k);
        self.tunnels.insert(k, t);
    }

    /// A switch reported an existing tunnel (after a controller restart). Both ends report;
    /// the pair is complete once both have.
    pub fn report(&mut self, dpid: Dpid, remote_dpid: Dpid, port_no: PortNo, key: Vnet) {
        let k = norm(dpid, remote_dpid, key);
        let mut t = self.tunnels.get(&k).copied().unwrap_or(TunnelPair {
            a: k.0,
            port_a: PortNo(0),
            b: k.1,
            port_b: PortNo(0),
            key,
        });
        if dpid == t.a {
            t.port_a = port_no;
        } else {
            t.port_b = port_no;
        }
        self.by_port.insert((dpid, port_no), k);
        self.tunnels.insert(k, t);
        self.port_in_use(dpid, port_no);
    }

    /// Hand out ports after the highest one known in use, within our range (a number outside
    /// it is a static or foreign port and says nothing about ours).
    fn port_in_use(&mut self, dpid: Dpid, port_no: PortNo) {
        if let Some(h) = self.hosts.get_mut(&dpid) {
            if (FIRST_TUNNEL_PORT..LAST_TUNNEL_PORT).contains(&port_no) {
                h.next_tunnel_port = h.next_tunnel_port.max(PortNo(port_no.0 + 1));
            }
        }
    }

    /// A tunnel from the store (a new master loading the registry). Refused if an end is not a
    /// registered host, a port is outside our range, or a port is taken by another tunnel.
    pub fn adopt(&mut self, t: TunnelPair) -> bool {
        let k = norm(t.a, t.b, t.key);
        let ours = |p: PortNo| (FIRST_TUNNEL_PORT..=LAST_TUNNEL_PORT).contains(&p);
        let free = |d: Dpid, p: PortNo| self.by_port.get(&(d, p)).is_none_or(|o| *o == k);
        if t.a == t.b
            || !self.hosts.contains_key(&t.a)
            || !self.hosts.contains_key(&t.b)
            || !ours(t.port_a)
            || !ours(t.port_b)
            || !free(t.a, t.port_a)
            || !free(t.b, t.port_b)
        {
            return false;
        }
        let t = TunnelPair {
            a: k.0,
            port_a: if k.0 == t.a { t.port_a } else { t.port_b },
            b: k.1,
            port_b: if k.0 == t.a { t.port_b } else { t.port_a },
            key: t.key,
        };
        self.insert(t);
        self.port_in_use(t.a, t.port_a);
        self.port_in_use(t.b, t.port_b);
        true
    }

    /// The tunnel between `a` and `b` for `key`, if there is one.
    pub fn between(&self, a: Dpid, b: Dpid, key: Vnet) -> Option<TunnelPair> {
        self.tunnels.get(&norm(a, b, key)).copied()
    }

    /// The tunnel whose end on `dpid` is `port_no`.
    pub fn by_port(&self, dpid: Dpid, port_no: PortNo) -> Option<TunnelPair> {
        self.by_port
            .get(&(dpid, port_no))
            .and_then(|k| self.tunnels.get(k))
            .copied()
    }

    pub fn is_tunnel_port(&self, dpid: Dpid, port_no: PortNo) -> bool {
        self.by_port.contains_key(&(dpid, port_no))
    }

    /// Forget a tunnel (released as idle, or a host gone).
    pub fn remove(&mut self, t: &TunnelPair) {
        self.tunnels.remove(&norm(t.a, t.b, t.key));
        self.by_port.remove(&(t.a, t.port_a));
        self.by_port.remove(&(t.b, t.port_b));
    }

    pub fn tunnels(&self) -> impl Iterator<Item = &TunnelPair> {
        self.tunnels.values()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn tccs() -> Tccs {
        let mut t = Tccs::default();
        t.register(Dpid(1), Ipv4Addr::new(198, 18, 0, 1), Mac([2, 0, 0, 0, 0, 1]));
        t.register(Dpid(2), Ipv4Addr::new(198, 18, 0, 2), Mac([2, 0, 0, 0, 0, 2]));
        t.register(Dpid(3), Ipv4Addr::new(198, 18, 0, 3), Mac([2, 0, 0, 0, 0, 3]));
        t
    }

    #[test]
    fn ports_stay_in_range_after_reports_at_its_edge() {
        let mut t = tccs();
        // Found by the ofp_controller fuzz target: a restarted controller hears of a tunnel on
        // the last port (or on a number outside the range) and must not hand out 0xe000 next.
        t.report(Dpid(1), Dpid(2), LAST_TUNNEL_PORT, Vnet(0));
        t.report(Dpid(1), Dpid(3), PortNo(0xffff_fffe), Vnet(0));
        let Some(Ensure::Created(p)) = t.ensure_tunnel(Dpid(1), Dpid(3), Vnet(5)) else {
            panic!("no tunnel")
        };
        let port = p.port_on(Dpid(1)).unwrap();
        assert!(
            (FIRST_TUNNEL_PORT..=LAST_TUNNEL_PORT).contains(&port),
            "port {:#x}",
            port.0
        );
        assert_ne!(port, LAST_TUNNEL_PORT, "that one is taken");
    }

    #[test]
    fn tunnels_are_created_once_with_distinct_ports() {
        let mut t = tccs();
        let Some(Ensure::Created(ab)) = t.ensure_tunnel(Dpid(2), Dpid(1), Vnet(0)) else {
            panic!()
        };
        assert_eq!((ab.a, ab.b), (Dpid(1), Dpid(2)));
        assert!(matches!(t.ensure_tunnel(Dpid(1), Dpid(2), Vnet(0)), Some(Ensure::Exists(x)) if x == ab));
        let Some(Ensure::Created(ac)) = t.ensure_tunnel(Dpid(1), Dpid(3), Vnet(0)) else {
            panic!()
        };
        assert_ne!(ac.port_a, ab.port_a, "host 1 has two tunnel ports");
        let Some(Ensure::Created(ab5)) = t.ensure_tunnel(Dpid(1), Dpid(2), Vnet(5)) else {
            panic!()
        };
        assert_ne!(ab5.port_a, ab.port_a, "another key is another tunnel");
        assert_eq!(t.by_port(Dpid(1), ac.port_a), Some(ac));
        assert!(t.ensure_tunnel(Dpid(1), Dpid(9), Vnet(0)).is_none());
        assert!(t.ensure_tunnel(Dpid(1), Dpid(1), Vnet(0)).is_none());
        t.remove(&ab);
        assert!(t.by_port(Dpid(1), ab.port_a).is_none());
        assert!(matches!(
            t.ensure_tunnel(Dpid(1), Dpid(2), Vnet(0)),
            Some(Ensure::Created(_))
        ));
    }

    #[test]
    fn reports_rebuild_the_registry() {
        let mut t = tccs();
        t.report(Dpid(1), Dpid(2), PortNo(0x4005), Vnet(0));
        t.report(Dpid(2), Dpid(1), PortNo(0x4009), Vnet(0));
        let pair = t.by_port(Dpid(2), PortNo(0x4009)).unwrap();
        assert_eq!(pair.port_on(Dpid(1)), Some(PortNo(0x4005)));
        assert_eq!(pair.port_on(Dpid(2)), Some(PortNo(0x4009)));
        // New ports do not collide with reported ones.
        let Some(Ensure::Created(n)) = t.ensure_tunnel(Dpid(1), Dpid(3), Vnet(0)) else {
            panic!()
        };
        assert!(n.port_a > PortNo(0x4005));
    }
}
