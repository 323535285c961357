//! The etcd backend: a connection (one small tokio runtime of its own, so the rest of the
//! controller stays synchronous), the registry store (`store`), the master election
//! (`election`) and the key layout (`keys`). Uses the maintained `etcd-client` crate (gRPC),
//! not hand-written HTTP.

pub mod election;
pub mod keys;
pub mod show;
pub mod store;

use crate::store::StoreError;
use etcd_client::{Client, ConnectOptions, GetOptions, KeyValue};
use std::sync::Arc;
use std::time::Duration;

/// Page size when reading a prefix (etcd-client refuses responses over 4 MiB).
const PAGE: i64 = 2_000;

pub struct Etcd {
    pub rt: tokio::runtime::Runtime,
    pub client: Client,
    pub prefix: String,
    pub endpoints: Vec<String>,
}

impl From<etcd_client::Error> for StoreError {
    fn from(e: etcd_client::Error) -> StoreError {
        StoreError::Etcd(e.to_string())
    }
}

impl Etcd {
    /// Connect to the cluster and check that it answers.
    pub fn connect(endpoints: &[String], prefix: &str) -> Result<Arc<Etcd>, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("etcd")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Etcd(format!("runtime: {e}")))?;
        // Short timeouts: a dead member must not hold a request for long when others live.
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2));
        let client = rt.block_on(Client::connect(endpoints, Some(opts)))?;
        let etcd = Etcd {
            rt,
            client,
            prefix: prefix.trim_end_matches('/').to_string(),
            endpoints: endpoints.to_vec(),
        };
        let mut kv = etcd.client.kv_client();
        etcd.rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), kv.get("/", None)).await })
            .map_err(|_| StoreError::Etcd(format!("no answer from {} within 5 s", endpoints.join(","))))??;
        Ok(Arc::new(etcd))
    }

    /// Every key under our prefix, page by page.
    pub async fn scan(&self) -> Result<Vec<KeyValue>, StoreError> {
        let end = format!("{}0", self.prefix); // '0' follows '/': the whole "{prefix}/" range
        let mut start = format!("{}/", self.prefix).into_bytes();
        let mut all = Vec::new();
        let mut kv = self.client.kv_client();
        loop {
            let opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            let mut resp = kv.get(start.clone(), Some(opts)).await?;
            let more = resp.more();
            let kvs = resp.take_kvs();
            let Some(last) = kvs.last() else { break };
            start = last.key().to_vec();
            start.push(0);
            all.extend(kvs);
            if !more {
                break;
            }
        }
        Ok(all)
    }
}

/// "http://a:2379,http://b:2379" -> endpoints.
pub fn parse_endpoints(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(String::from)
        .collect()
}
