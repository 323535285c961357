//! The Commander: the global location registry (virtual network, MAC) → (dpid, port), and which
//! switches hold a forwarding entry for each MAC (so a move re-points exactly those, and no
//! change is broadcast to hosts that never cared). Pure state.
//!
//! It also decides who may claim a MAC (MAC-move authorization, after OVN's requested-chassis):
//! a MAC bound to ports (the VM's own port, a migration's destination that declared the VM
//! before it arrives) may only be located at one of them; an unbound MAC belongs to the first
//! port it was seen on until that port is deleted. So a VM that sends with another VM's MAC,
//! gratuitous ARP and RARP included, does not take its traffic. Tables are bounded per port
//! and per network, so a VM inventing source MACs cannot grow the controller without end.

use crate::ids::{Dpid, Mac, PortNo, Vnet};
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Location {
    pub dpid: Dpid,
    pub port: PortNo,
}

/// What learning a source MAC found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    New,
    Same,
    /// Same host, another port.
    PortChanged {
        from: Location,
    },
    /// Another host: a live migration (or a VM that was moved by hand).
    Moved {
        from: Location,
    },
    /// Not accepted; the registry is unchanged.
    Refused(Refusal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The MAC is bound to other ports, or owned by the live port it was first seen on.
    NotBound { owner: Option<Location> },
    /// The port already has its limit of MACs.
    PortFull,
    /// The virtual network already has its limit of MACs.
    VnetFull,
}

/// Table bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub macs_per_port: usize,
    pub macs_per_vnet: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            macs_per_port: 256,
            macs_per_vnet: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    at: Location,
    /// Its port was deleted: any port may claim the MAC (unless it is bound elsewhere).
    orphaned: bool,
}

#[derive(Default)]
pub struct Commander {
    pub limits: Limits,
    locations: HashMap<(Vnet, Mac), Entry>,
    /// Switches with a flow for (vnet, MAC).
    installed: HashMap<(Vnet, Mac), HashSet<Dpid>>,
    /// Ports each bound MAC may be located at.
    bindings: HashMap<(Vnet, Mac), Vec<Location>>,
    /// The same, by port, and the bound ports of each switch: a port going away or a switch
    /// re-registering touches only its own entries (at 10,000 hosts a scan is the bottleneck).
    bindings_at: HashMap<Location, HashSet<(Vnet, Mac)>>,
    bound_ports: HashMap<Dpid, HashSet<PortNo>>,
    /// The MACs located at each port (its size is the per-port bound).
    port_macs: HashMap<Location, HashSet<(Vnet, Mac)>>,
    /// The ports of each switch that have MACs located at them (reconciling one switch must
    /// not scan every location).
    ports_with_macs: HashMap<Dpid, HashSet<PortNo>>,
    per_vnet: HashMap<Vnet, usize>,
}

impl Commander {
    pub fn with_limits(limits: Limits) -> Commander {
        Commander {
            limits,
            ..Default::default()
        }
    }

    pub fn locate(&self, vnet: Vnet, mac: &Mac) -> Option<Location> {
        self.locations.get(&(vnet, *mac)).map(|e| e.at)
    }

    fn is_bound_to(&self, vnet: Vnet, mac: &Mac, at: Location) -> bool {
        self.bindings.get(&(vnet, *mac)).is_some_and(|b| b.contains(&at))
    }

    /// A frame from `mac` arrived at `at`: record it there if `at` may hold it.
    pub fn learn(&mut self, vnet: Vnet, mac: Mac, at: Location) -> Learned {
        let key = (vnet, mac);
        let bound_here = self.is_bound_to(vnet, &mac, at);
        let bound_elsewhere = !bound_here && self.bindings.contains_key(&key);
        let old = self.locations.get(&key).copied();
        if let Some(e) = old {
            if e.at == at {
                return Learned::Same;
            }
            if !(bound_here || (e.orphaned && !bound_elsewhere)) {
                return Learned::Refused(Refusal::NotBound { owner: Some(e.at) });
            }
        } else if bound_elsewhere {
            return Learned::Refused(Refusal::NotBound { owner: None });
        }
        if self.port_macs.get(&at).map_or(0, HashSet::len) >= self.limits.macs_per_port {
            return Learned::Refused(Refusal::PortFull);
        }
        if old.is_none() && self.per_vnet.get(&vnet).copied().unwrap_or(0) >= self.limits.macs_per_vnet {
            return Learned::Refused(Refusal::VnetFull);
        }
        self.place(key, at, old.map(|e| e.at));
        match old {
            None => Learned::New,
            Some(e) if e.at.dpid == at.dpid => Learned::PortChanged { from: e.at },
            Some(e) => Learned::Moved { from: e.at },
        }
    }

