//! Where a PACKET_OUT's packets leave: the [`Sink`] of the control thread. It sends at once
//! (one frame at a time; PACKET_OUTs are few), through the same ports and tunnels the workers
//! use.

use crate::dp::fib::Fib;
use crate::dp::output::packet_in;
use crate::dp::stats::now_ms;
use crate::pipeline::execute::{ExecDrop, Sink, ToController};
use crate::switch::Switch;
use cloudrack_wire::vnet_hdr::VnetHdr;
use std::sync::atomic::Ordering::Relaxed;

pub struct DirectSink<'a> {
    switch: &'a Switch,
    fib: &'a Fib,
    in_port: u32,
}

impl<'a> DirectSink<'a> {
    pub fn new(switch: &'a Switch, fib: &'a Fib, in_port: u32) -> Self {
        DirectSink { switch, fib, in_port }
    }
}

impl Sink for DirectSink<'_> {
    fn output(&mut self, port_no: u32, frame: &mut [u8], _vnet: &mut VnetHdr) {
        let shared = &self.switch.dp.shared;
        let none = VnetHdr::default();
        if let Some(p) = self.fib.local.get(&port_no) {
            match p.io.send(&none, frame) {
                Ok(()) => p.counters.tx(frame.len(), now_ms()),
                Err(_) => {
                    p.counters.tx_errors.fetch_add(1, Relaxed);
                }
            }
        } else if let (Some(t), Some(gre)) = (self.fib.tunnels.get(&port_no), shared.gre.as_ref()) {
            match gre.send(t.remote, &t.header, frame) {
                Ok(()) => t.counters.tx(frame.len(), now_ms()),
                Err(_) => {
                    t.counters.tx_errors.fetch_add(1, Relaxed);
                }
            }
        } else {
            shared.counters.drop_no_port.fetch_add(1, Relaxed);
        }
    }

    fn controller(&mut self, frame: &[u8], how: &ToController) {
        let c = &self.switch.dp.shared.counters;
        match self
            .switch
            .dp
            .shared
            .packet_in_tx
            .try_send(packet_in(self.in_port, frame, how))
        {
            Ok(()) => c.packet_in_sent.fetch_add(1, Relaxed),
            Err(_) => c.packet_in_queue_full.fetch_add(1, Relaxed),
        };
    }

    fn dropped(&mut self, why: ExecDrop) {
        let c = &self.switch.dp.shared.counters;
        match why {
            ExecDrop::Meter => c.drop_meter.fetch_add(1, Relaxed),
            ExecDrop::TtlExpired => c.drop_ttl.fetch_add(1, Relaxed),
        };
    }
}
