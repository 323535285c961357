//! The datapath: worker threads that receive frames, decide (forward.rs) and send.
//!
//! Per frame a worker extracts the flow key, finds the translated program in its flow caches
//! (or translates through the pipeline, see `crate::pipeline`) and executes it; `output.rs`
//! is where the program's packets leave.
//!
//! Thread-safety: workers share only `Shared`: the FIB behind an `ArcSwap` (read without locks),
//! atomic counters, the raw GRE socket (the kernel serializes sends) and two bounded channels out
//! (PACKET_INs, port errors) written with `try_send`, so a slow control plane never stalls
//! forwarding.

pub mod fib;
pub mod gro;
pub mod icmp;
pub mod ipfrag;
pub mod offload;
pub mod output;
pub mod security;
pub mod stats;
#[cfg(test)]
mod tests;
pub mod tunnel_tx;
pub mod txq;
mod worker;

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender};
use fib::Fib;
use mio::{Poll, Waker};
use stats::{DpCounters, TableCounters, WorkerCounters};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::tunnel::{GreClaim, GreRx, GreSocket, PmtuTable};

/// A frame for the controller.
#[derive(Debug, Clone)]
pub struct PacketIn {
    pub in_port: u32,
    /// The virtual network: the low 32 bits of `tunnel_id`.
    pub vnet: u32,
    pub tunnel_id: u64,
    pub metadata: u64,
    /// OFPR_*.
    pub reason: u8,
    pub table_id: u8,
    pub cookie: u64,
    pub total_len: usize,
    pub data: Vec<u8>,
}

/// Something the control plane must act on.
#[derive(Debug, Clone)]
pub enum DpEvent {
    /// Receiving from a port failed for good (its interface vanished, say).
    PortFailed { port_no: u32, error: String },
}

/// What the workers share.
pub struct Shared {
    pub fib: ArcSwap<Fib>,
    pub counters: DpCounters,
    /// The raw GRE socket: sends always; receives only when the fanout sockets could not be
    /// set up (`gre_rx_raw`), and then on worker 0 alone.
    pub gre: Option<GreSocket>,
    pub gre_rx_raw: bool,
    /// One per worker, indexed by worker id.
    pub workers: Vec<WorkerCounters>,
    /// Flow table lookups and hits, one set per worker (only its worker writes it).
    pub tables: Vec<TableCounters>,
    /// The path MTU to every tunnel remote.
    pub pmtu: PmtuTable,
    pub packet_in_tx: Sender<PacketIn>,
    pub events_tx: Sender<DpEvent>,
    /// Set while a controller is connected; without one, PACKET_INs are counted, not queued.
    pub controller_up: AtomicBool,
    /// PACKET_INs per second allowed per port, and the burst.
    pub packet_in_rate: u32,
    pub packet_in_burst: u32,
    wakers: Vec<Waker>,
    shutdown: AtomicBool,
    generation: AtomicU64,
}

pub struct Datapath {
    pub shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// Refreshes the path MTUs (see `tunnel::pmtu`).
    pmtu_thread: Option<JoinHandle<()>>,
    /// Held for its lifetime: dropping it detaches the program.
    gre_claim: Option<GreClaim>,
}

/// The CPU worker `id` is pinned to: the next of `cpus` in turn, or, with no list, its own
/// number (mod the CPU count).
fn cpu_for(id: usize, cpus: &[usize], n_cpus: usize) -> usize {
    if cpus.is_empty() {
        id % n_cpus.max(1)
    } else {
        cpus[id % cpus.len()]
    }
}

