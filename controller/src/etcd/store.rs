//! The registries in etcd. `record` only queues (the app never waits on etcd); one writer task
//! applies changes in order, many per transaction, each transaction fenced on our election
//! key so a deposed master can never overwrite its successor. Every host has a lease; its
//! entries (host, locations, tunnels it is the lower end of) live under it, and the master
//! keeps alive the leases of the hosts connected to it. A host that vanishes stops being kept
//! alive and its entries expire after `host_ttl`.

use super::{keys, Etcd};
use crate::event::Event;
use crate::ids::Dpid;
use crate::store::{Change, HostRecord, LocationRecord, Snapshot, Store, StoreError};
use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tracing::{debug, error, info, warn};

/// Changes per transaction (etcd's default limit is 128 operations).
const BATCH: usize = 100;
/// Reads of the whole registry tried before a new master gives up (about 4.5 s in all).
const LOAD_ATTEMPTS: u32 = 9;
/// Commit latencies kept for the status report's percentiles.
const SAMPLES: usize = 4096;

enum Cmd {
    Change(Change, Instant),
    /// We were elected: every transaction from now on requires this election key.
    Fence {
        key: Vec<u8>,
        rev: i64,
    },
}

/// Hosts' leases, shared by the writer and the keep-alive task.
#[derive(Default)]
struct Leases {
    by_host: HashMap<Dpid, i64>,
    up: HashSet<Dpid>,
    /// Hosts up since the keeper's last look, to renew at once: a new master's adopted
    /// leases were last renewed by its predecessor, perhaps most of a TTL ago (masters that
    /// changed faster than the renewal period let every host's entries expire).
    newly_up: Vec<Dpid>,
}

#[derive(Default)]
struct Stats {
    committed: AtomicU64,
    transactions: AtomicU64,
    errors: AtomicU64,
    queued: AtomicU64,
    leases_renewed: AtomicU64,
    leases_expired: AtomicU64,
    fenced: AtomicBool,
    /// Milliseconds from `record` to commit.
    commit_ms: Mutex<VecDeque<f64>>,
}

pub struct EtcdStore {
    etcd: Arc<Etcd>,
    tx: UnboundedSender<Cmd>,
    leases: Arc<Mutex<Leases>>,
    stats: Arc<Stats>,
}

/// Hands the election's key to the writer.
#[derive(Clone)]
pub struct Fencer(UnboundedSender<Cmd>);

impl Fencer {
    pub fn fence(&self, key: Vec<u8>, rev: i64) {
        let _ = self.0.send(Cmd::Fence { key, rev });
    }
}

impl EtcdStore {
    /// Start the writer and the host-lease keeper. `events` hears of a lost fence (another
    /// controller is master) and of hosts whose lease expired while they were connected.
    pub fn start(etcd: Arc<Etcd>, host_ttl: Duration, events: crossbeam_channel::Sender<Event>) -> EtcdStore {
        let (tx, rx) = unbounded_channel();
        let leases = Arc::new(Mutex::new(Leases::default()));
        let stats = Arc::new(Stats::default());
        let ttl = host_ttl.as_secs().max(2) as i64;
        let wake = Arc::new(tokio::sync::Notify::new());
        let writer = Writer {
            etcd: etcd.clone(),
            leases: leases.clone(),
            stats: stats.clone(),
            fence: None,
            ttl,
            events: events.clone(),
            wake: wake.clone(),
        };
        etcd.rt.spawn(writer.run(rx));
        let keeper = Keeper {
            etcd: etcd.clone(),
            leases: leases.clone(),
            stats: stats.clone(),
            ttl,
            events,
            wake,
        };
        etcd.rt.spawn(keeper.run());
        EtcdStore {
            etcd,
            tx,
            leases,
            stats,
        }
    }

    pub fn fencer(&self) -> Fencer {
        Fencer(self.tx.clone())
    }
}

impl Store for EtcdStore {
    fn record(&mut self, change: Change) {
        self.stats.queued.fetch_add(1, Relaxed);
        if self.tx.send(Cmd::Change(change, Instant::now())).is_err() {
            self.stats.errors.fetch_add(1, Relaxed);
        }
    }

