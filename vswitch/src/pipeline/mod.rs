//! The OpenFlow 1.3 pipeline, pure: flow tables, groups and meters, and what FLOW_MOD,
//! GROUP_MOD and METER_MOD do to them (spec 6.4, 5.6, 5.7). No I/O and no locks: the switch's
//! control plane owns a [`Pipeline`] and publishes clones of it (cheap: see `classifier.rs`)
//! to the datapath, whose workers translate packets through it (`xlate.rs`), cache the result
//! (`cache.rs`) and carry it out (`execute.rs`).
//!
//! Thread-safety: a `Pipeline` is plain data. The counters inside (flows, groups, meters) are
//! shared atomics, so a published snapshot and the control plane's copy count the same.

pub mod actions;
pub mod cache;
pub mod classifier;
pub mod execute;
pub mod field;
pub mod group;
pub mod key;
pub mod meter;
pub mod modify;
pub mod table;
pub mod text;
pub mod xlate;

use crate::dp::stats::{now_ms, FlowCounters};
use crate::ofp::translate::OfpErr;
use actions::{compile_instructions, Checks, N_TABLES};
use cloudrack_wire::ofp::{self, FlowMod, GroupMod, Instruction, MeterMod};
use field::FlowMatch;
use std::sync::Arc;
use table::{Expiry, FlowEntry, Table};

pub use group::Groups;
pub use meter::Meters;

#[derive(Clone)]
pub struct Pipeline {
    pub tables: Vec<Arc<Table>>,
    pub groups: Groups,
    pub meters: Meters,
    n_flows: usize,
    /// Most flow entries in all tables together; beyond it ADD fails with TABLE_FULL.
    pub capacity: usize,
}

/// Why a flow left the table (for FLOW_REMOVED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    Idle,
    Hard,
    Delete,
    GroupDelete,
}

/// What a FLOW_MOD did.
#[derive(Debug, Default)]
pub struct FlowModOutcome {
    /// Entries added, changed or removed.
    pub changed: usize,
    /// Entries removed (DELETE), to report.
    pub removed: Vec<Arc<FlowEntry>>,
}

/// Which flows a DELETE, a non-strict MODIFY or a statistics request is about.
#[derive(Debug, Clone)]
pub struct FlowFilter {
    /// A table, or OFPTT_ALL.
    pub table_id: u8,
    pub m: FlowMatch,
    /// Strict: only the entry with exactly this match and priority.
    pub strict: Option<u16>,
    pub out_port: u32,
    pub out_group: u32,
    pub cookie: u64,
    pub cookie_mask: u64,
}

impl Default for FlowFilter {
    /// Every flow of every table.
    fn default() -> FlowFilter {
        FlowFilter {
            table_id: ofp::OFPTT_ALL,
            m: FlowMatch::default(),
            strict: None,
            out_port: ofp::OFPP_ANY,
            out_group: ofp::OFPG_ANY,
            cookie: 0,
            cookie_mask: 0,
        }
    }
}

impl FlowFilter {
    fn takes(&self, e: &FlowEntry) -> bool {
        let matches = match self.strict {
            Some(p) => e.priority == p && e.m.mask == self.m.mask && e.m.value == self.m.value,
            None => e.m.is_within(&self.m),
        };
        matches
            && e.cookie & self.cookie_mask == self.cookie & self.cookie_mask
            && e.outputs_to(self.out_port)
            && e.uses_group(self.out_group)
    }

    fn tables(&self) -> std::ops::Range<usize> {
        if self.table_id == ofp::OFPTT_ALL {
            0..N_TABLES as usize
        } else {
            let t = self.table_id as usize;
            t..(t + 1).min(N_TABLES as usize)
        }
    }
}

const FMF: u16 = ofp::OFPET_FLOW_MOD_FAILED;

impl Checks for Pipeline {
    fn group_exists(&self, id: u32) -> bool {
        self.groups.contains_key(&id)
    }
    fn meter_exists(&self, id: u32) -> bool {
        self.meters.contains_key(&id)
    }
}

