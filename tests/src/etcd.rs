//! A real etcd cluster (Debian's etcd-server) with one member per chosen host namespace,
//! listening on the hosts' underlay addresses. Members use fast elections (heartbeat 100 ms,
//! election timeout 500 ms) so that a 1 s controller lease is allowed; data directories are
//! scratch directories; members are killed on drop.

use crate::{require_tool, scratch_dir, unique_tag, wait_until, HostNet, Proc, TempDir};
use std::time::Duration;

pub const ETCD_CLIENT_PORT: u16 = 2379;
const ETCD_PEER_PORT: u16 = 2380;

pub struct EtcdCluster {
    pub members: Vec<Option<Proc>>,
    /// Which host each member runs on.
    pub hosts: Vec<usize>,
    client_urls: Vec<String>,
    /// Each member's command line, to restart it on its data directory.
    argv: Vec<Vec<String>>,
    _data: TempDir,
}

impl EtcdCluster {
    /// Start one member on each of `hosts` and wait until the cluster answers.
    pub fn start(net: &HostNet, hosts: &[usize]) -> EtcdCluster {
        let etcd = require_tool("etcd");
        let etcdctl = require_tool("etcdctl");
        let data = scratch_dir("etcd");
        let token = format!("cloudrack-{}", unique_tag());
        let name = |h: usize| format!("m{h}");
        let ip = |h: usize| net[h].underlay_ip;
        let initial: Vec<String> = hosts
            .iter()
            .map(|&h| format!("{}=http://{}:{ETCD_PEER_PORT}", name(h), ip(h)))
            .collect();
        let initial = initial.join(",");
        let mut members = Vec::new();
        let mut client_urls = Vec::new();
        let mut argvs = Vec::new();
        for &h in hosts {
            let client = format!("http://{}:{ETCD_CLIENT_PORT}", ip(h));
            let peer = format!("http://{}:{ETCD_PEER_PORT}", ip(h));
            let dir = data.path().join(name(h));
            let argv = [
                etcd.to_str().unwrap(),
                "--name",
                &name(h),
                "--data-dir",
                dir.to_str().unwrap(),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &initial,
                "--initial-cluster-token",
                &token,
                "--initial-cluster-state",
                "new",
                "--heartbeat-interval",
                "100",
                "--election-timeout",
                "500",
            ];
            members.push(Some(net[h].ns.spawn_named(&format!("etcd-{}", name(h)), &argv)));
            argvs.push(argv.iter().map(|a| a.to_string()).collect());
            client_urls.push(client);
        }
        let c = EtcdCluster {
            members,
            hosts: hosts.to_vec(),
            client_urls,
            argv: argvs,
            _data: data,
        };
        let endpoints = c.endpoints();
        let healthy = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
            net[hosts[0]]
                .ns
                .exec(&[
                    etcdctl.to_str().unwrap(),
                    "--endpoints",
                    &endpoints,
                    "endpoint",
                    "health",
                ])
                .status
                .success()
        });
        assert!(healthy, "etcd cluster on hosts {hosts:?} did not become healthy");
        c
    }

    /// Client URLs, comma separated (what `--etcd` takes).
    pub fn endpoints(&self) -> String {
        self.client_urls.join(",")
    }

    /// Kill the member on host `h` (SIGKILL: a machine lost).
    pub fn kill(&mut self, h: usize) {
        let i = self.hosts.iter().position(|x| *x == h).expect("no member on that host");
        if let Some(mut p) = self.members[i].take() {
            p.signal(libc::SIGKILL);
            p.wait_exit(Duration::from_secs(5));
        }
    }

    /// Start the member on host `h` again (after [`kill`](Self::kill)) on its data directory:
    /// it rejoins the cluster as the member it was.
    pub fn restart(&mut self, net: &HostNet, h: usize) {
        let i = self.hosts.iter().position(|x| *x == h).expect("no member on that host");
        if let Some(mut p) = self.members[i].take() {
            p.signal(libc::SIGKILL);
            p.wait_exit(Duration::from_secs(5));
        }
        let argv: Vec<&str> = self.argv[i].iter().map(String::as_str).collect();
        self.members[i] = Some(net[h].ns.spawn_named(&format!("etcd-m{h}"), &argv));
    }

    /// Client URLs of the members that are running.
    pub fn live_endpoints(&mut self) -> String {
        let live: Vec<&str> = self
            .members
            .iter_mut()
            .zip(&self.client_urls)
            .filter_map(|(m, url)| m.as_mut().is_some_and(|p| p.is_running()).then_some(url.as_str()))
            .collect();
        live.join(",")
    }
}
