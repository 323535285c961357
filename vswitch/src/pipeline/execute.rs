//! The executor: carries out a translated program on one packet, for the datapath workers and
//! for PACKET_OUT alike. What leaves goes through a [`Sink`] (the worker's batched send queue,
//! or the control thread's direct sends), so this file knows nothing of sockets.
//!
//! Copy on write: a packet is edited in place until a copy of it may still be waiting in the
//! sink (an output was queued); after that an edit works on a copy from [`Scratch`], whose
//! buffers stay untouched until the sink has sent everything (`Scratch::release`).

use super::modify;
use super::xlate::Op;
use cloudrack_wire::vnet_hdr::VnetHdr;

/// A PACKET_IN to make of the packet as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToController {
    pub reason: u8,
    pub table_id: u8,
    pub cookie: u64,
    pub max_len: u16,
    pub tunnel_id: u64,
    pub metadata: u64,
}

/// Why the executor dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecDrop {
    Meter,
    TtlExpired,
}

pub trait Sink {
    /// Send `frame` (with its offload header `vnet`) out of `port`. The sink may queue a
    /// pointer to `frame` and send it later, and may finish its checksum in place (clearing
    /// the NEEDS_CSUM flag in `vnet`) after sending what it queued.
    fn output(&mut self, port: u32, frame: &mut [u8], vnet: &mut VnetHdr);
    fn controller(&mut self, frame: &[u8], how: &ToController);
    fn dropped(&mut self, why: ExecDrop);
}

/// Buffers for edited copies, alive until [`release`](Scratch::release).
#[derive(Default)]
pub struct Scratch {
    free: Vec<Vec<u8>>,
    busy: Vec<Vec<u8>>,
}

impl Scratch {
    fn take(&mut self, from: &[u8]) -> Vec<u8> {
        let mut b = self.free.pop().unwrap_or_default();
        b.clear();
        b.extend_from_slice(from);
        b
    }

    /// Keep `b` alive (its heap buffer does not move) until the next release.
    fn keep(&mut self, b: Vec<u8>) {
        self.busy.push(b);
    }

    /// Everything queued from these buffers has been sent: reuse them.
    pub fn release(&mut self) {
        self.free.append(&mut self.busy);
        // Do not hoard: a burst of edited super-frames should not pin megabytes for ever.
        self.free.truncate(64);
    }

    pub fn in_use(&self) -> usize {
        self.busy.len()
    }
}

/// The packet being worked on.
enum Work<'a> {
    /// The received frame; `shared` once an output may still point at it.
    Base {
        frame: &'a mut [u8],
        shared: bool,
    },
    Copy {
        buf: Vec<u8>,
        shared: bool,
    },
}

/// Run `ops` on `frame`. `frame_shared`: someone else may still point at `frame` (a clone's
/// parent), so edits must copy.
pub fn execute(ops: &[Op], frame: &mut [u8], vnet: &VnetHdr, scratch: &mut Scratch, sink: &mut dyn Sink) {
    run(ops, frame, false, *vnet, scratch, sink);
}

