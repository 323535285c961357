//! Counters. Every drop has a reason and a counter; workers bump them with relaxed atomics and
//! the management socket reads them.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Declares a struct of named atomic counters with `add` and a name → value snapshot.
macro_rules! counters {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident),* $(,)? }) => {
        $(#[$m])*
        #[derive(Default, Debug)]
        pub struct $name { $($(#[$fm])* pub $field: AtomicU64),* }
        impl $name {
            pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
                let mut m = BTreeMap::new();
                $(m.insert(stringify!($field), self.$field.load(Relaxed));)*
                m
            }
        }
    };
}

counters!(
    /// Per-port traffic.
    PortCounters {
        rx_packets, rx_bytes, tx_packets, tx_bytes,
        /// Frames from this port dropped (malformed, no room, loop).
        rx_dropped,
        /// Frames to this port that the kernel refused (queue full, device gone).
        tx_errors,
        /// Frames the kernel dropped on their way to us (our receive queue was full).
        rx_kernel_dropped,
        /// Milliseconds since the switch started at the last frame in or out (tunnel idleness).
        last_used_ms,
    }
);

counters!(
    /// Datapath-wide drops and slow-path events, by reason.
    DpCounters {
        /// Frames shorter than an Ethernet header.
        drop_runt,
        /// Frames whose source MAC is multicast (never a real sender).
        drop_bad_src_mac,
        /// Frames the pipeline sent nowhere (a table miss without a table-miss entry, an entry
        /// that drops, a destination that is the ingress).
        drop_pipeline,
        /// Frames a meter band dropped.
        drop_meter,
        /// Frames whose IP TTL ran out at dec_nw_ttl.
        drop_ttl,
        /// Frames from a bound port with a source MAC it is not bound to (spoofing).
        drop_spoofed,
        /// Frames to a port that no longer exists.
        drop_no_port,
        /// Offloaded frames that could not be checksummed or segmented.
        drop_offload,
        /// Frames too big for a tunnel's path MTU that could not be cut to fit (IPv4 with DF
        /// set, IPv6, not IP, UDP GSO datagrams): dropped.
        tunnel_too_big,
        /// ICMP "fragmentation needed" / ICMPv6 "packet too big" sent back for such frames.
        icmp_too_big_sent,
        /// Inner IPv4 packets (DF clear) fragmented to fit a tunnel's path MTU.
        tunnel_fragmented,
        /// TCP segments from a tunnel whose IPv4 or TCP checksum did not verify: forwarded
        /// as they came, never coalesced.
        gro_bad_checksum,
        /// GRE packets that are not valid IPv4 + GRE + Ethernet.
        gre_rx_malformed,
        /// GRE packets with a wrong checksum.
        gre_rx_bad_checksum,
        /// GRE packets from a remote/key with no tunnel.
        gre_rx_unknown_tunnel,
        /// GRE packets the host's GRO had already joined from several (taken as a super-frame).
        gre_rx_joined_by_host,
        gre_tx_errors,
        /// PACKET_INs handed to the OpenFlow agent.
        packet_in_sent,
        /// PACKET_INs refused by the per-port rate limit.
        packet_in_rate_limited,
        /// PACKET_INs dropped because the queue to the agent was full.
        packet_in_queue_full,
        /// PACKET_INs dropped because no controller was connected.
        packet_in_no_controller,
        /// Receive errors other than "nothing queued".
        rx_errors,
        /// OpenFlow messages from a peer that did not decode.
        ofp_rx_malformed,
    }
);

counters!(
    /// One worker's own traffic: only that worker writes them (a cache line each, so workers
    /// never bounce one between cores), and they show how the load spreads.
    #[repr(align(64))]
    WorkerCounters {
        /// Frames received from the ports this worker owns.
        rx_packets,
        /// GRE packets this worker received (its fanout socket, or the raw socket).
        gre_rx_packets,
        /// Receive calls that returned frames: rx per call is the batching achieved.
        rx_calls,
        /// Frames sent, and the send calls that carried them.
        tx_packets,
        tx_calls,
        /// Flow cache: exact-match hits, megaflow hits, and misses that ran the pipeline.
        emc_hits,
        megaflow_hits,
        upcalls,
        /// Super-frames cut into segments for a tunnel (software TSO), and those segments.
        tso_frames,
        tso_segments,
        /// Super-frames built from segments received from tunnels (GRO), and the segments
        /// joined in them.
        gro_frames,
        gro_segments,
    }
);

/// One worker's flow table lookups and matches, per table.
#[repr(align(64))]
pub struct TableCounters {
    pub lookups: Vec<AtomicU64>,
    pub matched: Vec<AtomicU64>,
}

impl Default for TableCounters {
    fn default() -> Self {
        let n = crate::pipeline::actions::N_TABLES as usize;
        TableCounters {
            lookups: (0..n).map(|_| AtomicU64::new(0)).collect(),
            matched: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl PortCounters {
    pub fn rx(&self, bytes: usize, now_ms: u64) {
        self.rx_packets.fetch_add(1, Relaxed);
        self.rx_bytes.fetch_add(bytes as u64, Relaxed);
        self.last_used_ms.store(now_ms, Relaxed);
    }

    pub fn tx(&self, bytes: usize, now_ms: u64) {
        self.tx_packets.fetch_add(1, Relaxed);
        self.tx_bytes.fetch_add(bytes as u64, Relaxed);
        self.last_used_ms.store(now_ms, Relaxed);
    }
}

/// Per-flow hit counters, shared by the flow table (for stats and idle timeouts) and the FIB.
#[derive(Default, Debug)]
pub struct FlowCounters {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub last_used_ms: AtomicU64,
}

impl FlowCounters {
    pub fn hit(&self, bytes: usize, now_ms: u64) {
        self.packets.fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes as u64, Relaxed);
        self.last_used_ms.store(now_ms, Relaxed);
    }
}

/// Milliseconds since the process started: a monotonic clock cheap enough for the hot path.
pub fn now_ms() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

#[derive(Serialize)]
pub struct Named(pub BTreeMap<&'static str, u64>);

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn snapshot_names_every_counter() {
        let c = DpCounters::default();
        c.drop_runt.fetch_add(3, Relaxed);
        let s = c.snapshot();
        assert_eq!(s["drop_runt"], 3);
        assert!(s.contains_key("packet_in_queue_full"));
        let p = PortCounters::default();
        p.rx(100, 5);
        assert_eq!(p.snapshot()["rx_bytes"], 100);
        assert_eq!(p.snapshot()["last_used_ms"], 5);
    }
}
