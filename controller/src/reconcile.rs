//! Rounds of questions to the switches, so a master can reconcile its registry with what they
//! actually have. A master that takes over loaded its registry from the store, which lags the
//! switches: ports deleted while nobody was master (their PORT_STATUS went to a standby, or to
//! nobody) still hold their MACs there, and the last flows of a dead master may not be recorded
//! yet. So at takeover, and whenever a switch registers with the master, the master asks each
//! switch for its ports (OFPMP_PORT_DESC) and its flows (flow stats), and acts once every
//! switch asked has answered (or TIMEOUT passed): one switch's answer alone cannot say whether
//! a MAC it does not have is gone or lives on another switch that has yet to answer.
//!
//! This module only collects the answers, matched by xid; the app acts on them. Pure state.

use crate::ids::{Dpid, PortNo};
use crate::tccs::TunnelPair;
use cloudrack_wire::ofp::{FlowStats, PortDesc};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// A switch that has not answered by then is left out of its round (and counted). Switches
/// answer within milliseconds; a takeover holds new traffic until its round is over.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Why the switches were asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occasion {
    /// We became master: everything loaded from the store is in doubt.
    Takeover,
    /// A switch registered with us as master: what it has may have changed while it was away.
    Registration,
}

/// What one switch answered.
#[derive(Debug, Default)]
pub struct Answer {
    /// Its port numbers, local ports and tunnels; None if it could not tell (it refused the
    /// request: nothing may be concluded from a port's absence then).
    pub ports: Option<HashSet<PortNo>>,
    pub flows: Vec<FlowStats>,
}

/// A round whose switches have all answered, or whose time is up.
#[derive(Debug)]
pub struct Finished {
    pub why: Occasion,
    pub started: Instant,
    pub answers: Vec<(Dpid, Answer)>,
    /// Switches that did not answer in time, or went away.
    pub unanswered: Vec<Dpid>,
    /// The tunnels the registry knew when the switches were asked (one made since then is
    /// missing from their answers for that reason alone).
    pub tunnels: Vec<TunnelPair>,
}

struct Asked {
    ports_xid: u32,
    flows_xid: u32,
    ports: Option<HashSet<PortNo>>,
    ports_done: bool,
    flows: Vec<FlowStats>,
    flows_done: bool,
}

impl Asked {
    fn done(&self) -> bool {
        self.ports_done && self.flows_done
    }
}

struct Round {
    why: Occasion,
    started: Instant,
    asked: HashMap<Dpid, Asked>,
    unanswered: Vec<Dpid>,
    tunnels: Vec<TunnelPair>,
}

#[derive(Default)]
pub struct Reconciler {
    rounds: Vec<Round>,
}

impl Reconciler {
    /// A round: each (dpid, xid of its PORT_DESC request, xid of its flow stats request), and
    /// the tunnels the registry knows now.
    pub fn start(&mut self, why: Occasion, asked: Vec<(Dpid, u32, u32)>, tunnels: Vec<TunnelPair>) {
        let asked = asked
            .into_iter()
            .map(|(dpid, ports_xid, flows_xid)| {
                let a = Asked {
                    ports_xid,
                    flows_xid,
                    ports: Some(HashSet::new()),
                    ports_done: false,
                    flows: Vec::new(),
                    flows_done: false,
                };
                (dpid, a)
            })
            .collect();
        self.rounds.push(Round {
            why,
            started: Instant::now(),
            asked,
            unanswered: Vec::new(),
            tunnels,
        });
    }

    /// Rounds not finished yet.
    pub fn pending(&self) -> usize {
        self.rounds.len()
    }

    /// Whether a takeover's round is not finished yet.
    pub fn takeover_pending(&self) -> bool {
        self.rounds.iter().any(|r| r.why == Occasion::Takeover)
    }

    fn find(&mut self, dpid: Dpid, xid: u32, flows: bool) -> Option<&mut Asked> {
        self.rounds.iter_mut().find_map(|r| {
            r.asked
                .get_mut(&dpid)
                .filter(|a| if flows { a.flows_xid == xid } else { a.ports_xid == xid })
        })
    }

    /// A (part of a) PORT_DESC reply; false if we did not ask for it.
    pub fn ports(&mut self, dpid: Dpid, xid: u32, descs: &[PortDesc], more: bool) -> bool {
        let Some(a) = self.find(dpid, xid, false) else {
            return false;
        };
        if let Some(p) = a.ports.as_mut() {
            p.extend(descs.iter().map(|d| PortNo(d.port_no)));
        }
        a.ports_done = !more;
        true
    }