/// Attach the [`GreClaim`]; without it the host's IP stack also processes every GRE packet
/// (and its filter-dropping raw socket keeps that harmless), so failing is only slower.
fn claim_gre(ifname: &str, local: std::net::Ipv4Addr) -> Option<GreClaim> {
    // The program reads an Ethernet header.
    if crate::os::link_type(ifname).ok() != Some(libc::ARPHRD_ETHER) {
        tracing::info!(interface = %ifname, "not an Ethernet interface: GRE not claimed from the host's IP stack");
        return None;
    }
    match crate::os::ifindex(ifname).and_then(|ifindex| GreClaim::attach(ifindex, local)) {
        Ok(c) => {
            tracing::info!(interface = %ifname, "GRE to us claimed at tc ingress: the host's IP stack no longer processes it too");
            Some(c)
        }
        Err(e) => {
            tracing::warn!(interface = %ifname, error = %e, "cannot attach the tcx GRE claim; the host's IP stack also processes every GRE packet");
            None
        }
    }
}

pub struct DatapathConfig {
    pub workers: usize,
    pub gre: Option<GreSocket>,
    /// The underlay interface and address, to receive GRE on all workers (see
    /// `tunnel::fanout`); `None` receives on the raw socket.
    pub gre_fanout: Option<(String, std::net::Ipv4Addr)>,
    /// Drop GRE to us at the underlay's tc ingress once the fanout has it (see
    /// `tunnel::claim`).
    pub claim_host_gre: bool,
    /// The underlay address tunnels start from.
    pub underlay_ip: std::net::Ipv4Addr,
    /// The underlay interface's MTU: the path MTU assumed where the kernel cannot tell.
    pub underlay_mtu: u32,
    /// `--underlay-mtu`: a cap on every path MTU (paths whose routers drop ICMP).
    pub underlay_mtu_cap: Option<u32>,
    pub packet_in_rate: u32,
    pub packet_in_burst: u32,
    /// Pin each worker to one CPU: `Some([])` worker N to CPU N (mod the CPU count),
    /// `Some(list)` to the listed CPUs in turn; `None` leaves scheduling to the kernel.
    pub cpu_pin: Option<Vec<usize>>,
}

pub struct DatapathChannels {
    pub packet_in_rx: Receiver<PacketIn>,
    pub events_rx: Receiver<DpEvent>,
}

const WAKER: mio::Token = mio::Token(usize::MAX);
const GRE_TOKEN: mio::Token = mio::Token(usize::MAX - 1);
const PACKET_IN_QUEUE: usize = 1024;

impl Datapath {
    /// Whether GRE to us is kept from the host's IP stack (see `tunnel::claim`).
    pub fn gre_claimed(&self) -> bool {
        self.gre_claim.is_some()
    }

    pub fn start(cfg: DatapathConfig) -> std::io::Result<(Datapath, DatapathChannels)> {
        let workers = cfg.workers.max(1);
        let mut polls = Vec::new();
        let mut wakers = Vec::new();
        for _ in 0..workers {
            let poll = Poll::new()?;
            wakers.push(Waker::new(poll.registry(), WAKER)?);
            polls.push(poll);
        }
        let mut gre_rx: Vec<Option<GreRx>> = (0..workers).map(|_| None).collect();
        let mut gre_rx_raw = cfg.gre.is_some();
        let mut gre_claim = None;
        if let (Some(gre), Some((ifname, local))) = (&cfg.gre, &cfg.gre_fanout) {
            match GreRx::open_group(ifname, *local, workers).and_then(|group| {
                gre.set_send_only()?;
                Ok(group)
            }) {
                Ok(group) => {
                    gre_rx = group.members.into_iter().map(Some).collect();
                    gre_rx_raw = false;
                    tracing::info!(interface = %ifname, workers, "GRE received on all workers (AF_PACKET fanout)");
                    if cfg.claim_host_gre && group.ahead_of_ingress {
                        gre_claim = claim_gre(ifname, *local);
                    }
                }
                Err(e) => tracing::warn!(
                    interface = %ifname, error = %e,
                    "cannot receive GRE through AF_PACKET fanout; one worker reads the raw socket"
                ),
            }
        }
        let (packet_in_tx, packet_in_rx) = crossbeam_channel::bounded(PACKET_IN_QUEUE);
        let (events_tx, events_rx) = crossbeam_channel::bounded(1024);
        let shared = Arc::new(Shared {
            fib: ArcSwap::from_pointee(Fib::default()),
            counters: DpCounters::default(),
            gre: cfg.gre,
            gre_rx_raw,
            workers: (0..workers).map(|_| WorkerCounters::default()).collect(),
            tables: (0..workers).map(|_| TableCounters::default()).collect(),
            pmtu: PmtuTable::new(cfg.underlay_ip, cfg.underlay_mtu_cap, cfg.underlay_mtu),
            packet_in_tx,
            events_tx,
            controller_up: AtomicBool::new(false),
            packet_in_rate: cfg.packet_in_rate,
            packet_in_burst: cfg.packet_in_burst,
            wakers,
            shutdown: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        });
        let n_cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let mut threads = Vec::new();
        for (id, (poll, gre_rx)) in polls.into_iter().zip(gre_rx).enumerate() {
            let shared = shared.clone();
            let pin = cfg.cpu_pin.as_deref().map(|cpus| cpu_for(id, cpus, n_cpus));
            let handle = std::thread::Builder::new()
                .name(format!("dp-worker-{id}"))
                .spawn(move || worker::Worker::new(id, shared, poll, pin, gre_rx).run())?;
            threads.push(handle);
        }
        let pmtu_shared = shared.clone();
        let pmtu_thread = std::thread::Builder::new()
            .name("pmtu".into())
            .spawn(move || refresh_path_mtus(&pmtu_shared))?;
        Ok((
            Datapath {
                shared,
                threads,
                pmtu_thread: Some(pmtu_thread),
                gre_claim,
            },
            DatapathChannels {
                packet_in_rx,
                events_rx,
            },
        ))
    }

