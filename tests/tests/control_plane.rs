//! The control plane on etcd (root, namespaces, a real etcd): a controller restarted on etcd
//! resumes with every registry, and several controllers elect a master that a standby
//! replaces when it dies, while installed flows keep forwarding.

use cloudrack_tests::*;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MB: u64 = 1024 * 1024;

/// `cloudrack-controller show --json`, run on host `h` against `endpoints`.
fn registry(c: &Cluster, h: usize, endpoints: &str) -> serde_json::Value {
    let bin = bin_path("cloudrack-controller");
    let out = c.net[h]
        .ns
        .run(&[bin.to_str().unwrap(), "show", "--etcd", endpoints, "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("show --json printed no JSON ({e}): {out}"))
}

fn macs_located(reg: &serde_json::Value) -> Vec<String> {
    reg["locations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["mac"].as_str().map(String::from))
        .collect()
}

/// The value of `key=` in a log line (digits only).
fn log_field(line: &str, key: &str) -> Option<u64> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    let digits: String = line[at..].chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

fn log_line(p: &Proc, needle: &str) -> Option<String> {
    p.logs().lines().find(|l| l.contains(needle)).map(String::from)
}

/// `n_hosts` hosts with switches, one etcd member on host 0, and a controller on it started
/// with `--etcd` and `args`, elected master. Returns the deployment, etcd and its endpoints.
fn on_etcd(n_hosts: usize, args: &[&str]) -> (Cluster, EtcdCluster, String) {
    let net = HostNet::new(n_hosts);
    let etcd = EtcdCluster::start(&net, &[0]);
    let endpoints = etcd.endpoints();
    let mut all = vec!["--etcd", endpoints.as_str()];
    all.extend_from_slice(args);
    let mut c = Cluster::start_on(net, n_hosts, &all, &[]);
    c.controller
        .as_mut()
        .unwrap()
        .expect_log("took over as master", Duration::from_secs(10));
    (c, etcd, endpoints)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Every registry survives a controller restart on etcd: the new process loads hosts, tunnels
/// and MAC locations at takeover (before any switch tells it anything), and the first frame
/// towards a VM it never saw traffic for is forwarded without flooding to find it.
#[test]
fn a_controller_restarted_on_etcd_resumes_with_every_registry() {
    let _logs = TestLogs::new("controller_restarted_on_etcd");
    let (mut c, etcd, endpoints) = on_etcd(3, &["--election-ttl", "1s"]);

    let a = c.vm_system(0, "a", "02:00:00:00:01:0a", "10.0.1.10/24", 0);
    let _b = c.vm_system(1, "b", "02:00:00:00:01:0b", "10.0.1.11/24", 0);
    let d = c.vm_system(2, "d", "02:00:00:00:01:0d", "10.0.1.12/24", 0);
    assert!(ping(&a.ns, "10.0.1.11", 2, Duration::from_secs(10)), "a -> b");
    // d only announces itself: the controller knows where it is, nobody forwards to it.
    announce(&d);
    // a reaches d without ARP, so its first frame to d is a unicast the controller must place.
    a.ns.ip(&[
        "neigh",
        "replace",
        "10.0.1.12",
        "lladdr",
        "02:00:00:00:01:0d",
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    d.ns.ip(&[
        "neigh",
        "replace",
        "10.0.1.10",
        "lladdr",
        "02:00:00:00:01:0a",
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);

    let want = ["02:00:00:00:01:0a", "02:00:00:00:01:0b", "02:00:00:00:01:0d"];
    let mut reg = serde_json::Value::Null;
    let stored = wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        reg = registry(&c, 0, &endpoints);
        let macs = macs_located(&reg);
        reg["hosts"].as_array().map_or(0, Vec::len) == 3
            && !reg["tunnels"].as_array().is_none_or(Vec::is_empty)
            && want.iter().all(|m| macs.iter().any(|x| x == m))
    });
    assert!(stored, "etcd does not hold the registries: {reg:#}");
    println!("in etcd before the restart: {}", etcd_summary(&reg));

    c.kill_controller();
    c.start_controller();
    let ctl = c.controller.as_mut().unwrap();
    ctl.expect_log("took over as master", Duration::from_secs(10));
    let took = log_line(ctl, "took over as master").unwrap();
    println!("restarted controller: {}", took.trim());
    assert_eq!(log_field(&took, "hosts"), Some(3), "hosts loaded from etcd: {took}");
    assert!(
        log_field(&took, "tunnels").unwrap_or(0) >= 1,
        "tunnels loaded from etcd: {took}"
    );
    assert!(
        log_field(&took, "locations").unwrap_or(0) >= 3,
        "MAC locations loaded from etcd: {took}"
    );
    c.wait_connected();

    assert!(
        ping(&a.ns, "10.0.1.12", 2, Duration::from_secs(10)),
        "a -> d after the restart"
    );
    let mut status = serde_json::Value::Null;
    let reported = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        status = c.controller_status();
        status["counters"]["packet_ins"].as_u64().unwrap_or(0) > 0
    });
    assert!(reported, "no state report with PACKET_INs: {status}");
    assert_eq!(
        status["counters"]["unknown_destinations"], 0,
        "the restarted controller had to flood to find a VM it knew: {status}"
    );
    assert_eq!(status["role"], "master");
    assert_eq!(status["store"]["backend"], "etcd");
    drop(c);
    drop(etcd);
}

fn etcd_summary(reg: &serde_json::Value) -> String {
    let n = |k: &str| reg[k].as_array().map_or(0, Vec::len);
    format!(
        "master {}, {} hosts, {} tunnels, {} locations",
        reg["master"]["name"],
        n("hosts"),
        n("tunnels"),
        n("locations")
    )
}

/// The roles each switch reports: (controller address, role).
fn roles(c: &Cluster, host: usize) -> Vec<(String, String)> {
    c.try_ctl_json(host, &["controllers"])
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|l| {
            (
                l["controller"].as_str().unwrap_or("").to_string(),
                l["role"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Three controllers on a three-member etcd, three hosts with VMs. The master dies (with the
/// etcd member on its host) during a TCP transfer: the transfer completes intact, pings on
/// installed flows lose nothing, a standby takes every switch over, a new conversation and a
/// VM move work under the new master. Prints death -> takeover and -> first FLOW_MOD.
#[test]
fn the_master_dies_mid_transfer_and_a_standby_takes_over() {
    let _logs = TestLogs::new("controller_failover");
    let net = HostNet::new(3);
    let mut etcd = EtcdCluster::start(&net, &[0, 1, 2]);
    let endpoints = etcd.endpoints();
    let mut c = Cluster::new(net, &[]);
    // bench/run-failover.sh runs this scenario with the default lease (2 s) too.
    let ttl = std::env::var("CLOUDRACK_ELECTION_TTL").unwrap_or_else(|_| "1s".into());
    println!("election lease: {ttl}");
    let mut ctls: Vec<Option<Proc>> = (0..3)
        .map(|i| {
            let name = format!("ctl{i}");
            let args = ["--etcd", &endpoints, "--election-ttl", &ttl, "--name", &name];
            Some(c.spawn_controller_on(i, &args))
        })
        .collect();
    let extra: Vec<String> = (1..3)
        .flat_map(|i| ["--controller".to_string(), c.controller_addr_on(i)])
        .collect();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    c.start_switches(3, &extra);

    // One master; every switch sees it as MASTER and the two others as SLAVE.
    let mut master = None;
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            master = ctls
                .iter()
                .position(|p| p.as_ref().is_some_and(|p| p.logs().contains("took over as master")));
            master.is_some()
        }),
        "no controller was elected"
    );
    let m = master.unwrap();
    let claimed = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        (0..3).all(|h| {
            let r = roles(&c, h);
            r.len() == 3
                && r.iter().all(|(addr, role)| {
                    role == if *addr == c.controller_addr_on(m) {
                        "master"
                    } else {
                        "slave"
                    }
                })
        })
    });
    assert!(
        claimed,
        "roles after the election: {:?}",
        (0..3).map(|h| roles(&c, h)).collect::<Vec<_>>()
    );
    println!("master: ctl{m}; every switch: 1 master, 2 slaves");

    let a = c.vm_system(0, "a", "02:00:00:00:02:0a", "10.0.2.10/24", 0);
    let b = c.vm_system(1, "b", "02:00:00:00:02:0b", "10.0.2.11/24", 0);
    let mv = c.vm_system(1, "m", "02:00:00:00:02:0c", "10.0.2.12/24", 0);
    let _d = c.vm_system(2, "d", "02:00:00:00:02:0d", "10.0.2.13/24", 0);
    assert!(ping(&a.ns, "10.0.2.11", 2, Duration::from_secs(10)), "a -> b");
    assert!(ping(&a.ns, "10.0.2.12", 2, Duration::from_secs(10)), "a -> m");

    let (killed_at, transfer, pings, n) = std::thread::scope(|s| {
        // 40 MB at 8 MB/s: about 5 s, the failover in the middle.
        let transfer = s.spawn(|| {
            tcp_transfer_paced(
                &a.ns,
                &b.ns,
                Ipv4Addr::new(10, 0, 2, 11),
                5101,
                40 * MB,
                Some(8 * MB),
                Duration::from_secs(60),
            )
        });
        // Pings on an installed flow (a -> m) all through the failover.
        let pings = s.spawn(|| ping_stats(&a.ns, "10.0.2.12", 40, Duration::from_secs(8)));
        std::thread::sleep(Duration::from_millis(1500));
        // The master's machine is lost: its controller and its etcd member.
        let killed_at = now_ms();
        if let Some(mut p) = ctls[m].take() {
            p.signal(libc::SIGKILL);
            p.wait_exit(Duration::from_secs(5));
        }
        etcd.kill(m);
        let mut new_master = None;
        assert!(
            wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
                new_master = ctls
                    .iter()
                    .position(|p| p.as_ref().is_some_and(|p| p.logs().contains("took over as master")));
                new_master.is_some()
            }),
            "no standby took over"
        );
        // A conversation that never happened before, while the transfer still runs: a -> d.
        assert!(
            ping(&a.ns, "10.0.2.13", 2, Duration::from_secs(10)),
            "a -> d under the new master"
        );
        let n = new_master.unwrap();
        (
            killed_at,
            transfer.join().expect("transfer"),
            pings.join().expect("pings"),
            n,
        )
    });
    println!(
        "transfer of 40 MB across the failover: {:.1} s, intact; pings on an installed flow: {}/{}",
        transfer.as_secs_f64(),
        pings.received,
        pings.sent
    );
    assert_eq!(
        pings.received, pings.sent,
        "frames lost on an installed flow during the failover"
    );

    let ctl = ctls[n].as_mut().unwrap();
    let took = log_line(ctl, "took over as master").unwrap();
    let took_ms = log_field(&took, "unix_ms").expect("unix_ms in the takeover line") as i64 - killed_at as i64;
    println!("master death -> ctl{n} took over every switch: {took_ms} ms");
    assert!(ctl.wait_for_log("first FLOW_MOD as master", Duration::from_secs(5)));
    let first = log_line(ctl, "first FLOW_MOD as master").unwrap();
    let first_ms = log_field(&first, "unix_ms").unwrap() as i64 - killed_at as i64;
    println!("master death -> new master's first FLOW_MOD (a -> d, a new conversation): {first_ms} ms");
    assert!(took_ms < 10_000, "takeover took {took_ms} ms");

    let survivors: Vec<usize> = (0..3).filter(|h| *h != m).collect();
    let remaining = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        (0..3).all(|h| {
            let r = roles(&c, h);
            r.iter()
                .any(|(addr, role)| *addr == c.controller_addr_on(n) && role == "master")
                && !r.iter().any(|(addr, _)| *addr == c.controller_addr_on(m))
        })
    });
    assert!(
        remaining,
        "roles after the takeover: {:?}",
        (0..3).map(|h| roles(&c, h)).collect::<Vec<_>>()
    );

    // A VM move under the new master: m leaves host 1 for host 2.
    c.move_vm_system(&mv, 1, 2);
    let moved_at = Instant::now();
    announce(&mv);
    let reachable = wait_until(Duration::from_secs(10), Duration::from_millis(5), || {
        ping(&a.ns, "10.0.2.12", 1, Duration::from_millis(200))
    });
    assert!(reachable, "the moved VM is not reachable under the new master");
    println!(
        "move under the new master -> reachable: {:.1} ms",
        moved_at.elapsed().as_secs_f64() * 1000.0
    );
    let ctl = ctls[n].as_mut().unwrap();
    assert!(
        ctl.wait_for_log("MAC move re-pointed on every switch", Duration::from_secs(5)),
        "the new master logged no re-point"
    );

    // What etcd says, through a surviving member: the new master and every host.
    let live = format!("http://{}:{ETCD_CLIENT_PORT}", c.net[survivors[0]].underlay_ip);
    let reg = registry(&c, survivors[0], &live);
    println!("in etcd after the failover: {}", etcd_summary(&reg));
    assert_eq!(reg["master"]["name"], format!("ctl{n}"), "{reg:#}");
    assert_eq!(reg["hosts"].as_array().map_or(0, Vec::len), 3, "{reg:#}");
    assert!(macs_located(&reg).iter().any(|x| x == "02:00:00:00:02:0d"), "{reg:#}");

    // A clean stop (an upgrade, say) hands over at once: the master revokes its lease.
    let last = (0..3).find(|i| *i != m && *i != n).unwrap();
    let stopped_at = now_ms();
    if let Some(mut p) = ctls[n].take() {
        p.signal(libc::SIGTERM);
        p.wait_exit(Duration::from_secs(5));
        assert!(
            p.logs().contains("resigned"),
            "the master did not resign: {}",
            p.log_tail(5)
        );
    }
    let ctl = ctls[last].as_mut().unwrap();
    assert!(
        ctl.wait_for_log("took over as master", Duration::from_secs(10)),
        "no handover"
    );
    let took = log_line(ctl, "took over as master").unwrap();
    let handover_ms = log_field(&took, "unix_ms").unwrap() as i64 - stopped_at as i64;
    println!("clean stop of the master -> ctl{last} took over: {handover_ms} ms");
    assert!(handover_ms < 2_000, "handover after a clean stop took {handover_ms} ms");
    assert!(
        ping(&a.ns, "10.0.2.13", 2, Duration::from_secs(10)),
        "a -> d after the handover"
    );
    drop(ctls);
}

