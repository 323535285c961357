//! Master election through etcd (its lease-based election API): every controller campaigns
//! with its own lease; the one holding the election key is master. The key's creation
//! revision grows with every new master, so it is the OpenFlow generation id the master sends
//! in ROLE_REQUEST: a switch refuses a deposed master that comes back late as stale.
//!
//! Fail-stop: a master whose election lease cannot be renewed for a whole TTL (or was found
//! expired) may no longer be master without knowing it, so it reports the loss and the binary
//! exits; its successor takes over when the lease expires in etcd. A standby that loses its
//! lease (etcd changing leaders, a member dying) just campaigns again with a new one.

use super::store::Fencer;
use super::{keys, Etcd};
use crate::event::Event;
use crossbeam_channel::Sender;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

pub struct Election {
    /// How we appear in the election (and in `cloudrack-controller show`).
    pub name: String,
    pub ttl: Duration,
}

impl Election {
    /// Campaign in the background; the app hears `Leader` for every master (itself included)
    /// and `Elected` once it is the master.
    pub fn start(self, etcd: Arc<Etcd>, fencer: Option<Fencer>, events: Sender<Event>) -> Candidacy {
        let rt = etcd.rt.handle().clone();
        let current = Arc::new(AtomicI64::new(0));
        let candidacy = Candidacy {
            etcd: etcd.clone(),
            lease: current.clone(),
        };
        rt.spawn(async move {
            tokio::spawn(observe(etcd.clone(), events.clone()));
            let election = keys::election(&etcd.prefix);
            loop {
                let (lease, ttl) = grant(&etcd, self.ttl).await;
                current.store(lease, Relaxed);
                info!(name = %self.name, lease, ttl_s = ttl.as_secs_f64(), "campaigning for master");
                let (lost_tx, mut lost) = tokio::sync::mpsc::channel::<String>(1);
                let elected = Arc::new(AtomicBool::new(false));
                let keeper = tokio::spawn(keep_alive(etcd.clone(), lease, ttl, elected.clone(), lost_tx));
                let won = tokio::select! {
                    key = campaign(&etcd, &election, &self.name, lease) => Some(key),
                    reason = lost.recv() => {
                        // Only a master must stop: a standby just stands again.
                        warn!(reason = reason.as_deref().unwrap_or("?"), "election lease lost while standing by; campaigning again");
                        None
                    }
                };
                let Some(key) = won else {
                    keeper.abort();
                    continue;
                };
                elected.store(true, Relaxed);
                info!(name = %self.name, generation = key.rev(), "elected master");
                if let Some(f) = &fencer {
                    f.fence(key.key().to_vec(), key.rev());
                }
                let _ = events.send(Event::Elected {
                    generation: key.rev() as u64,
                });
                let reason = lost.recv().await.unwrap_or_else(|| "the lease keeper stopped".into());
                let _ = events.send(Event::LeadershipLost { reason });
                return;
            }
        });
        candidacy
    }
}

/// Our place in the election, to give it up on the way out.
pub struct Candidacy {
    etcd: Arc<Etcd>,
    lease: Arc<AtomicI64>,
}

impl Candidacy {
    /// Revoke our lease: our election key (and mastership) goes at once, so a standby takes
    /// over without waiting for the lease to expire (a clean stop, an upgrade).
    pub fn resign(&self) {
        let lease = self.lease.load(Relaxed);
        if lease == 0 {
            return;
        }
        // A dead member may still be picked for a request: try a few times, through the others.
        let revoke = async {
            let mut last = String::new();
            for attempt in 0..5u64 {
                let mut leases = self.etcd.client.lease_client();
                match tokio::time::timeout(Duration::from_millis(500), leases.revoke(lease)).await {
                    Ok(Ok(_)) => return Ok(()),
                    Ok(Err(e)) => last = e.to_string(),
                    Err(_) => last = "no answer within 500 ms".into(),
                }
                tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
            }
            Err(last)
        };
        match self.etcd.rt.block_on(revoke) {
            Ok(()) => info!(lease, "resigned: election lease revoked"),
            Err(e) => warn!(error = %e, "could not revoke the election lease; it expires by itself"),
        }
    }
}

/// A lease for our candidacy, and its TTL as etcd granted it (etcd raises a TTL below its
/// minimum, 1.5 election timeouts).
async fn grant(etcd: &Etcd, ttl: Duration) -> (i64, Duration) {
    loop {
        match etcd
            .client
            .lease_client()
            .grant(ttl.as_secs().max(1) as i64, None)
            .await
        {
            Ok(r) => return (r.id(), Duration::from_secs(r.ttl().max(1) as u64)),
            Err(e) => {
                warn!(error = %e, "cannot get an election lease from etcd; retrying");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

/// Campaign until elected. A member dying under the campaign ends the call with an error: we
/// campaign again with the same lease (the same candidacy key).
async fn campaign(etcd: &Etcd, election: &str, name: &str, lease: i64) -> etcd_client::LeaderKey {
    loop {
        match etcd.client.election_client().campaign(election, name, lease).await {
            Ok(mut resp) => {
                if let Some(key) = resp.take_leader() {
                    return key;
                }
            }
            Err(e) => warn!(error = %e, "campaign interrupted; campaigning again"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Renew the lease several times per TTL; report once it may have expired: etcd said so, or
/// (for a master, which must not act on a lease it cannot vouch for) no renewal succeeded for
/// a whole TTL. A standby keeps trying through an etcd leader election instead of starting
/// over at the back of the queue: etcd refreshes every lease when it elects a leader.
async fn keep_alive(
    etcd: Arc<Etcd>,
    lease: i64,
    ttl: Duration,
    elected: Arc<AtomicBool>,
    lost: tokio::sync::mpsc::Sender<String>,
) {
    let period = (ttl / 4).max(Duration::from_millis(100));
    let mut last_ok = Instant::now();
    let mut master = false;
    loop {
        tokio::time::sleep(period).await;
        if !master && elected.load(Relaxed) {
            // Winning the campaign proved the lease alive just now.
            master = true;
            last_ok = Instant::now();
        }
        let mut leases = etcd.client.lease_client();
        let reason = match tokio::time::timeout(period.max(Duration::from_millis(500)), leases.keep_alive(lease)).await
        {
            Ok(Ok(_)) => {
                last_ok = Instant::now();
                continue;
            }
            Ok(Err(e)) if super::store::lease_not_found(&e) => Some("our election lease expired in etcd".to_string()),
            Ok(Err(e)) => {
                (last_ok.elapsed() >= ttl && master).then(|| format!("etcd unreachable for a whole lease TTL: {e}"))
            }
            Err(_) => {
                (last_ok.elapsed() >= ttl && master).then(|| "etcd did not answer for a whole lease TTL".to_string())
            }
        };
        if let Some(reason) = reason {
            let _ = lost.send(reason).await;
            return;
        }
    }
}

/// Tell the app who is master, each time it changes.
async fn observe(etcd: Arc<Etcd>, events: Sender<Event>) {
    let election = keys::election(&etcd.prefix);
    let mut last = None;
    loop {
        match etcd.client.election_client().observe(election.clone()).await {
            Ok(mut stream) => {
                while let Ok(Some(resp)) = stream.message().await {
                    let Some(kv) = resp.kv() else { continue };
                    let generation = kv.create_revision() as u64;
                    if last == Some(generation) {
                        continue;
                    }
                    last = Some(generation);
                    let _ = events.send(Event::Leader {
                        generation,
                        name: String::from_utf8_lossy(kv.value()).into_owned(),
                    });
                }
            }
            Err(e) => warn!(error = %e, "cannot observe the election; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