fn run(
    ops: &[Op],
    frame: &mut [u8],
    frame_shared: bool,
    mut vnet: VnetHdr,
    scratch: &mut Scratch,
    sink: &mut dyn Sink,
) {
    let mut w = Work::Base {
        frame,
        shared: frame_shared,
    };
    for op in ops {
        match op {
            Op::Output(port) => match &mut w {
                Work::Base { frame, shared } => {
                    sink.output(*port, frame, &mut vnet);
                    *shared = true;
                }
                Work::Copy { buf, shared } => {
                    sink.output(*port, buf, &mut vnet);
                    *shared = true;
                }
            },
            Op::Controller {
                reason,
                table_id,
                cookie,
                max_len,
                tunnel_id,
                metadata,
            } => {
                let how = ToController {
                    reason: *reason,
                    table_id: *table_id,
                    cookie: *cookie,
                    max_len: *max_len,
                    tunnel_id: *tunnel_id,
                    metadata: *metadata,
                };
                sink.controller(bytes(&w), &how);
            }
            Op::Meter(m) => match m.admit(bytes(&w).len()) {
                super::meter::Verdict::Pass => {}
                super::meter::Verdict::Drop => {
                    sink.dropped(ExecDrop::Meter);
                    break;
                }
                super::meter::Verdict::Remark(by) => {
                    let f = writable(&mut w, scratch);
                    remark(f, &vnet, by);
                }
            },
            Op::SetField { field, value } => {
                let f = writable(&mut w, scratch);
                modify::set_field(f, &vnet, *field, value.as_slice());
            }
            Op::PushVlan(tpid) => {
                let buf = owned(&mut w, scratch);
                modify::push_vlan(buf, &mut vnet, *tpid);
            }
            Op::PopVlan => {
                let buf = owned(&mut w, scratch);
                modify::pop_vlan(buf, &mut vnet);
            }
            Op::DecNwTtl | Op::SetNwTtl(_) => {
                let set = match op {
                    Op::SetNwTtl(t) => Some(*t),
                    _ => None,
                };
                let f = writable(&mut w, scratch);
                if modify::ttl(f, set).is_err() {
                    sink.dropped(ExecDrop::TtlExpired);
                    break;
                }
            }
            Op::Count(c) => c.hit(bytes(&w).len(), crate::dp::stats::now_ms()),
            Op::Clone(sub) => {
                let (f, shared) = match &mut w {
                    Work::Base { frame, shared } => (&mut **frame, shared),
                    Work::Copy { buf, shared } => (buf.as_mut_slice(), shared),
                };
                // The clone may output (and so point at) this frame: it is shared after.
                run(sub, f, true, vnet, scratch, sink);
                *shared = true;
            }
        }
    }
    if let Work::Copy { buf, .. } = w {
        scratch.keep(buf);
    }
}

fn bytes<'b>(w: &'b Work<'_>) -> &'b [u8] {
    match w {
        Work::Base { frame, .. } => frame,
        Work::Copy { buf, .. } => buf,
    }
}

/// Work on a fresh copy of the frame from now on; a copy it replaces stays alive (an output
/// may point at it) until the scratch is released.
fn copy_out(w: &mut Work<'_>, scratch: &mut Scratch) {
    let copy = scratch.take(bytes(w));
    let old = std::mem::replace(
        w,
        Work::Copy {
            buf: copy,
            shared: false,
        },
    );
    if let Work::Copy { buf, .. } = old {
        scratch.keep(buf);
    }
}

/// The frame, ready for an in-place edit: copied first if an output may point at it.
fn writable<'b>(w: &'b mut Work<'_>, scratch: &mut Scratch) -> &'b mut [u8] {
    if matches!(w, Work::Base { shared: true, .. } | Work::Copy { shared: true, .. }) {
        copy_out(w, scratch);
    }
    match w {
        Work::Base { frame, .. } => frame,
        Work::Copy { buf, .. } => buf,
    }
}

/// The frame as an owned, growable copy (for VLAN push and pop).
fn owned<'b>(w: &'b mut Work<'_>, scratch: &mut Scratch) -> &'b mut Vec<u8> {
    if matches!(w, Work::Base { .. } | Work::Copy { shared: true, .. }) {
        copy_out(w, scratch);
    }
    match w {
        Work::Copy { buf, .. } => buf,
        Work::Base { .. } => unreachable!("replaced by a copy above"),
    }
}

