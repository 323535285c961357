//! Flow entries and the flow tables that hold them.

use super::actions::{Act, Insts};
use super::classifier::{Classifier, Rule};
use super::field::FlowMatch;
use crate::dp::stats::FlowCounters;
use cloudrack_wire::ofp::{self, Instruction};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

#[derive(Debug)]
pub struct FlowEntry {
    pub table_id: u8,
    pub priority: u16,
    pub m: FlowMatch,
    pub cookie: u64,
    pub flags: u16,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    /// As the controller sent them, to report back.
    pub instructions: Vec<Instruction>,
    pub insts: Insts,
    pub installed_ms: u64,
    pub counters: Arc<FlowCounters>,
}

impl Rule for FlowEntry {
    fn priority(&self) -> u16 {
        self.priority
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Idle,
    Hard,
}

impl FlowEntry {
    /// Why this entry has expired at `now` (ms), if it has.
    pub fn expired(&self, now: u64) -> Option<Expiry> {
        let last = self.counters.last_used_ms.load(Relaxed).max(self.installed_ms);
        if self.hard_timeout > 0 && now.saturating_sub(self.installed_ms) >= self.hard_timeout as u64 * 1000 {
            return Some(Expiry::Hard);
        }
        if self.idle_timeout > 0 && now.saturating_sub(last) >= self.idle_timeout as u64 * 1000 {
            return Some(Expiry::Idle);
        }
        None
    }

    /// Whether an action of this entry outputs to `port` (OFPP_ANY: any entry).
    pub fn outputs_to(&self, port: u32) -> bool {
        port == ofp::OFPP_ANY || self.insts.actions().any(|a| a.output_port() == Some(port))
    }

    /// Whether an action of this entry sends to group `group` (OFPG_ANY: any entry).
    pub fn uses_group(&self, group: u32) -> bool {
        group == ofp::OFPG_ANY || self.insts.actions().any(|a| *a == Act::Group(group))
    }

    pub fn uses_meter(&self, meter: u32) -> bool {
        self.insts.meter == Some(meter)
    }

    /// Whether this is a table-miss entry (priority 0, empty match).
    pub fn is_table_miss(&self) -> bool {
        self.priority == 0 && self.m.is_empty()
    }
}

/// One flow table.
#[derive(Clone, Default)]
pub struct Table {
    pub flows: Classifier<FlowEntry>,
}

impl Table {
    /// The table-miss entry, if there is one.
    pub fn miss_entry(&self) -> Option<&Arc<FlowEntry>> {
        self.flows
            .find_exact(&Default::default(), &Default::default(), 0)
            .filter(|e| e.is_table_miss())
    }
}
