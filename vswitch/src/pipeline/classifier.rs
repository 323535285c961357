//! One flow table's classifier: tuple space search (the structure of Open vSwitch's
//! `classifier.c` and `dpcls`). Rules with the same mask share a subtable, a hash map from the
//! masked key to the rules with that exact (mask, value), highest priority first. A lookup
//! probes the subtables from the highest `max_priority` down and stops when no later subtable
//! can beat what it found.
//!
//! Persistent: subtables are `imbl` maps behind `Arc`s, so a clone of a classifier (what the
//! control plane publishes to the workers after every change) costs one `Arc` per subtable, and
//! an insert or removal copies one path of one map: updates stay incremental at 100,000 rules.
//!
//! Every lookup also reports the union of the masks it probed: a packet that agrees with this
//! one on those bits takes the same rule, which is what makes a megaflow (see `cache.rs`).

use super::key::Key;
use std::sync::Arc;

/// What a classifier holds: anything with a priority.
pub trait Rule {
    fn priority(&self) -> u16;
}

pub struct Subtable<R> {
    pub mask: Key,
    /// Rules by masked value; each list highest priority first.
    rules: imbl::HashMap<Key, Arc<Vec<Arc<R>>>>,
    /// How many rules have each priority, for `max_priority` after removals.
    priorities: imbl::OrdMap<u16, u32>,
    n_rules: usize,
}

impl<R: Rule> Subtable<R> {
    fn new(mask: Key) -> Self {
        Subtable {
            mask,
            rules: imbl::HashMap::new(),
            priorities: imbl::OrdMap::new(),
            n_rules: 0,
        }
    }

    pub fn max_priority(&self) -> u16 {
        self.priorities.get_max().map_or(0, |(p, _)| *p)
    }

    pub fn len(&self) -> usize {
        self.n_rules
    }

    pub fn is_empty(&self) -> bool {
        self.n_rules == 0
    }
}

// Clones share the rules (`Arc`s): no `R: Clone` needed.
impl<R> Clone for Subtable<R> {
    fn clone(&self) -> Self {
        Subtable {
            mask: self.mask,
            rules: self.rules.clone(),
            priorities: self.priorities.clone(),
            n_rules: self.n_rules,
        }
    }
}

impl<R> Clone for Classifier<R> {
    fn clone(&self) -> Self {
        Classifier {
            subtables: self.subtables.clone(),
            n_rules: self.n_rules,
        }
    }
}

pub struct Classifier<R> {
    /// Sorted by `max_priority`, highest first.
    subtables: Vec<Arc<Subtable<R>>>,
    n_rules: usize,
}

impl<R> Default for Classifier<R> {
    fn default() -> Self {
        Classifier {
            subtables: Vec::new(),
            n_rules: 0,
        }
    }
}

impl<R: Rule> Classifier<R> {
    pub fn len(&self) -> usize {
        self.n_rules
    }

    pub fn is_empty(&self) -> bool {
        self.n_rules == 0
    }

    pub fn n_subtables(&self) -> usize {
        self.subtables.len()
    }

    /// The highest-priority rule matching `key`; `probed` gains the masks looked at.
    #[inline]
    pub fn lookup(&self, key: &Key, probed: &mut Key) -> Option<&Arc<R>> {
        let mut best: Option<&Arc<R>> = None;
        for st in &self.subtables {
            let max = st.max_priority();
            if best.is_some_and(|b| b.priority() >= max) {
                break;
            }
            *probed = probed.or(&st.mask);
            if let Some(list) = st.rules.get(&key.and(&st.mask)) {
                let top = &list[0];
                if best.is_none_or(|b| top.priority() > b.priority()) {
                    best = Some(top);
                }
            }
        }
        best
    }

    /// The rule with exactly this mask, value and priority.
    pub fn find_exact(&self, mask: &Key, value: &Key, priority: u16) -> Option<&Arc<R>> {
        let st = self.subtables.iter().find(|s| s.mask == *mask)?;
        st.rules.get(value)?.iter().find(|r| r.priority() == priority)
    }

    /// Insert `rule` under (mask, value); it replaces a rule with the same priority there,
    /// which is returned.
    pub fn insert(&mut self, mask: &Key, value: &Key, rule: Arc<R>) -> Option<Arc<R>> {
        let idx = match self.subtables.iter().position(|s| s.mask == *mask) {
            Some(i) => i,
            None => {
                self.subtables.push(Arc::new(Subtable::new(*mask)));
                self.subtables.len() - 1
            }
        };
        let st = Arc::make_mut(&mut self.subtables[idx]);
        let prio = rule.priority();
        let mut list: Vec<Arc<R>> = st.rules.get(value).map(|l| l.as_ref().clone()).unwrap_or_default();
        let replaced = match list.iter().position(|r| r.priority() == prio) {
            Some(i) => Some(std::mem::replace(&mut list[i], rule)),
            None => {
                let at = list.iter().position(|r| r.priority() < prio).unwrap_or(list.len());
                list.insert(at, rule);
                None
            }
        };
        if replaced.is_none() {
            *st.priorities.entry(prio).or_insert(0) += 1;
            st.n_rules += 1;
            self.n_rules += 1;
        }
        st.rules.insert(*value, Arc::new(list));
        self.resort();
        replaced
    }

