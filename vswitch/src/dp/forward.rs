//! The forwarding decision for one frame: pure, reading only the 12 MAC bytes and the FIB.
//! The worker carries out the verdict (boringtun's shape: logic returns, the loop does I/O).
//!
//! Rules:
//! - A frame from a local port or a static tunnel whose (vnet, source MAC) is not known to sit
//!   behind that port is reported to the controller (PACKET_IN): that is how VMs are learned and
//!   how a migrated VM is noticed on its new host.
//! - Broadcast/multicast from a local port floods to the other local ports of its network and
//!   to static tunnels, and goes to the controller, which relays it to the other hosts.
//! - Anything from a tunnel floods to local ports only (split horizon: never back into a
//!   tunnel), so a broadcast reaches every VM exactly once.
//! - Unknown unicast from a local port goes to the controller only; it knows where the
//!   destination is and sends the frame there itself.

use super::fib::{Fib, Mac};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    Local { port_no: u32, vnet: u32 },
    Tunnel { port_no: u32, vnet: u32, is_static: bool },
}

impl Ingress {
    pub fn port_no(&self) -> u32 {
        match *self {
            Ingress::Local { port_no, .. } | Ingress::Tunnel { port_no, .. } => port_no,
        }
    }

    pub fn vnet(&self) -> u32 {
        match *self {
            Ingress::Local { vnet, .. } | Ingress::Tunnel { vnet, .. } => vnet,
        }
    }