    fn load(&mut self) -> Result<Snapshot, StoreError> {
        let etcd = self.etcd.clone();
        // A member that just died may still be picked for the first request: try again
        // (through the others) for a few seconds before giving up.
        let mut attempt = 0;
        let kvs = loop {
            match etcd.rt.block_on(etcd.scan()) {
                Ok(kvs) => break kvs,
                Err(e) if attempt < LOAD_ATTEMPTS => {
                    attempt += 1;
                    warn!(error = %e, attempt, "reading the registries from etcd failed; retrying");
                    std::thread::sleep(Duration::from_millis(100 * attempt as u64));
                }
                Err(e) => return Err(e),
            }
        };
        let mut snap = Snapshot::default();
        let mut adopted = Vec::new();
        let mut skipped = 0usize;
        for kv in &kvs {
            let Ok(key) = kv.key_str() else {
                skipped += 1;
                continue;
            };
            let parsed = match keys::parse(&etcd.prefix, key) {
                Some(keys::Key::Host(dpid)) => keys::parse_host(dpid, kv.value()).map(|h| {
                    if kv.lease() != 0 {
                        adopted.push((dpid, kv.lease()));
                    }
                    snap.hosts.push(h)
                }),
                Some(keys::Key::Tunnel { a, b, key }) => {
                    keys::parse_tunnel(a, b, key, kv.value()).map(|t| snap.tunnels.push(t))
                }
                Some(keys::Key::Location { vnet, mac }) => keys::parse_location(kv.value()).map(|(at, port_gone)| {
                    snap.locations.push(LocationRecord {
                        vnet,
                        mac,
                        at,
                        port_gone,
                    })
                }),
                None if key.starts_with(&keys::election(&etcd.prefix)) => Some(()),
                None => None,
            };
            if parsed.is_none() {
                skipped += 1;
            }
        }
        if skipped > 0 {
            warn!(
                skipped,
                "etcd keys under the prefix that are not ours or do not parse; ignored"
            );
        }
        // Keep alive (and write under) the leases the previous master made.
        let mut l = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        l.by_host.extend(adopted);
        Ok(snap)
    }

    fn status(&self) -> serde_json::Value {
        let s = &self.stats;
        let (p50, p99) = {
            let samples = s.commit_ms.lock().unwrap_or_else(|e| e.into_inner());
            let mut v: Vec<f64> = samples.iter().copied().collect();
            v.sort_by(|a, b| a.total_cmp(b));
            let pct = |p: f64| v.get(((v.len() as f64 - 1.0) * p).round() as usize).copied();
            (pct(0.5), pct(0.99))
        };
        let queued = s.queued.load(Relaxed);
        let committed = s.committed.load(Relaxed);
        serde_json::json!({
            "backend": "etcd",
            "endpoints": self.etcd.endpoints,
            "committed": committed,
            "pending": queued.saturating_sub(committed),
            "transactions": s.transactions.load(Relaxed),
            "errors": s.errors.load(Relaxed),
            "host_leases_renewed": s.leases_renewed.load(Relaxed),
            "host_leases_expired": s.leases_expired.load(Relaxed),
            "commit_ms_p50": p50.map(|x| (x * 100.0).round() / 100.0),
            "commit_ms_p99": p99.map(|x| (x * 100.0).round() / 100.0),
            "fenced": s.fenced.load(Relaxed),
        })
    }
}

struct Writer {
    etcd: Arc<Etcd>,
    leases: Arc<Mutex<Leases>>,
    stats: Arc<Stats>,
    fence: Option<(Vec<u8>, i64)>,
    ttl: i64,
    events: crossbeam_channel::Sender<Event>,
    /// Tells the lease keeper that hosts came up.
    wake: Arc<tokio::sync::Notify>,
}

/// One key's operation in a batch (a later change to the same key replaces an earlier one:
/// etcd refuses a transaction that names a key twice).
enum Op {
    Put(String, i64),
    Delete,
}