    /// Per table: (lookups, matched) summed over the workers.
    pub fn table_stats(&self) -> Vec<(u64, u64)> {
        let n = crate::pipeline::actions::N_TABLES as usize;
        (0..n)
            .map(|t| {
                self.shared.tables.iter().fold((0, 0), |(l, m), tc| {
                    (
                        l + tc.lookups[t].load(Ordering::Relaxed),
                        m + tc.matched[t].load(Ordering::Relaxed),
                    )
                })
            })
            .collect()
    }

    /// Publish a new FIB to the workers and wake them so they pick up new ports at once.
    pub fn publish(&self, mut fib: Fib) {
        fib.generation = self.shared.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.shared.fib.store(Arc::new(fib));
        for w in &self.shared.wakers {
            let _ = w.wake();
        }
    }

    pub fn workers(&self) -> usize {
        self.threads.len()
    }

    /// The shared path MTU entry for a new tunnel to `remote`.
    pub fn path_mtu(&self, remote: std::net::Ipv4Addr) -> Arc<crate::tunnel::PathMtu> {
        self.shared.pmtu.for_remote(remote)
    }

    pub fn stop(self) {
        self.shared.shutdown.store(true, Ordering::Relaxed);
        for w in &self.shared.wakers {
            let _ = w.wake();
        }
        for t in self.threads.into_iter().chain(self.pmtu_thread) {
            let _ = t.join();
        }
    }
}

/// How often every path MTU is asked of the kernel again, beyond the refreshes that
/// EMSGSIZE triggers: it notices paths that grew back (learned PMTUs expire after 10 minutes)
/// and routes that changed.
const PMTU_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

fn refresh_path_mtus(shared: &Shared) {
    let tick = std::time::Duration::from_millis(100);
    let mut waited = std::time::Duration::ZERO;
    while !shared.shutdown.load(Ordering::Relaxed) {
        std::thread::sleep(tick);
        waited += tick;
        if waited >= PMTU_REFRESH {
            waited = std::time::Duration::ZERO;
            shared.pmtu.refresh_all();
        }
    }
}

#[cfg(test)]
mod test {
    use super::cpu_for;

    #[test]
    fn workers_take_the_listed_cpus_in_turn() {
        assert_eq!((0..3).map(|id| cpu_for(id, &[], 2)).collect::<Vec<_>>(), [0, 1, 0]);
        assert_eq!((0..3).map(|id| cpu_for(id, &[5, 7], 8)).collect::<Vec<_>>(), [5, 7, 5]);
    }
}