/// A DSCP-remark meter band: raise the drop precedence (the middle DSCP bits) by `by`.
fn remark(f: &mut [u8], vnet: &VnetHdr, by: u8) {
    let (k, _) = super::key::extract(f, 0, 0);
    if k.eth_type() != super::key::ETH_TYPE_IPV4 && k.eth_type() != super::key::ETH_TYPE_IPV6 {
        return;
    }
    let dscp = k.u8(super::key::off::IP_DSCP);
    let prec = ((dscp >> 1) & 3).saturating_add(by).min(3);
    let new = (dscp & !0b110) | (prec << 1);
    modify::set_field(f, vnet, cloudrack_wire::ofp::OFPXMT_OFB_IP_DSCP, &[new]);
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::pipeline::actions::FieldValue;
    use cloudrack_wire::ofp;

    #[derive(Default)]
    struct Rec {
        /// (port, frame bytes at output, pointer)
        out: Vec<(u32, Vec<u8>, usize)>,
        ctl: Vec<Vec<u8>>,
        drops: Vec<ExecDrop>,
    }
    impl Sink for Rec {
        fn output(&mut self, port: u32, frame: &mut [u8], _: &mut VnetHdr) {
            self.out.push((port, frame.to_vec(), frame.as_ptr() as usize));
        }
        fn controller(&mut self, frame: &[u8], _: &ToController) {
            self.ctl.push(frame.to_vec());
        }
        fn dropped(&mut self, why: ExecDrop) {
            self.drops.push(why);
        }
    }

    fn set_dst(last: u8) -> Op {
        let mut bytes = [0u8; 16];
        bytes[..6].copy_from_slice(&[2, 0, 0, 0, 0, last]);
        Op::SetField {
            field: ofp::OFPXMT_OFB_ETH_DST,
            value: FieldValue { bytes, len: 6 },
        }
    }

    fn frame() -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x88, 0xb5];
        f.extend_from_slice(&[0; 46]);
        f
    }

    #[test]
    fn outputs_see_the_packet_as_it_was_at_their_turn() {
        let mut f = frame();
        let base = f.as_ptr() as usize;
        let mut s = Scratch::default();
        let mut r = Rec::default();
        let ops = [
            Op::Output(1),
            set_dst(9),
            Op::Output(2),
            set_dst(8),
            Op::Output(3),
            Op::Clone(vec![set_dst(7), Op::Output(4)]),
            Op::Output(5),
        ];
        execute(&ops, &mut f, &VnetHdr::default(), &mut s, &mut r);
        let dst: Vec<(u32, u8)> = r.out.iter().map(|(p, b, _)| (*p, b[5])).collect();
        assert_eq!(dst, [(1, 1), (2, 9), (3, 8), (4, 7), (5, 8)]);
        // The first output went out of the received buffer itself (zero copy), and every
        // later edit made a copy rather than touching a buffer already handed out.
        assert_eq!(r.out[0].2, base);
        assert_eq!(f[5], 1, "the received frame was not edited after it was output");
        let ptrs: std::collections::HashSet<usize> = r.out.iter().map(|o| o.2).collect();
        assert_eq!(ptrs.len(), 4, "1; 2; 3 and 5 share; 4 its own");
        assert_eq!(s.in_use(), 3);
        s.release();
        assert_eq!(s.in_use(), 0);
    }

    #[test]
    fn an_edit_before_any_output_is_in_place() {
        let mut f = frame();
        let base = f.as_ptr() as usize;
        let mut s = Scratch::default();
        let mut r = Rec::default();
        execute(
            &[set_dst(9), Op::Output(1)],
            &mut f,
            &VnetHdr::default(),
            &mut s,
            &mut r,
        );
        assert_eq!(r.out[0].2, base);
        assert_eq!(s.in_use(), 0);
    }

    #[test]
    fn ttl_expiry_and_meters_stop_the_program() {
        let mut f = frame();
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[22] = 1; // TTL
        let mut s = Scratch::default();
        let mut r = Rec::default();
        execute(
            &[Op::DecNwTtl, Op::Output(1)],
            &mut f,
            &VnetHdr::default(),
            &mut s,
            &mut r,
        );
        assert!(r.out.is_empty());
        assert_eq!(r.drops, [ExecDrop::TtlExpired]);
    }
}