impl Pipeline {
    pub fn new(capacity: usize) -> Pipeline {
        Pipeline {
            tables: (0..N_TABLES).map(|_| Arc::new(Table::default())).collect(),
            groups: Groups::default(),
            meters: Meters::default(),
            n_flows: 0,
            capacity,
        }
    }

    pub fn n_flows(&self) -> usize {
        self.n_flows
    }

    pub fn table(&self, id: u8) -> &Table {
        &self.tables[id as usize]
    }

    /// Insert an entry built elsewhere (the switch's default table-miss entry).
    pub fn insert(&mut self, e: FlowEntry) -> Option<Arc<FlowEntry>> {
        let t = Arc::make_mut(&mut self.tables[e.table_id as usize]);
        let (mask, value) = (e.m.mask, e.m.value);
        let old = t.flows.insert(&mask, &value, Arc::new(e));
        if old.is_none() {
            self.n_flows += 1;
        }
        old
    }

    fn remove(&mut self, e: &FlowEntry) -> Option<Arc<FlowEntry>> {
        let t = Arc::make_mut(&mut self.tables[e.table_id as usize]);
        let gone = t.flows.remove(&e.m.mask, &e.m.value, e.priority);
        if gone.is_some() {
            self.n_flows -= 1;
        }
        gone
    }

    /// The entries a filter takes.
    pub fn flows(&self, f: &FlowFilter) -> Vec<Arc<FlowEntry>> {
        let mut out = Vec::new();
        for t in f.tables() {
            if f.strict.is_some() {
                let hit = self.tables[t]
                    .flows
                    .find_exact(&f.m.mask, &f.m.value, f.strict.unwrap_or(0));
                out.extend(hit.filter(|e| f.takes(e)).cloned());
            } else {
                out.extend(self.tables[t].flows.iter().filter(|e| f.takes(e)).cloned());
            }
        }
        out
    }

    /// Carry out a FLOW_MOD (spec 6.4).
    pub fn flow_mod(&mut self, fm: &FlowMod) -> Result<FlowModOutcome, OfpErr> {
        let delete = matches!(fm.command, ofp::OFPFC_DELETE | ofp::OFPFC_DELETE_STRICT);
        if fm.table_id >= N_TABLES && !(delete && fm.table_id == ofp::OFPTT_ALL) {
            return Err((FMF, ofp::OFPFMFC_BAD_TABLE_ID));
        }
        let m = field::compile(&fm.match_.fields)?;
        let strict = matches!(fm.command, ofp::OFPFC_MODIFY_STRICT | ofp::OFPFC_DELETE_STRICT);
        let filter = FlowFilter {
            table_id: fm.table_id,
            m: m.clone(),
            strict: strict.then_some(fm.priority),
            out_port: if delete { fm.out_port } else { ofp::OFPP_ANY },
            out_group: if delete { fm.out_group } else { ofp::OFPG_ANY },
            cookie: fm.cookie,
            cookie_mask: fm.cookie_mask,
        };
        match fm.command {
            ofp::OFPFC_ADD => self.add(fm, m),
            ofp::OFPFC_MODIFY | ofp::OFPFC_MODIFY_STRICT => {
                let insts = compile_instructions(&fm.instructions, fm.table_id, self)?;
                let targets = self.flows(&filter);
                for old in &targets {
                    let counters = if fm.flags & ofp::OFPFF_RESET_COUNTS != 0 {
                        Arc::new(FlowCounters::default())
                    } else {
                        old.counters.clone()
                    };
                    self.insert(FlowEntry {
                        table_id: old.table_id,
                        priority: old.priority,
                        m: old.m.clone(),
                        cookie: old.cookie,
                        flags: old.flags,
                        idle_timeout: old.idle_timeout,
                        hard_timeout: old.hard_timeout,
                        instructions: fm.instructions.clone(),
                        insts: insts.clone(),
                        installed_ms: old.installed_ms,
                        counters,
                    });
                }
                Ok(FlowModOutcome {
                    changed: targets.len(),
                    removed: Vec::new(),
                })
            }
            ofp::OFPFC_DELETE | ofp::OFPFC_DELETE_STRICT => {
                let targets = self.flows(&filter);
                let removed: Vec<_> = targets.iter().filter_map(|e| self.remove(e)).collect();
                Ok(FlowModOutcome {
                    changed: removed.len(),
                    removed,
                })
            }
            _ => Err((FMF, ofp::OFPFMFC_BAD_COMMAND)),
        }
    }