    /// A (part of a) flow stats reply; false if we did not ask for it.
    pub fn flows(&mut self, dpid: Dpid, xid: u32, stats: Vec<FlowStats>, more: bool) -> bool {
        let Some(a) = self.find(dpid, xid, true) else {
            return false;
        };
        a.flows.extend(stats);
        a.flows_done = !more;
        true
    }

    /// The switch answered one of our requests with an error; false if it was not ours.
    pub fn refused(&mut self, dpid: Dpid, xid: u32) -> bool {
        if let Some(a) = self.find(dpid, xid, false) {
            a.ports = None;
            a.ports_done = true;
            return true;
        }
        if let Some(a) = self.find(dpid, xid, true) {
            a.flows_done = true;
            return true;
        }
        false
    }

    /// The switch went away: it answers nothing more.
    pub fn disconnected(&mut self, dpid: Dpid) {
        for r in &mut self.rounds {
            if r.asked.get(&dpid).is_some_and(|a| !a.done()) {
                r.asked.remove(&dpid);
                r.unanswered.push(dpid);
            }
        }
    }

    /// Rounds every switch answered, and rounds older than TIMEOUT (without the switches
    /// that have not answered).
    pub fn finished(&mut self, now: Instant) -> Vec<Finished> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.rounds.len() {
            let r = &self.rounds[i];
            let complete = r.asked.values().all(Asked::done);
            if !complete && now.duration_since(r.started) < TIMEOUT {
                i += 1;
                continue;
            }
            let mut r = self.rounds.remove(i);
            let mut answers = Vec::new();
            for (dpid, a) in r.asked.drain() {
                if a.done() {
                    answers.push((
                        dpid,
                        Answer {
                            ports: a.ports,
                            flows: a.flows,
                        },
                    ));
                } else {
                    r.unanswered.push(dpid);
                }
            }
            answers.sort_by_key(|(d, _)| *d);
            out.push(Finished {
                why: r.why,
                started: r.started,
                answers,
                unanswered: r.unanswered,
                tunnels: r.tunnels,
            });
        }
        out
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn port(n: u32) -> PortDesc {
        PortDesc::live(n, [2, 0, 0, 0, 0, n as u8], "p")
    }

    #[test]
    fn a_round_finishes_when_every_switch_answered_both_questions() {
        let mut r = Reconciler::default();
        r.start(Occasion::Takeover, vec![(Dpid(1), 10, 11), (Dpid(2), 12, 13)], vec![]);
        assert!(r.takeover_pending());
        assert!(!r.ports(Dpid(1), 11, &[port(1)], false), "xid of the flow request");
        assert!(!r.ports(Dpid(3), 10, &[port(1)], false), "another switch");
        assert!(r.ports(Dpid(1), 10, &[port(1)], true));
        assert!(r.ports(Dpid(1), 10, &[port(2)], false));
        assert!(r.flows(Dpid(1), 11, vec![], false));
        assert!(r.finished(Instant::now()).is_empty(), "switch 2 has not answered");
        assert!(r.refused(Dpid(2), 12), "switch 2 cannot describe its ports");
        assert!(r.flows(Dpid(2), 13, vec![], true));
        assert!(r.finished(Instant::now()).is_empty(), "more flows to come");
        assert!(r.flows(Dpid(2), 13, vec![], false));
        let done = r.finished(Instant::now());
        assert_eq!(done.len(), 1);
        assert_eq!(r.pending(), 0);
        assert!(!r.takeover_pending());
        let f = &done[0];
        assert_eq!(f.why, Occasion::Takeover);
        assert!(f.unanswered.is_empty());
        assert_eq!(f.answers[0].0, Dpid(1));
        assert_eq!(f.answers[0].1.ports, Some(HashSet::from([PortNo(1), PortNo(2)])));
        assert_eq!(f.answers[1].1.ports, None);
        assert!(!r.refused(Dpid(2), 12), "the round is over");
    }

    #[test]
    fn silent_and_vanished_switches_are_left_out() {
        let mut r = Reconciler::default();
        r.start(
            Occasion::Registration,
            vec![(Dpid(1), 1, 2), (Dpid(2), 3, 4), (Dpid(3), 5, 6)],
            vec![],
        );
        assert!(!r.takeover_pending());
        r.ports(Dpid(1), 1, &[], false);
        r.flows(Dpid(1), 2, vec![], false);
        r.disconnected(Dpid(2));
        assert!(r.finished(Instant::now()).is_empty(), "switch 3 may still answer");
        let done = r.finished(Instant::now() + TIMEOUT);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].answers.len(), 1);
        let mut unanswered = done[0].unanswered.clone();
        unanswered.sort_unstable();
        assert_eq!(unanswered, vec![Dpid(2), Dpid(3)]);
    }
}