    fn place(&mut self, key: (Vnet, Mac), at: Location, from: Option<Location>) {
        match from {
            Some(f) => {
                if let Some(macs) = self.port_macs.get_mut(&f) {
                    macs.remove(&key);
                    if macs.is_empty() {
                        self.port_macs.remove(&f);
                        if let Some(ports) = self.ports_with_macs.get_mut(&f.dpid) {
                            ports.remove(&f.port);
                            if ports.is_empty() {
                                self.ports_with_macs.remove(&f.dpid);
                            }
                        }
                    }
                }
            }
            None => *self.per_vnet.entry(key.0).or_default() += 1,
        }
        self.port_macs.entry(at).or_default().insert(key);
        self.ports_with_macs.entry(at.dpid).or_default().insert(at.port);
        self.locations.insert(key, Entry { at, orphaned: false });
    }

    /// Keep a location only if nothing newer is known (used when rebuilding from switches or
    /// the store). True if it was new.
    pub fn learn_if_unknown(&mut self, vnet: Vnet, mac: Mac, at: Location) -> bool {
        if self.locations.contains_key(&(vnet, mac)) {
            return false;
        }
        self.place((vnet, mac), at, None);
        true
    }

    /// Every MAC located on a switch.
    pub fn located_on(&self, dpid: Dpid) -> Vec<(Vnet, Mac, Location)> {
        self.ports_with_macs(dpid)
            .into_iter()
            .map(|port| Location { dpid, port })
            .flat_map(|at| {
                self.port_macs
                    .get(&at)
                    .into_iter()
                    .flatten()
                    .map(move |(vnet, mac)| (*vnet, *mac, at))
            })
            .collect()
    }