    fn add(&mut self, fm: &FlowMod, m: FlowMatch) -> Result<FlowModOutcome, OfpErr> {
        let insts = compile_instructions(&fm.instructions, fm.table_id, self)?;
        let table = &self.tables[fm.table_id as usize];
        let replaces = table.flows.find_exact(&m.mask, &m.value, fm.priority).is_some();
        if fm.flags & ofp::OFPFF_CHECK_OVERLAP != 0 {
            let clash = table.flows.iter().any(|e| {
                e.priority == fm.priority && e.m.overlaps(&m) && !(e.m.mask == m.mask && e.m.value == m.value)
            });
            if clash {
                return Err((FMF, ofp::OFPFMFC_OVERLAP));
            }
        }
        if !replaces && self.n_flows >= self.capacity {
            return Err((FMF, ofp::OFPFMFC_TABLE_FULL));
        }
        self.insert(FlowEntry {
            table_id: fm.table_id,
            priority: fm.priority,
            m,
            cookie: fm.cookie,
            flags: fm.flags,
            idle_timeout: fm.idle_timeout,
            hard_timeout: fm.hard_timeout,
            instructions: fm.instructions.clone(),
            insts,
            installed_ms: now_ms(),
            counters: Arc::default(),
        });
        Ok(FlowModOutcome {
            changed: 1,
            removed: Vec::new(),
        })
    }

    /// Carry out a GROUP_MOD; flows that sent to a deleted group go too (returned).
    pub fn group_mod(&mut self, gm: &GroupMod) -> Result<Vec<Arc<FlowEntry>>, OfpErr> {
        let snapshot = self.clone();
        let out = group::group_mod(&mut self.groups, gm, &snapshot)?;
        let mut removed = Vec::new();
        for g in out.deleted {
            let f = FlowFilter {
                out_group: g,
                ..FlowFilter::default()
            };
            for e in self.flows(&f) {
                removed.extend(self.remove(&e));
            }
        }
        Ok(removed)
    }

    /// Carry out a METER_MOD; flows that used a deleted meter go too (returned).
    pub fn meter_mod(&mut self, mm: &MeterMod) -> Result<Vec<Arc<FlowEntry>>, OfpErr> {
        let out = meter::meter_mod(&mut self.meters, mm)?;
        let mut removed = Vec::new();
        for id in out.deleted {
            let gone: Vec<_> = self
                .tables
                .iter()
                .flat_map(|t| t.flows.iter().filter(|e| e.uses_meter(id)).cloned())
                .collect();
            for e in gone {
                removed.extend(self.remove(&e));
            }
        }
        Ok(removed)
    }

    /// Remove every flow that outputs to `port` (a port that is gone), in every table.
    pub fn remove_port_flows(&mut self, port: u32) -> Vec<Arc<FlowEntry>> {
        let f = FlowFilter {
            out_port: port,
            ..FlowFilter::default()
        };
        let targets = self.flows(&f);
        targets.iter().filter_map(|e| self.remove(e)).collect()
    }

    /// Remove and return the entries whose timeouts ran out.
    pub fn expire(&mut self, now: u64) -> Vec<(Arc<FlowEntry>, Removed)> {
        let due: Vec<(Arc<FlowEntry>, Expiry)> = self
            .tables
            .iter()
            .flat_map(|t| {
                t.flows
                    .iter()
                    .filter(|e| e.idle_timeout > 0 || e.hard_timeout > 0)
                    .filter_map(|e| e.expired(now).map(|why| (e.clone(), why)))
            })
            .collect();
        due.into_iter()
            .filter_map(|(e, why)| {
                self.remove(&e).map(|gone| {
                    let r = match why {
                        Expiry::Idle => Removed::Idle,
                        Expiry::Hard => Removed::Hard,
                    };
                    (gone, r)
                })
            })
            .collect()
    }