    /// Remove the rule with this mask, value and priority.
    pub fn remove(&mut self, mask: &Key, value: &Key, priority: u16) -> Option<Arc<R>> {
        let idx = self.subtables.iter().position(|s| s.mask == *mask)?;
        let st = Arc::make_mut(&mut self.subtables[idx]);
        let mut list: Vec<Arc<R>> = st.rules.get(value)?.as_ref().clone();
        let i = list.iter().position(|r| r.priority() == priority)?;
        let gone = list.remove(i);
        if list.is_empty() {
            st.rules.remove(value);
        } else {
            st.rules.insert(*value, Arc::new(list));
        }
        if let Some(n) = st.priorities.get_mut(&priority) {
            *n -= 1;
            if *n == 0 {
                st.priorities.remove(&priority);
            }
        }
        st.n_rules -= 1;
        self.n_rules -= 1;
        if st.n_rules == 0 {
            self.subtables.remove(idx);
        }
        self.resort();
        Some(gone)
    }

    fn resort(&mut self) {
        // Few subtables, nearly sorted: insertion sort by max priority, highest first.
        self.subtables.sort_by_key(|s| std::cmp::Reverse(s.max_priority()));
    }

    /// Every rule, subtable by subtable.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<R>> {
        self.subtables
            .iter()
            .flat_map(|st| st.rules.values().flat_map(|l| l.iter()))
    }

    /// Every rule with its (mask, value).
    pub fn iter_keyed(&self) -> impl Iterator<Item = (&Key, &Key, &Arc<R>)> {
        self.subtables.iter().flat_map(|st| {
            st.rules
                .iter()
                .flat_map(move |(v, l)| l.iter().map(move |r| (&st.mask, v, r)))
        })
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::pipeline::key::off;

    #[derive(Debug, PartialEq)]
    struct R(u16, &'static str);
    impl Rule for R {
        fn priority(&self) -> u16 {
            self.0
        }
    }

    fn mask(ranges: &[std::ops::Range<usize>]) -> Key {
        let mut m = Key::default();
        for r in ranges {
            m.0[r.clone()].fill(0xff);
        }
        m
    }

    fn key(port: u32, dst: u8) -> Key {
        let mut k = Key::default();
        k.set(off::IN_PORT, &port.to_be_bytes());
        k.0[off::ETH_DST.end - 1] = dst;
        k
    }

    #[test]
    fn highest_priority_wins_across_subtables_and_removal_restores() {
        let mut c: Classifier<R> = Classifier::default();
        let by_port = mask(&[off::IN_PORT]);
        let by_both = mask(&[off::IN_PORT, off::ETH_DST]);
        c.insert(&Key::default(), &Key::default(), Arc::new(R(0, "miss")));
        c.insert(&by_port, &key(1, 0), Arc::new(R(10, "port1")));
        c.insert(&by_both, &key(1, 9), Arc::new(R(20, "port1-dst9")));
        let mut probed = Key::default();
        assert_eq!(c.lookup(&key(1, 9), &mut probed).unwrap().1, "port1-dst9");
        // The highest subtable matched; the others could not beat it and were not probed.
        assert_eq!(probed, by_both);
        let mut probed = Key::default();
        assert_eq!(c.lookup(&key(1, 8), &mut probed).unwrap().1, "port1");
        assert_eq!(probed, by_both.or(&by_port));
        assert_eq!(c.lookup(&key(2, 9), &mut Key::default()).unwrap().1, "miss");
        assert_eq!(c.len(), 3);
        assert!(c.remove(&by_both, &key(1, 9), 20).is_some());
        assert_eq!(c.n_subtables(), 2);
        assert_eq!(c.lookup(&key(1, 9), &mut Key::default()).unwrap().1, "port1");
        assert!(c.remove(&by_both, &key(1, 9), 20).is_none());
    }

    #[test]
    fn same_match_different_priorities_and_replacement() {
        let mut c: Classifier<R> = Classifier::default();
        let m = mask(&[off::IN_PORT]);
        c.insert(&m, &key(1, 0), Arc::new(R(5, "low")));
        c.insert(&m, &key(1, 0), Arc::new(R(7, "high")));
        assert_eq!(c.lookup(&key(1, 0), &mut Key::default()).unwrap().1, "high");
        let old = c.insert(&m, &key(1, 0), Arc::new(R(7, "high2"))).unwrap();
        assert_eq!(old.1, "high");
        assert_eq!(c.len(), 2);
        assert_eq!(c.find_exact(&m, &key(1, 0), 5).unwrap().1, "low");
        c.remove(&m, &key(1, 0), 7);
        assert_eq!(c.lookup(&key(1, 0), &mut Key::default()).unwrap().1, "low");
    }

    #[test]
    fn clones_are_snapshots() {
        let mut c: Classifier<R> = Classifier::default();
        let m = mask(&[off::IN_PORT]);
        for p in 0..1000u32 {
            c.insert(&m, &key(p, 0), Arc::new(R(1, "x")));
        }
        let snap = c.clone();
        c.remove(&m, &key(5, 0), 1);
        c.insert(&m, &key(5000, 0), Arc::new(R(1, "y")));
        assert!(snap.lookup(&key(5, 0), &mut Key::default()).is_some());
        assert!(snap.lookup(&key(5000, 0), &mut Key::default()).is_none());
        assert!(c.lookup(&key(5, 0), &mut Key::default()).is_none());
        assert_eq!((snap.len(), c.len()), (1000, 1000));
        assert_eq!(c.iter().count(), 1000);
    }
}
