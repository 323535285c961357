//! A worker's flow caches, in front of the classifier (Open vSwitch's EMC and megaflow
//! `dpcls`): an exact-match cache keyed by the whole flow key, then a megaflow cache keyed by
//! the key under each translation's mask. Both belong to one worker (no sharing, no locks)
//! and are emptied whenever the pipeline or the ports change (a new FIB generation), so no
//! packet is ever forwarded by a stale translation.

use super::key::Key;
use super::xlate::Xlated;
use crate::dp::fib::FastMap;
use std::sync::Arc;

/// Entries in the exact-match cache before it starts over.
pub const EMC_MAX: usize = 8192;
/// Megaflows before the megaflow cache starts over.
pub const MEGAFLOW_MAX: usize = 65_536;

struct Megaflows {
    mask: Key,
    flows: FastMap<Key, Arc<Xlated>>,
}

#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub emc_hits: u64,
    pub megaflow_hits: u64,
    pub misses: u64,
}

pub struct FlowCache {
    generation: u64,
    emc: FastMap<Key, Arc<Xlated>>,
    mega: Vec<Megaflows>,
    n_mega: usize,
    pub stats: CacheStats,
}

impl Default for FlowCache {
    fn default() -> Self {
        FlowCache {
            generation: u64::MAX,
            emc: FastMap::default(),
            mega: Vec::new(),
            n_mega: 0,
            stats: CacheStats::default(),
        }
    }
}

impl FlowCache {
    /// Forget everything if `generation` is not the one the cache was filled under.
    #[inline]
    pub fn sync(&mut self, generation: u64) {
        if generation != self.generation {
            self.clear();
            self.generation = generation;
        }
    }

    pub fn clear(&mut self) {
        self.emc.clear();
        self.mega.clear();
        self.n_mega = 0;
    }

    #[inline]
    pub fn lookup(&mut self, key: &Key) -> Option<Arc<Xlated>> {
        if let Some(x) = self.emc.get(key) {
            self.stats.emc_hits += 1;
            return Some(x.clone());
        }
        for m in &self.mega {
            if let Some(x) = m.flows.get(&key.and(&m.mask)) {
                let x = x.clone();
                self.stats.megaflow_hits += 1;
                self.emc_insert(*key, x.clone());
                return Some(x);
            }
        }
        self.stats.misses += 1;
        None
    }

    fn emc_insert(&mut self, key: Key, x: Arc<Xlated>) {
        if self.emc.len() >= EMC_MAX {
            self.emc.clear();
        }
        self.emc.insert(key, x);
    }

    /// Cache a translation of `key`.
    pub fn insert(&mut self, key: &Key, x: Arc<Xlated>) {
        if self.n_mega >= MEGAFLOW_MAX {
            self.mega.clear();
            self.n_mega = 0;
        }
        let mask = x.mask;
        let i = match self.mega.iter().position(|m| m.mask == mask) {
            Some(i) => i,
            None => {
                self.mega.push(Megaflows {
                    mask,
                    flows: FastMap::default(),
                });
                self.mega.len() - 1
            }
        };
        if self.mega[i].flows.insert(key.and(&mask), x.clone()).is_none() {
            self.n_mega += 1;
        }
        self.emc_insert(*key, x);
    }

    pub fn megaflows(&self) -> usize {
        self.n_mega
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::pipeline::key::off;
    use crate::pipeline::xlate::Op;

    fn x(port: u32, mask: Key) -> Arc<Xlated> {
        Arc::new(Xlated {
            ops: vec![Op::Output(port)],
            mask,
            ..Default::default()
        })
    }

    #[test]
    fn megaflow_serves_other_keys_under_its_mask_and_generations_flush() {
        let mut c = FlowCache::default();
        c.sync(1);
        let mut mask = Key::default();
        mask.0[off::IN_PORT].fill(0xff);
        let mut k1 = Key::default();
        k1.set(off::IN_PORT, &1u32.to_be_bytes());
        k1.set(off::TP_DST, &[0, 80]);
        let mut k2 = k1;
        k2.set(off::TP_DST, &[0, 81]);
        assert!(c.lookup(&k1).is_none());
        c.insert(&k1, x(7, mask));
        assert!(matches!(c.lookup(&k1).unwrap().ops[0], Op::Output(7)));
        // Same in_port, another port number: the megaflow answers, then the EMC.
        assert!(c.lookup(&k2).is_some());
        assert!(c.lookup(&k2).is_some());
        assert_eq!(
            c.stats,
            CacheStats {
                emc_hits: 2,
                megaflow_hits: 1,
                misses: 1
            }
        );
        let mut k3 = k1;
        k3.set(off::IN_PORT, &2u32.to_be_bytes());
        assert!(c.lookup(&k3).is_none());
        c.sync(1);
        assert!(c.lookup(&k1).is_some());
        c.sync(2);
        assert!(c.lookup(&k1).is_none(), "a new generation empties the cache");
        assert_eq!(c.megaflows(), 0);
    }
}