    /// Whether frames from here teach the controller where MACs are.
    fn learns(&self) -> bool {
        matches!(self, Ingress::Local { .. } | Ingress::Tunnel { is_static: true, .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    Runt,
    BadSrcMac,
    Hairpin,
    /// An installed flow says drop.
    Flow,
    /// Left to the controller (unknown unicast from a local port).
    ToController,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Output(u32),
    /// Flood in `vnet` except `except`; static tunnels too if `tunnels`.
    Flood {
        vnet: u32,
        except: u32,
        tunnels: bool,
    },
    Drop(DropReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub action: Action,
    pub packet_in: bool,
}

pub fn is_multicast(mac: &Mac) -> bool {
    mac[0] & 1 != 0
}

pub fn macs(frame: &[u8]) -> Option<(Mac, Mac)> {
    let dst: Mac = frame.get(0..6)?.try_into().ok()?;
    let src: Mac = frame.get(6..12)?.try_into().ok()?;
    frame.get(13)?;
    Some((dst, src))
}

/// Port security: a port bound to VM MACs may only send from those (an empty list binds
/// nothing and allows any source).
pub fn source_allowed(bound: &[Mac], frame: &[u8]) -> bool {
    if bound.is_empty() {
        return true;
    }
    macs(frame).is_some_and(|(_, src)| bound.contains(&src))
}

pub fn decide(fib: &Fib, ingress: Ingress, frame: &[u8]) -> Verdict {
    let drop = |r| Verdict {
        action: Action::Drop(r),
        packet_in: false,
    };
    let Some((dst, src)) = macs(frame) else {
        return drop(DropReason::Runt);
    };
    if is_multicast(&src) {
        return drop(DropReason::BadSrcMac);
    }
    let in_port = ingress.port_no();
    let vnet = ingress.vnet();
    let learn = ingress.learns() && fib.macs.get(&(vnet, src)).and_then(|e| e.out_port) != Some(in_port);

    if is_multicast(&dst) {
        let from_local = matches!(ingress, Ingress::Local { .. });
        return Verdict {
            action: Action::Flood {
                vnet,
                except: in_port,
                tunnels: from_local,
            },
            packet_in: ingress.learns(),
        };
    }
    match fib.macs.get(&(vnet, dst)) {
        Some(entry) => {
            let action = match entry.out_port {
                Some(out) if out == in_port => Action::Drop(DropReason::Hairpin),
                Some(out) => Action::Output(out),
                None => Action::Drop(DropReason::Flow),
            };
            Verdict {
                action,
                packet_in: learn,
            }
        }
        None if ingress.learns() => Verdict {
            action: Action::Drop(DropReason::ToController),
            packet_in: true,
        },
        None => Verdict {
            action: Action::Flood {
                vnet,
                except: in_port,
                tunnels: false,
            },
            packet_in: false,
        },
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::dp::fib::MacEntry;
    use std::sync::Arc;

    const A: Mac = [2, 0, 0, 0, 0, 0xa];
    const B: Mac = [2, 0, 0, 0, 0, 0xb];
    const BCAST: Mac = [0xff; 6];

    fn frame(dst: Mac, src: Mac) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[0; 46]);
        f
    }

    fn fib_with(entries: &[(u32, Mac, Option<u32>)]) -> Fib {
        let mut fib = Fib::default();
        for (vnet, mac, out) in entries {
            fib.macs.insert(
                (*vnet, *mac),
                MacEntry {
                    out_port: *out,
                    counters: Arc::default(),
                },
            );
        }
        fib
    }

    const L1: Ingress = Ingress::Local { port_no: 1, vnet: 0 };
    const T9: Ingress = Ingress::Tunnel {
        port_no: 9,
        vnet: 0,
        is_static: false,
    };
    const S8: Ingress = Ingress::Tunnel {
        port_no: 8,
        vnet: 0,
        is_static: true,
    };

    #[test]
    fn port_security_allows_only_bound_sources() {
        assert!(source_allowed(&[], &frame(B, A)));
        assert!(source_allowed(&[A], &frame(B, A)));
        assert!(source_allowed(&[B, A], &frame(BCAST, A)));
        assert!(!source_allowed(&[B], &frame(BCAST, A)));
        assert!(
            !source_allowed(&[A], &[0u8; 10]),
            "a runt from a bound port is not allowed"
        );
    }

    #[test]
    fn known_unicast_is_output_without_packet_in() {
        let fib = fib_with(&[(0, A, Some(1)), (0, B, Some(2))]);
        assert_eq!(
            decide(&fib, L1, &frame(B, A)),
            Verdict {
                action: Action::Output(2),
                packet_in: false
            }
        );
    }

    #[test]
    fn unknown_source_is_reported_even_when_destination_is_known() {
        let fib = fib_with(&[(0, B, Some(2))]);
        assert_eq!(
            decide(&fib, L1, &frame(B, A)),
            Verdict {
                action: Action::Output(2),
                packet_in: true
            }
        );
        // A moved here from a tunnel: reported too.
        let fib = fib_with(&[(0, A, Some(9)), (0, B, Some(2))]);
        assert!(decide(&fib, L1, &frame(B, A)).packet_in);
    }

    #[test]
    fn unknown_unicast_from_local_goes_to_controller_only() {
        let fib = fib_with(&[(0, A, Some(1))]);
        assert_eq!(
            decide(&fib, L1, &frame(B, A)),
            Verdict {
                action: Action::Drop(DropReason::ToController),
                packet_in: true
            }
        );
    }

    #[test]
    fn broadcast_from_local_floods_everywhere_and_is_reported() {
        let fib = fib_with(&[(0, A, Some(1))]);
        assert_eq!(
            decide(&fib, L1, &frame(BCAST, A)),
            Verdict {
                action: Action::Flood {
                    vnet: 0,
                    except: 1,
                    tunnels: true
                },
                packet_in: true
            }
        );
    }

    #[test]
    fn frames_from_dynamic_tunnels_never_flood_back_into_tunnels() {
        let fib = fib_with(&[]);
        assert_eq!(
            decide(&fib, T9, &frame(BCAST, A)),
            Verdict {
                action: Action::Flood {
                    vnet: 0,
                    except: 9,
                    tunnels: false
                },
                packet_in: false
            }
        );
        assert_eq!(
            decide(&fib, T9, &frame(B, A)),
            Verdict {
                action: Action::Flood {
                    vnet: 0,
                    except: 9,
                    tunnels: false
                },
                packet_in: false
            }
        );
    }

    #[test]
    fn static_tunnels_learn_but_do_not_flood_into_tunnels() {
        let fib = fib_with(&[(0, B, Some(1))]);
        assert_eq!(
            decide(&fib, S8, &frame(BCAST, A)),
            Verdict {
                action: Action::Flood {
                    vnet: 0,
                    except: 8,
                    tunnels: false
                },
                packet_in: true
            }
        );
        assert_eq!(
            decide(&fib, S8, &frame(B, A)),
            Verdict {
                action: Action::Output(1),
                packet_in: true
            }
        );
    }

    #[test]
    fn networks_are_apart() {
        let fib = fib_with(&[(1, B, Some(2)), (0, A, Some(1))]);
        assert_eq!(
            decide(&fib, L1, &frame(B, A)).action,
            Action::Drop(DropReason::ToController)
        );
    }

    #[test]
    fn bad_frames_are_dropped() {
        let fib = fib_with(&[]);
        assert_eq!(decide(&fib, L1, &[0u8; 13]).action, Action::Drop(DropReason::Runt));
        assert_eq!(
            decide(&fib, L1, &frame(B, BCAST)).action,
            Action::Drop(DropReason::BadSrcMac)
        );
        let fib = fib_with(&[(0, A, Some(1)), (0, B, Some(1))]);
        assert_eq!(decide(&fib, L1, &frame(B, A)).action, Action::Drop(DropReason::Hairpin));
        let fib = fib_with(&[(0, A, Some(1)), (0, B, None)]);
        assert_eq!(decide(&fib, L1, &frame(B, A)).action, Action::Drop(DropReason::Flow));
    }
}