impl Writer {
    async fn run(mut self, mut rx: UnboundedReceiver<Cmd>) {
        let mut batch: Vec<(Change, Instant)> = Vec::with_capacity(BATCH);
        while let Some(cmd) = rx.recv().await {
            self.take(cmd, &mut batch);
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(cmd) => self.take(cmd, &mut batch),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.commit(&batch).await;
                batch.clear();
            }
        }
    }

    fn take(&mut self, cmd: Cmd, batch: &mut Vec<(Change, Instant)>) {
        match cmd {
            Cmd::Fence { key, rev } => self.fence = Some((key, rev)),
            Cmd::Change(c, t) => batch.push((c, t)),
        }
    }

    fn lease_of(&self, dpid: Dpid) -> Option<i64> {
        self.leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_host
            .get(&dpid)
            .copied()
    }

    /// A lease for `dpid`, granted if it has none yet.
    async fn ensure_lease(&self, dpid: Dpid) -> Result<i64, etcd_client::Error> {
        if let Some(l) = self.lease_of(dpid) {
            return Ok(l);
        }
        let id = self.etcd.client.lease_client().grant(self.ttl, None).await?.id();
        self.leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_host
            .insert(dpid, id);
        Ok(id)
    }

    /// Turn a batch into per-key operations (granting host leases on the way).
    async fn ops(&self, batch: &[(Change, Instant)]) -> Result<Vec<(String, Op)>, etcd_client::Error> {
        let p = &self.etcd.prefix;
        let mut ops: Vec<(String, Op)> = Vec::with_capacity(batch.len());
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut push = |key: String, op: Op| match index.get(&key) {
            Some(&i) => ops[i].1 = op,
            None => {
                index.insert(key.clone(), ops.len());
                ops.push((key, op));
            }
        };
        for (c, _) in batch {
            match c {
                Change::Host {
                    dpid,
                    underlay_ip,
                    underlay_mac,
                } => {
                    let h = HostRecord {
                        dpid: *dpid,
                        underlay_ip: *underlay_ip,
                        underlay_mac: *underlay_mac,
                    };
                    let lease = self.ensure_lease(*dpid).await?;
                    push(keys::host(p, *dpid), Op::Put(keys::host_value(&h), lease));
                }
                Change::HostUp { dpid } => {
                    let mut l = self.leases.lock().unwrap_or_else(|e| e.into_inner());
                    if l.up.insert(*dpid) {
                        l.newly_up.push(*dpid);
                        self.wake.notify_one();
                    }
                }
                Change::HostDown { dpid } => {
                    self.leases.lock().unwrap_or_else(|e| e.into_inner()).up.remove(dpid);
                }
                Change::Tunnel(t) => {
                    let lease = self.lease_of(t.a).unwrap_or(0);
                    push(keys::tunnel(p, t), Op::Put(keys::tunnel_value(t), lease));
                }
                Change::TunnelGone(t) => push(keys::tunnel(p, t), Op::Delete),
                Change::Location { vnet, mac, at } => {
                    let lease = self.lease_of(at.dpid).unwrap_or(0);
                    push(
                        keys::location(p, *vnet, mac),
                        Op::Put(keys::location_value(at, false), lease),
                    );
                }
                Change::LocationReleased { vnet, mac, at } => {
                    let lease = self.lease_of(at.dpid).unwrap_or(0);
                    push(
                        keys::location(p, *vnet, mac),
                        Op::Put(keys::location_value(at, true), lease),
                    );
                }
            }
        }
        Ok(ops)
    }

    /// Apply a batch, retrying until etcd takes it (nothing recorded is dropped while we are
    /// master); stop for good if the fence fails.
    async fn commit(&mut self, batch: &[(Change, Instant)]) {
        if self.stats.fenced.load(Relaxed) {
            return;
        }
        let mut delay = Duration::from_millis(50);
        let mut failures = 0u32;
        loop {
            match self.try_commit(batch).await {
                Ok(true) => break,
                Ok(false) => {
                    self.stats.fenced.store(true, Relaxed);
                    error!("etcd refused our write: this controller is no longer the elected master");
                    let _ = self.events.send(Event::LeadershipLost {
                        reason: "a write to etcd found another master's election key".into(),
                    });
                    return;
                }
                Err(e) => {
                    self.stats.errors.fetch_add(1, Relaxed);
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        warn!(error = %e, changes = batch.len(), attempt = failures, "etcd write failed; retrying");
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        }
        let now = Instant::now();
        self.stats.committed.fetch_add(batch.len() as u64, Relaxed);
        self.stats.transactions.fetch_add(1, Relaxed);
        let mut samples = self.stats.commit_ms.lock().unwrap_or_else(|e| e.into_inner());
        for (_, t) in batch {
            if samples.len() == SAMPLES {
                samples.pop_front();
            }
            samples.push_back(now.duration_since(*t).as_secs_f64() * 1000.0);
        }
        if failures > 0 {
            info!(attempts = failures + 1, "etcd write went through");
        }
    }

    async fn try_commit(&self, batch: &[(Change, Instant)]) -> Result<bool, etcd_client::Error> {
        let ops = self.ops(batch).await?;
        if ops.is_empty() {
            return Ok(true);
        }
        let ops: Vec<TxnOp> = ops
            .into_iter()
            .map(|(key, op)| match op {
                Op::Put(value, 0) => TxnOp::put(key, value, None),
                Op::Put(value, lease) => TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease))),
                Op::Delete => TxnOp::delete(key, None),
            })
            .collect();
        let mut txn = Txn::new();
        if let Some((key, rev)) = &self.fence {
            txn = txn.when(vec![Compare::create_revision(key.clone(), CompareOp::Equal, *rev)]);
        }
        let resp = self.etcd.client.kv_client().txn(txn.and_then(ops)).await?;
        debug!(succeeded = resp.succeeded(), changes = batch.len(), "etcd transaction");
        Ok(resp.succeeded())
    }
}

