//! The switch's OpenFlow flow table, in the one shape this datapath forwards on:
//! match (virtual network = OXM tunnel_id, Ethernet destination) → output one port, or drop.
//!
//! The control plane owns it (no locking of its own); it is compiled into the FIB's MAC table.
//! Flow-mod semantics follow OpenFlow 1.3: ADD replaces an identical match, MODIFY changes only
//! existing flows, DELETE takes a wildcard filter, strict variants want the exact match.

use crate::dp::fib::{Mac, MacEntry};
use crate::dp::stats::{now_ms, FlowCounters};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// The match of a flow: both fields exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub vnet: u32,
    pub mac: Mac,
}

/// A wildcard filter for DELETE and for flow statistics: `None` matches anything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowFilter {
    pub vnet: Option<u32>,
    pub mac: Option<Mac>,
    /// Only flows that output to this port.
    pub out_port: Option<u32>,
    /// (cookie, mask): only flows whose cookie & mask == cookie & mask.
    pub cookie: Option<(u64, u64)>,
}

#[derive(Debug, Clone)]
pub struct Flow {
    pub key: FlowKey,
    pub priority: u16,
    /// `None`: drop.
    pub out_port: Option<u32>,
    pub cookie: u64,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub flags: u16,
    pub installed_ms: u64,
    pub counters: Arc<FlowCounters>,
}

impl Flow {
    pub fn new(key: FlowKey, out_port: Option<u32>) -> Flow {
        Flow {
            key,
            priority: 0x8000,
            out_port,
            cookie: 0,
            idle_timeout: 0,
            hard_timeout: 0,
            flags: 0,
            installed_ms: now_ms(),
            counters: Arc::default(),
        }
    }

    fn matches(&self, f: &FlowFilter) -> bool {
        f.vnet.is_none_or(|v| v == self.key.vnet)
            && f.mac.is_none_or(|m| m == self.key.mac)
            && f.out_port.is_none_or(|p| Some(p) == self.out_port)
            && f.cookie.is_none_or(|(c, m)| self.cookie & m == c & m)
    }

    /// Why this flow has expired at `now`, if it has.
    pub fn expired(&self, now: u64) -> Option<ExpiryReason> {
        let last = self.counters.last_used_ms.load(Relaxed).max(self.installed_ms);
        if self.idle_timeout > 0 && now.saturating_sub(last) >= self.idle_timeout as u64 * 1000 {
            return Some(ExpiryReason::Idle);
        }
        if self.hard_timeout > 0 && now.saturating_sub(self.installed_ms) >= self.hard_timeout as u64 * 1000 {
            return Some(ExpiryReason::Hard);
        }
        None
    }
}