    /// The ports of a switch that have MACs located at them.
    pub fn ports_with_macs(&self, dpid: Dpid) -> Vec<PortNo> {
        self.ports_with_macs
            .get(&dpid)
            .map(|p| p.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The ports of a switch with at least one MAC located at them whose port is not known
    /// to be gone.
    pub fn ports_with_live_macs(&self, dpid: Dpid) -> Vec<PortNo> {
        let live = |at: &Location| {
            self.port_macs
                .get(at)
                .into_iter()
                .flatten()
                .any(|k| self.locations.get(k).is_some_and(|e| !e.orphaned))
        };
        self.ports_with_macs(dpid)
            .into_iter()
            .filter(|&port| live(&Location { dpid, port }))
            .collect()
    }

    /// The ports of a switch that are bound to a VM.
    pub fn bound_ports_of(&self, dpid: Dpid) -> Vec<PortNo> {
        self.bound_ports
            .get(&dpid)
            .map(|p| p.iter().copied().collect())
            .unwrap_or_default()
    }

    /// `at` is bound to the VM `mac`: it may take the MAC over. False if it already was.
    pub fn bind(&mut self, vnet: Vnet, mac: Mac, at: Location) -> bool {
        let b = self.bindings.entry((vnet, mac)).or_default();
        if b.contains(&at) {
            return false;
        }
        b.push(at);
        self.bindings_at.entry(at).or_default().insert((vnet, mac));
        self.bound_ports.entry(at.dpid).or_default().insert(at.port);
        true
    }

    pub fn unbind(&mut self, vnet: Vnet, mac: Mac, at: Location) {
        self.drop_binding((vnet, mac), at);
        if let Some(keys) = self.bindings_at.get_mut(&at) {
            keys.remove(&(vnet, mac));
            if keys.is_empty() {
                self.bindings_at.remove(&at);
                self.forget_bound_port(at);
            }
        }
    }

    fn drop_binding(&mut self, key: (Vnet, Mac), at: Location) {
        if let Some(b) = self.bindings.get_mut(&key) {
            b.retain(|l| *l != at);
            if b.is_empty() {
                self.bindings.remove(&key);
            }
        }
    }

    fn forget_bound_port(&mut self, at: Location) {
        if let Some(ports) = self.bound_ports.get_mut(&at.dpid) {
            ports.remove(&at.port);
            if ports.is_empty() {
                self.bound_ports.remove(&at.dpid);
            }
        }
    }

    /// Every binding of one port goes.
    fn unbind_port(&mut self, at: Location) {
        for key in self.bindings_at.remove(&at).unwrap_or_default() {
            self.drop_binding(key, at);
        }
        self.forget_bound_port(at);
    }

    /// Forget every binding on a switch (it re-registers and declares them again).
    pub fn unbind_switch(&mut self, dpid: Dpid) {
        for port in self.bound_ports.remove(&dpid).unwrap_or_default() {
            let at = Location { dpid, port };
            for key in self.bindings_at.remove(&at).unwrap_or_default() {
                self.drop_binding(key, at);
            }
        }
    }

    /// A port was deleted: its bindings go, and its MACs may be claimed by another port. Their
    /// locations stay, so when the VM shows up elsewhere every holder is re-pointed. Returns
    /// the MACs released now (not those released before).
    pub fn port_gone(&mut self, at: Location) -> Vec<(Vnet, Mac)> {
        self.unbind_port(at);
        let mut released = Vec::new();
        for key in self.port_macs.get(&at).into_iter().flatten() {
            if let Some(e) = self.locations.get_mut(key) {
                if !e.orphaned {
                    e.orphaned = true;
                    released.push(*key);
                }
            }
        }
        released
    }

    /// Mark one MAC's port as gone (a location loaded from the store that says so).
    pub fn release(&mut self, vnet: Vnet, mac: Mac) {
        if let Some(e) = self.locations.get_mut(&(vnet, mac)) {
            e.orphaned = true;
        }
    }

    /// Whether the MAC's port is gone: where it is now is unknown until it shows up again.
    pub fn released(&self, vnet: Vnet, mac: &Mac) -> bool {
        self.locations.get(&(vnet, *mac)).is_some_and(|e| e.orphaned)
    }

    pub fn installed_on(&mut self, vnet: Vnet, mac: Mac, dpid: Dpid) {
        self.installed.entry((vnet, mac)).or_default().insert(dpid);
    }

    pub fn removed_from(&mut self, vnet: Vnet, mac: Mac, dpid: Dpid) {
        if let Some(s) = self.installed.get_mut(&(vnet, mac)) {
            s.remove(&dpid);
            if s.is_empty() {
                self.installed.remove(&(vnet, mac));
            }
        }
    }

    /// Switches holding an entry for the MAC.
    pub fn holders(&self, vnet: Vnet, mac: &Mac) -> Vec<Dpid> {
        let mut v: Vec<Dpid> = self
            .installed
            .get(&(vnet, *mac))
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        v.sort_unstable();
        v
    }

    pub fn len(&self) -> usize {
        self.locations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.locations.is_empty()
    }

    /// MACs bound to at least one port.
    pub fn bindings_len(&self) -> usize {
        self.bindings.len()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const M: Mac = Mac([2, 0, 0, 0, 0, 1]);

    const A: Location = Location {
        dpid: Dpid(1),
        port: PortNo(1),
    };
    const A2: Location = Location {
        dpid: Dpid(1),
        port: PortNo(2),
    };
    const B: Location = Location {
        dpid: Dpid(2),
        port: PortNo(1),
    };
    const C: Location = Location {
        dpid: Dpid(3),
        port: PortNo(1),
    };

    #[test]
    fn learning_classifies_moves_to_bound_ports() {
        let mut c = Commander::default();
        assert_eq!(c.learn(Vnet(0), M, A), Learned::New);
        assert_eq!(c.learn(Vnet(0), M, A), Learned::Same);
        c.bind(Vnet(0), M, A2);
        assert_eq!(c.learn(Vnet(0), M, A2), Learned::PortChanged { from: A });
        c.bind(Vnet(0), M, B);
        assert_eq!(c.learn(Vnet(0), M, B), Learned::Moved { from: A2 });
        // Networks are apart: the same MAC in another network is another VM.
        assert_eq!(c.learn(Vnet(7), M, A), Learned::New);
        assert_eq!(c.locate(Vnet(0), &M), Some(B));
        assert_eq!(c.locate(Vnet(7), &M), Some(A));
    }

    #[test]
    fn an_unbound_port_cannot_take_a_live_mac() {
        let mut c = Commander::default();
        assert_eq!(c.learn(Vnet(0), M, A), Learned::New);
        let refused = Learned::Refused(Refusal::NotBound { owner: Some(A) });
        assert_eq!(c.learn(Vnet(0), M, B), refused);
        assert_eq!(c.learn(Vnet(0), M, A2), refused, "not even on the same host");
        assert_eq!(c.locate(Vnet(0), &M), Some(A));
        // Once its port is gone, the MAC is free for the next port (a VM moved by hand).
        assert_eq!(c.port_gone(A), vec![(Vnet(0), M)]);
        assert!(c.released(Vnet(0), &M));
        assert!(c.port_gone(A).is_empty(), "released once");
        assert_eq!(c.learn(Vnet(0), M, B), Learned::Moved { from: A });
        assert!(!c.released(Vnet(0), &M));
        assert_eq!(
            c.learn(Vnet(0), M, C),
            Learned::Refused(Refusal::NotBound { owner: Some(B) })
        );
    }

    #[test]
    fn a_bound_mac_lives_only_on_its_ports() {
        let mut c = Commander::default();
        c.bind(Vnet(0), M, A);
        // Seen first elsewhere: refused, the VM's own port is still to speak.
        assert_eq!(
            c.learn(Vnet(0), M, B),
            Learned::Refused(Refusal::NotBound { owner: None })
        );
        assert_eq!(c.learn(Vnet(0), M, A), Learned::New);
        // An orphaned bound MAC still can't be claimed by an unbound port while bound elsewhere.
        c.bind(Vnet(0), M, C);
        c.port_gone(A);
        assert_eq!(
            c.learn(Vnet(0), M, B),
            Learned::Refused(Refusal::NotBound { owner: Some(A) })
        );
        assert_eq!(c.learn(Vnet(0), M, C), Learned::Moved { from: A });
        c.unbind(Vnet(0), M, C);
        assert_eq!(c.bindings_len(), 0);
        c.bind(Vnet(0), M, B);
        c.unbind_switch(Dpid(2));
        assert_eq!(c.bindings_len(), 0);
    }

    #[test]
    fn tables_are_bounded() {
        let mut c = Commander::with_limits(Limits {
            macs_per_port: 2,
            macs_per_vnet: 3,
        });
        let mac = |i: u8| Mac([2, 0, 0, 0, 1, i]);
        assert_eq!(c.learn(Vnet(0), mac(1), A), Learned::New);
        assert_eq!(c.learn(Vnet(0), mac(2), A), Learned::New);
        assert_eq!(c.learn(Vnet(0), mac(3), A), Learned::Refused(Refusal::PortFull));
        assert_eq!(c.learn(Vnet(0), mac(3), B), Learned::New);
        assert_eq!(c.learn(Vnet(0), mac(4), C), Learned::Refused(Refusal::VnetFull));
        assert_eq!(
            c.learn(Vnet(1), mac(4), C),
            Learned::New,
            "another network has its own budget"
        );
        // A move frees its old port's slot.
        c.bind(Vnet(0), mac(1), B);
        assert_eq!(c.learn(Vnet(0), mac(1), B), Learned::Moved { from: A });
        assert_eq!(c.learn(Vnet(0), mac(5), A), Learned::Refused(Refusal::VnetFull));
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn holders_and_rebuild() {
        let mut c = Commander::default();
        c.installed_on(Vnet(0), M, Dpid(3));
        c.installed_on(Vnet(0), M, Dpid(1));
        c.installed_on(Vnet(0), M, Dpid(3));
        assert_eq!(c.holders(Vnet(0), &M), vec![Dpid(1), Dpid(3)]);
        c.removed_from(Vnet(0), M, Dpid(3));
        assert_eq!(c.holders(Vnet(0), &M), vec![Dpid(1)]);
        c.learn(
            Vnet(0),
            M,
            Location {
                dpid: Dpid(1),
                port: PortNo(4),
            },
        );
        c.learn_if_unknown(
            Vnet(0),
            M,
            Location {
                dpid: Dpid(9),
                port: PortNo(9),
            },
        );
        assert_eq!(c.locate(Vnet(0), &M).unwrap().dpid, Dpid(1));
    }

    #[test]
    fn ports_with_macs_follow_moves_and_released_marks_stay_until_the_mac_shows_up() {
        let mut c = Commander::default();
        let m2 = Mac([2, 0, 0, 0, 0, 2]);
        c.learn(Vnet(0), M, A);
        c.learn(Vnet(0), m2, A2);
        let mut ports = c.ports_with_macs(Dpid(1));
        ports.sort_unstable();
        assert_eq!(ports, vec![PortNo(1), PortNo(2)]);
        assert_eq!(c.located_on(Dpid(1)).len(), 2);
        c.port_gone(A2);
        assert_eq!(c.ports_with_live_macs(Dpid(1)), vec![PortNo(1)]);
        c.learn(Vnet(0), m2, B);
        assert_eq!(c.ports_with_macs(Dpid(1)), vec![PortNo(1)]);
        assert_eq!(c.located_on(Dpid(2)), vec![(Vnet(0), m2, B)]);
        // Loaded from a store that says its port is gone.
        assert!(c.learn_if_unknown(Vnet(0), Mac([2, 0, 0, 0, 0, 3]), C));
        c.release(Vnet(0), Mac([2, 0, 0, 0, 0, 3]));
        assert!(c.released(Vnet(0), &Mac([2, 0, 0, 0, 0, 3])));
        assert_eq!(c.learn(Vnet(0), Mac([2, 0, 0, 0, 0, 3]), B), Learned::Moved { from: C });
        assert!(c.ports_with_macs(Dpid(3)).is_empty());
        c.bind(Vnet(0), M, C);
        assert_eq!(c.bound_ports_of(Dpid(3)), vec![PortNo(1)]);
    }
}