/// Renews the lease of every connected host a few times per TTL, and of a host that came up
/// at once. A lease that expired anyway (etcd unreachable for longer than the TTL) gets a new
/// one, and the app re-records that host's entries.
struct Keeper {
    etcd: Arc<Etcd>,
    leases: Arc<Mutex<Leases>>,
    stats: Arc<Stats>,
    ttl: i64,
    events: crossbeam_channel::Sender<Event>,
    wake: Arc<tokio::sync::Notify>,
}

impl Keeper {
    async fn run(self) {
        let period = Duration::from_millis((self.ttl as u64 * 1000 / 3).max(500));
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let all = tokio::select! {
                _ = every.tick() => true,
                _ = self.wake.notified() => false,
            };
            let todo: Vec<(Dpid, i64)> = {
                let mut l = self.leases.lock().unwrap_or_else(|e| e.into_inner());
                let hosts: Vec<Dpid> = if all {
                    l.newly_up.clear();
                    l.up.iter().copied().collect()
                } else {
                    std::mem::take(&mut l.newly_up)
                };
                hosts
                    .into_iter()
                    .filter_map(|d| l.by_host.get(&d).map(|id| (d, *id)))
                    .collect()
            };
            self.renew_all(todo).await;
        }
    }

    async fn renew_all(&self, todo: Vec<(Dpid, i64)>) {
        let limit = Arc::new(tokio::sync::Semaphore::new(64));
        let mut tasks = tokio::task::JoinSet::new();
        for (dpid, id) in todo {
            let (etcd, limit) = (self.etcd.clone(), limit.clone());
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                (dpid, id, renew(&etcd, id).await)
            });
        }
        while let Some(done) = tasks.join_next().await {
            let Ok((dpid, id, result)) = done else { continue };
            match result {
                Ok(true) => {
                    self.stats.leases_renewed.fetch_add(1, Relaxed);
                }
                Ok(false) => {
                    self.stats.leases_expired.fetch_add(1, Relaxed);
                    warn!(
                        dpid = format!("{dpid:016x}"),
                        lease = id,
                        "a connected host's etcd lease had expired; re-recording its entries"
                    );
                    let mut l = self.leases.lock().unwrap_or_else(|e| e.into_inner());
                    if l.by_host.get(&dpid) == Some(&id) {
                        l.by_host.remove(&dpid);
                    }
                    drop(l);
                    let _ = self.events.send(Event::Resync { dpid });
                }
                Err(e) => {
                    self.stats.errors.fetch_add(1, Relaxed);
                    debug!(dpid = format!("{dpid:016x}"), error = %e, "host lease renewal failed; next period retries");
                }
            }
        }
    }
}

/// One keep-alive round trip: true if the lease lives on.
async fn renew(etcd: &Etcd, id: i64) -> Result<bool, etcd_client::Error> {
    match tokio::time::timeout(Duration::from_secs(3), etcd.client.lease_client().keep_alive(id)).await {
        Ok(Ok(_)) => Ok(true),
        Ok(Err(e)) if lease_not_found(&e) => Ok(false),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(etcd_client::Error::LeaseKeepAliveError("no answer within 3 s".into())),
    }
}

/// etcd-client reads the first keep-alive answer itself and reports an expired lease so.
pub fn lease_not_found(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::LeaseKeepAliveError(m) if m.contains("not found"))
}