/// Flows are equal when they forward alike (counters and timestamps aside).
impl PartialEq for Flow {
    fn eq(&self, o: &Flow) -> bool {
        self.key == o.key && self.out_port == o.out_port && self.priority == o.priority && self.cookie == o.cookie
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryReason {
    Idle,
    Hard,
}

#[derive(Default)]
pub struct FlowTable {
    flows: BTreeMap<FlowKey, Flow>,
    /// Upper bound on entries; ADD beyond it fails (OFPFMFC_TABLE_FULL).
    pub capacity: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

impl FlowTable {
    pub fn with_capacity(capacity: usize) -> FlowTable {
        FlowTable {
            flows: BTreeMap::new(),
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn get(&self, key: &FlowKey) -> Option<&Flow> {
        self.flows.get(key)
    }

    /// ADD: insert, replacing a flow with the same match (its counters restart).
    pub fn add(&mut self, flow: Flow) -> Result<(), TableFull> {
        if !self.flows.contains_key(&flow.key) && self.flows.len() >= self.capacity {
            return Err(TableFull);
        }
        self.flows.insert(flow.key, flow);
        Ok(())
    }

    /// MODIFY: change the action of existing flows that pass the filter (strict: the one flow
    /// with exactly this key). Counters are kept. Returns how many changed.
    pub fn modify(&mut self, filter: &FlowFilter, strict: Option<FlowKey>, out_port: Option<u32>) -> usize {
        let mut n = 0;
        for flow in self.flows.values_mut() {
            let hit = match strict {
                Some(k) => flow.key == k,
                None => flow.matches(filter),
            };
            if hit {
                flow.out_port = out_port;
                n += 1;
            }
        }
        n
    }

    /// DELETE: remove flows that pass the filter (strict: exactly this key). Returns them.
    pub fn delete(&mut self, filter: &FlowFilter, strict: Option<FlowKey>) -> Vec<Flow> {
        let keys: Vec<FlowKey> = self
            .flows
            .values()
            .filter(|f| match strict {
                Some(k) => f.key == k && f.matches(filter),
                None => f.matches(filter),
            })
            .map(|f| f.key)
            .collect();
        keys.iter().filter_map(|k| self.flows.remove(k)).collect()
    }

    /// Remove and return flows whose timeouts have run out.
    pub fn expire(&mut self, now: u64) -> Vec<(Flow, ExpiryReason)> {
        let keys: Vec<(FlowKey, ExpiryReason)> = self
            .flows
            .values()
            .filter_map(|f| f.expired(now).map(|r| (f.key, r)))
            .collect();
        keys.into_iter()
            .filter_map(|(k, r)| self.flows.remove(&k).map(|f| (f, r)))
            .collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Flow> {
        self.flows.values()
    }

    pub fn filtered<'a>(&'a self, filter: &'a FlowFilter) -> impl Iterator<Item = &'a Flow> {
        self.flows.values().filter(move |f| f.matches(filter))
    }

    /// The MAC table the workers read.
    pub fn compile(&self) -> crate::dp::fib::FastMap<(u32, Mac), MacEntry> {
        self.flows
            .values()
            .map(|f| {
                (
                    (f.key.vnet, f.key.mac),
                    MacEntry {
                        out_port: f.out_port,
                        counters: f.counters.clone(),
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn key(v: u32, last: u8) -> FlowKey {
        FlowKey {
            vnet: v,
            mac: [2, 0, 0, 0, 0, last],
        }
    }

    #[test]
    fn add_replaces_same_match_and_respects_capacity() {
        let mut t = FlowTable::with_capacity(2);
        t.add(Flow::new(key(0, 1), Some(1))).unwrap();
        t.add(Flow::new(key(0, 1), Some(2))).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(&key(0, 1)).unwrap().out_port, Some(2));
        t.add(Flow::new(key(0, 2), Some(1))).unwrap();
        assert_eq!(t.add(Flow::new(key(0, 3), Some(1))), Err(TableFull));
        // Replacing stays possible when full.
        t.add(Flow::new(key(0, 2), None)).unwrap();
    }

    #[test]
    fn modify_changes_only_existing() {
        let mut t = FlowTable::with_capacity(10);
        t.add(Flow::new(key(0, 1), Some(1))).unwrap();
        t.add(Flow::new(key(1, 1), Some(1))).unwrap();
        assert_eq!(t.modify(&FlowFilter::default(), Some(key(0, 9)), Some(3)), 0);
        assert_eq!(
            t.modify(
                &FlowFilter {
                    vnet: Some(1),
                    ..Default::default()
                },
                None,
                Some(7)
            ),
            1
        );
        assert_eq!(t.get(&key(1, 1)).unwrap().out_port, Some(7));
        assert_eq!(t.get(&key(0, 1)).unwrap().out_port, Some(1));
    }

    #[test]
    fn delete_by_out_port_and_cookie() {
        let mut t = FlowTable::with_capacity(10);
        for i in 0..4u8 {
            let mut f = Flow::new(key(0, i), Some(i as u32 % 2));
            f.cookie = i as u64;
            t.add(f).unwrap();
        }
        let gone = t.delete(
            &FlowFilter {
                out_port: Some(1),
                ..Default::default()
            },
            None,
        );
        assert_eq!(gone.len(), 2);
        let gone = t.delete(
            &FlowFilter {
                cookie: Some((2, 0xff)),
                ..Default::default()
            },
            None,
        );
        assert_eq!(gone.len(), 1);
        assert_eq!(t.len(), 1);
        assert_eq!(t.delete(&FlowFilter::default(), None).len(), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn idle_and_hard_timeouts() {
        let mut t = FlowTable::with_capacity(10);
        let mut f = Flow::new(key(0, 1), Some(1));
        f.installed_ms = 1000;
        f.idle_timeout = 2;
        t.add(f).unwrap();
        let mut h = Flow::new(key(0, 2), Some(1));
        h.installed_ms = 1000;
        h.hard_timeout = 5;
        h.counters.hit(1, 5900);
        t.add(h).unwrap();
        assert!(t.expire(2999).is_empty());
        // Traffic keeps the idle flow alive.
        t.get(&key(0, 1)).unwrap().counters.hit(1, 2500);
        assert!(t.expire(4000).is_empty());
        let e = t.expire(4500);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].1, ExpiryReason::Idle);
        let e = t.expire(6000);
        assert_eq!(e[0].1, ExpiryReason::Hard);
    }

    #[test]
    fn compile_builds_the_mac_table() {
        let mut t = FlowTable::with_capacity(10);
        t.add(Flow::new(key(3, 1), Some(4))).unwrap();
        t.add(Flow::new(key(3, 2), None)).unwrap();
        let m = t.compile();
        assert_eq!(m[&(3, [2, 0, 0, 0, 0, 1])].out_port, Some(4));
        assert_eq!(m[&(3, [2, 0, 0, 0, 0, 2])].out_port, None);
    }
}
