//! Master election through etcd (its lease-based election API): every controller campaigns
//! with its own lease; the one holding the election key is master. The key's creation
//! revision grows with every new master, so it is the OpenFlow generation id the master sends
//! in ROLE_REQUEST: a switch refuses a deposed master that comes back late as stale.
//!
//! Fail-stop: a controller whose election lease cannot be renewed for a whole TTL (or was
//! found expired) may no longer be master without knowing it, so it reports the loss and the
//! binary exits; its successor takes over when the lease expires in etcd.

use super::store::Fencer;
use super::{keys, Etcd};
use crate::app::Event;
use crossbeam_channel::Sender;
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
    pub fn start(self, etcd: Arc<Etcd>, fencer: Option<Fencer>, events: Sender<Event>) {
        let rt = etcd.rt.handle().clone();
        rt.spawn(async move {
            let ttl = self.ttl.as_secs().max(1) as i64;
            let lease = loop {
                match etcd.client.lease_client().grant(ttl, None).await {
                    Ok(r) => break r.id(),
                    Err(e) => {
                        warn!(error = %e, "cannot get an election lease from etcd; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            };
            info!(name = %self.name, lease, ttl_s = ttl, "campaigning for master");
            tokio::spawn(keep_alive(etcd.clone(), lease, self.ttl, events.clone()));
            tokio::spawn(observe(etcd.clone(), events.clone()));
            let election = keys::election(&etcd.prefix);
            loop {
                match etcd
                    .client
                    .election_client()
                    .campaign(election.clone(), self.name.clone(), lease)
                    .await
                {
                    Ok(mut resp) => {
                        let Some(key) = resp.take_leader() else { continue };
                        info!(name = %self.name, generation = key.rev(), "elected master");
                        if let Some(f) = &fencer {
                            f.fence(key.key().to_vec(), key.rev());
                        }
                        let _ = events.send(Event::Elected {
                            generation: key.rev() as u64,
                        });
                        return;
                    }
                    // A member died under the campaign, say: campaign again (same lease, same
                    // candidacy key).
                    Err(e) => {
                        warn!(error = %e, "campaign interrupted; campaigning again");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
    }
}

async fn keep_alive(etcd: Arc<Etcd>, lease: i64, ttl: Duration, events: Sender<Event>) {
    let period = (ttl / 4).max(Duration::from_millis(100));
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(period).await;
        let mut leases = etcd.client.lease_client();
        let reason = match tokio::time::timeout(period.max(Duration::from_millis(500)), leases.keep_alive(lease)).await
        {
            Ok(Ok(_)) => {
                last_ok = Instant::now();
                continue;
            }
            Ok(Err(e)) if super::store::lease_not_found(&e) => Some("our election lease expired in etcd".to_string()),
            Ok(Err(e)) => (last_ok.elapsed() >= ttl).then(|| format!("etcd unreachable for a whole lease TTL: {e}")),
            Err(_) => (last_ok.elapsed() >= ttl).then(|| "etcd did not answer for a whole lease TTL".to_string()),
        };
        if let Some(reason) = reason {
            let _ = events.send(Event::LeadershipLost { reason });
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
