//! The Commander: the global location registry (virtual network, MAC) → (dpid, port), and which
//! switches hold a forwarding entry for each MAC (so a move re-points exactly those, and no
//! change is broadcast to hosts that never cared). Pure state.

use std::collections::{HashMap, HashSet};

pub type Mac = [u8; 6];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Location {
    pub dpid: u64,
    pub port: u32,
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
}

#[derive(Default)]
pub struct Commander {
    locations: HashMap<(u32, Mac), Location>,
    /// Switches with a flow for (vnet, MAC).
    installed: HashMap<(u32, Mac), HashSet<u64>>,
}

impl Commander {
    pub fn locate(&self, vnet: u32, mac: &Mac) -> Option<Location> {
        self.locations.get(&(vnet, *mac)).copied()
    }

    pub fn learn(&mut self, vnet: u32, mac: Mac, at: Location) -> Learned {
        match self.locations.insert((vnet, mac), at) {
            None => Learned::New,
            Some(old) if old == at => Learned::Same,
            Some(old) if old.dpid == at.dpid => Learned::PortChanged { from: old },
            Some(old) => Learned::Moved { from: old },
        }
    }

    /// Keep a location only if nothing newer is known (used when rebuilding from switches).
    pub fn learn_if_unknown(&mut self, vnet: u32, mac: Mac, at: Location) {
        self.locations.entry((vnet, mac)).or_insert(at);
    }

    pub fn installed_on(&mut self, vnet: u32, mac: Mac, dpid: u64) {
        self.installed.entry((vnet, mac)).or_default().insert(dpid);
    }

    pub fn removed_from(&mut self, vnet: u32, mac: Mac, dpid: u64) {
        if let Some(s) = self.installed.get_mut(&(vnet, mac)) {
            s.remove(&dpid);
            if s.is_empty() {
                self.installed.remove(&(vnet, mac));
            }
        }
    }

    /// Switches holding an entry for the MAC.
    pub fn holders(&self, vnet: u32, mac: &Mac) -> Vec<u64> {
        let mut v: Vec<u64> = self
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
}

#[cfg(test)]
mod test {
    use super::*;

    const M: Mac = [2, 0, 0, 0, 0, 1];

    #[test]
    fn learning_classifies_moves() {
        let mut c = Commander::default();
        let a = Location { dpid: 1, port: 1 };
        assert_eq!(c.learn(0, M, a), Learned::New);
        assert_eq!(c.learn(0, M, a), Learned::Same);
        let a2 = Location { dpid: 1, port: 2 };
        assert_eq!(c.learn(0, M, a2), Learned::PortChanged { from: a });
        let b = Location { dpid: 2, port: 1 };
        assert_eq!(c.learn(0, M, b), Learned::Moved { from: a2 });
        // Networks are apart.
        assert_eq!(c.learn(7, M, a), Learned::New);
        assert_eq!(c.locate(0, &M), Some(b));
    }

    #[test]
    fn holders_and_rebuild() {
        let mut c = Commander::default();
        c.installed_on(0, M, 3);
        c.installed_on(0, M, 1);
        c.installed_on(0, M, 3);
        assert_eq!(c.holders(0, &M), vec![1, 3]);
        c.removed_from(0, M, 3);
        assert_eq!(c.holders(0, &M), vec![1]);
        c.learn(0, M, Location { dpid: 1, port: 4 });
        c.learn_if_unknown(0, M, Location { dpid: 9, port: 9 });
        assert_eq!(c.locate(0, &M).unwrap().dpid, 1);
    }
}