/// A host that vanishes (its switch gone, so no controller keeps its lease alive) expires from
/// etcd with every entry under its lease; a host still connected stays.
#[test]
fn a_vanished_host_expires_from_etcd() {
    let _logs = TestLogs::new("vanished_host_expires");
    let (mut c, etcd, endpoints) = on_etcd(2, &["--host-ttl", "2s"]);
    let a = c.vm_system(0, "a", "02:00:00:00:03:0a", "10.0.3.10/24", 0);
    let _b = c.vm_system(1, "b", "02:00:00:00:03:0b", "10.0.3.11/24", 0);
    assert!(ping(&a.ns, "10.0.3.11", 2, Duration::from_secs(10)), "a -> b");
    let dpid = |i: usize| format!("{:016x}", Cluster::dpid(i));
    let hosts = |reg: &serde_json::Value| -> Vec<String> {
        reg["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h["dpid"].as_str().map(String::from))
            .collect()
    };
    let mut reg = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
            reg = registry(&c, 0, &endpoints);
            hosts(&reg).len() == 2 && macs_located(&reg).len() >= 2
        }),
        "etcd does not hold both hosts and VMs: {reg:#}"
    );

    // Host 1's switch goes away for good.
    let gone_at = Instant::now();
    if let Some(mut sw) = c.switches[1].take() {
        sw.signal(libc::SIGKILL);
        sw.wait_exit(Duration::from_secs(5));
    }
    let expired = wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
        reg = registry(&c, 0, &endpoints);
        !hosts(&reg).contains(&dpid(1))
    });
    assert!(expired, "host 1 did not expire from etcd: {reg:#}");
    println!(
        "vanished host expired from etcd after {:.1} s (host TTL 2 s)",
        gone_at.elapsed().as_secs_f64()
    );
    let macs = macs_located(&reg);
    assert!(
        !macs.iter().any(|m| m == "02:00:00:00:03:0b"),
        "its VM's location stayed: {reg:#}"
    );
    assert!(
        hosts(&reg).contains(&dpid(0)),
        "the connected host expired too: {reg:#}"
    );
    assert!(
        macs.iter().any(|m| m == "02:00:00:00:03:0a"),
        "the connected host's VM expired: {reg:#}"
    );
    // Still alive a few TTLs later: the master keeps renewing the connected host's lease.
    std::thread::sleep(Duration::from_secs(5));
    let reg = registry(&c, 0, &endpoints);
    assert!(
        hosts(&reg).contains(&dpid(0)),
        "host 0 expired while connected: {reg:#}"
    );
    drop(c);
    drop(etcd);
}