    /// Whether table 0's table-miss entry hands packets to the NORMAL action: Cloud Rack's
    /// L2 service is in charge (see `xlate.rs`), and its source learning is on.
    pub fn l2_service(&self) -> bool {
        self.tables[0]
            .miss_entry()
            .is_some_and(|e| e.insts.apply.iter().any(|a| a.output_port() == Some(ofp::OFPP_NORMAL)))
    }
}

/// Table 0's default entry: priority 0, empty match, NORMAL (what an Open vSwitch bridge
/// starts with). A controller that installs its own table-miss entry replaces it.
pub fn normal_table_miss() -> FlowEntry {
    let instructions = vec![Instruction::ApplyActions(vec![ofp::Action::output(ofp::OFPP_NORMAL)])];
    let insts = actions::Insts {
        apply: vec![actions::Act::Output {
            port: ofp::OFPP_NORMAL,
            max_len: 0,
        }],
        ..Default::default()
    };
    FlowEntry {
        table_id: 0,
        priority: 0,
        m: FlowMatch::default(),
        cookie: 0,
        flags: 0,
        idle_timeout: 0,
        hard_timeout: 0,
        instructions,
        insts,
        installed_ms: now_ms(),
        counters: Arc::default(),
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use cloudrack_wire::ofp::{Action, Match, Oxm};

    fn add(table_id: u8, priority: u16, m: Match, out: u32) -> FlowMod {
        FlowMod {
            table_id,
            priority,
            match_: m,
            instructions: vec![Instruction::ApplyActions(vec![Action::output(out)])],
            ..FlowMod::default()
        }
    }

    fn eth(last: u8) -> Match {
        Match::new().with(Oxm::EthDst {
            mac: [2, 0, 0, 0, 0, last],
            mask: None,
        })
    }

    #[test]
    fn add_replaces_identical_and_capacity_holds() {
        let mut p = Pipeline::new(2);
        p.flow_mod(&add(0, 10, eth(1), 1)).unwrap();
        p.flow_mod(&add(0, 10, eth(1), 2)).unwrap();
        assert_eq!(p.n_flows(), 1);
        p.flow_mod(&add(0, 11, eth(1), 2)).unwrap();
        assert_eq!(
            p.flow_mod(&add(0, 12, eth(1), 2)).unwrap_err(),
            (FMF, ofp::OFPFMFC_TABLE_FULL)
        );
        // Replacing stays possible when full.
        p.flow_mod(&add(0, 11, eth(1), 3)).unwrap();
        assert_eq!(
            p.flow_mod(&add(254, 1, eth(1), 1)).unwrap_err(),
            (FMF, ofp::OFPFMFC_BAD_TABLE_ID)
        );
    }

    #[test]
    fn check_overlap_refuses_same_priority_overlaps() {
        let mut p = Pipeline::new(10);
        p.flow_mod(&add(0, 10, Match::new().with(Oxm::InPort(1)), 2)).unwrap();
        let mut fm = add(0, 10, eth(1), 3);
        fm.flags = ofp::OFPFF_CHECK_OVERLAP;
        assert_eq!(p.flow_mod(&fm).unwrap_err(), (FMF, ofp::OFPFMFC_OVERLAP));
        fm.priority = 11;
        p.flow_mod(&fm).unwrap();
    }

    #[test]
    fn modify_and_delete_strict_and_not() {
        let mut p = Pipeline::new(100);
        for i in 1..=4u8 {
            let mut fm = add(0, 10 + i as u16, eth(i), i as u32);
            fm.cookie = i as u64;
            p.flow_mod(&fm).unwrap();
        }
        p.flow_mod(&add(1, 5, eth(1), 9)).unwrap();
        // Non-strict modify with an empty match changes every flow of table 0 only.
        let mut m = add(0, 0, Match::new(), 7);
        m.command = ofp::OFPFC_MODIFY;
        assert_eq!(p.flow_mod(&m).unwrap().changed, 4);
        assert!(p
            .flows(&FlowFilter::default())
            .iter()
            .filter(|e| e.table_id == 0)
            .all(|e| e.outputs_to(7)));
        // Strict wants the priority too.
        let mut ms = add(0, 99, eth(1), 8);
        ms.command = ofp::OFPFC_MODIFY_STRICT;
        assert_eq!(p.flow_mod(&ms).unwrap().changed, 0);
        ms.priority = 11;
        assert_eq!(p.flow_mod(&ms).unwrap().changed, 1);
        // Delete by cookie mask across all tables.
        let mut d = add(ofp::OFPTT_ALL, 0, Match::new(), 1);
        d.command = ofp::OFPFC_DELETE;
        d.instructions.clear();
        d.cookie = 2;
        d.cookie_mask = 0xff;
        assert_eq!(p.flow_mod(&d).unwrap().removed.len(), 1);
        // Delete by out_port.
        d.cookie_mask = 0;
        d.out_port = 8;
        assert_eq!(p.flow_mod(&d).unwrap().removed.len(), 1);
        d.out_port = ofp::OFPP_ANY;
        assert_eq!(p.flow_mod(&d).unwrap().removed.len(), 3);
        assert_eq!(p.n_flows(), 0);
    }

    #[test]
    fn timeouts_expire_with_their_reason() {
        let mut p = Pipeline::new(10);
        let mut idle = add(0, 1, eth(1), 1);
        idle.idle_timeout = 1;
        let mut hard = add(0, 1, eth(2), 1);
        hard.hard_timeout = 2;
        p.flow_mod(&idle).unwrap();
        p.flow_mod(&hard).unwrap();
        let now = now_ms();
        assert!(p.expire(now).is_empty());
        let e = p.expire(now + 1500);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].1, Removed::Idle);
        let e = p.expire(now + 2500);
        assert_eq!(e[0].1, Removed::Hard);
    }

    #[test]
    fn the_default_miss_entry_is_the_l2_service() {
        let mut p = Pipeline::new(10);
        assert!(!p.l2_service());
        p.insert(normal_table_miss());
        assert!(p.l2_service());
        // os-ken's table-miss replaces it.
        p.flow_mod(&add(0, 0, Match::new(), ofp::OFPP_CONTROLLER)).unwrap();
        assert!(!p.l2_service());
        assert_eq!(p.n_flows(), 1);
    }

    #[test]
    fn deleting_a_group_or_meter_removes_its_flows() {
        let mut p = Pipeline::new(10);
        p.group_mod(&GroupMod {
            command: ofp::OFPGC_ADD,
            group_type: ofp::OFPGT_ALL,
            group_id: 1,
            buckets: vec![],
        })
        .unwrap();
        p.meter_mod(&MeterMod {
            command: ofp::OFPMC_ADD,
            flags: ofp::OFPMF_PKTPS,
            meter_id: 1,
            bands: vec![ofp::MeterBand::drop(10, 0)],
        })
        .unwrap();
        let mut g = add(0, 1, eth(1), 1);
        g.instructions = vec![Instruction::ApplyActions(vec![Action::Group(1)])];
        p.flow_mod(&g).unwrap();
        let mut m = add(0, 1, eth(2), 1);
        m.instructions.insert(0, Instruction::Meter(1));
        p.flow_mod(&m).unwrap();
        let gone = p
            .group_mod(&GroupMod {
                command: ofp::OFPGC_DELETE,
                group_type: 0,
                group_id: 1,
                buckets: vec![],
            })
            .unwrap();
        assert_eq!(gone.len(), 1);
        let gone = p
            .meter_mod(&MeterMod {
                command: ofp::OFPMC_DELETE,
                flags: 0,
                meter_id: 1,
                bands: vec![],
            })
            .unwrap();
        assert_eq!(gone.len(), 1);
        assert_eq!(p.n_flows(), 0);
    }
}
