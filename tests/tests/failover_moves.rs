//! A VM that moves while the master controller dies (issue 14): three hosts, two controllers
//! on etcd. The master is killed, the VM's port is deleted on its old host and added on the
//! new one within the same few milliseconds, and the VM announces itself; nobody is master to
//! hear it. The new master loads the VM's old location from etcd; it must find out from the
//! switches that the old port is gone, and the VM must be reachable again under it.

use cloudrack_tests::*;
use std::time::{Duration, Instant};

const VNET: u32 = 0;

/// Two controllers (hosts 0 and 1) on a one-member etcd (host 2), three switches connected to
/// both. Returns the deployment, etcd, the controllers and their addresses.
fn two_controllers() -> (Cluster, EtcdCluster, Vec<Option<Proc>>, Vec<String>) {
    let net = HostNet::new(3);
    let etcd = EtcdCluster::start(&net, &[2]);
    let endpoints = etcd.endpoints();
    let mut c = Cluster::new(net, &[]);
    let ctls: Vec<Option<Proc>> = (0..2)
        .map(|i| {
            let name = format!("ctl{i}");
            let args = ["--etcd", &endpoints, "--election-ttl", "1s", "--name", &name];
            Some(c.spawn_controller_on(i, &args))
        })
        .collect();
    let addrs: Vec<String> = (0..2).map(|i| c.controller_addr_on(i)).collect();
    c.start_switches(3, &["--controller", &addrs[1]]);
    (c, etcd, ctls, addrs)
}

#[test]
fn a_vm_that_moves_while_the_master_dies_is_reachable_under_the_new_master() {
    let _logs = TestLogs::new("move_while_master_dies");
    let (c, etcd, mut ctls, addrs) = two_controllers();
    let endpoints = etcd.endpoints();
    let master = wait_steady_master(&c, &addrs, Duration::from_secs(15))
        .expect("no steady master: every switch should show one master and one slave");
    let standby = 1 - master;
    println!("master: ctl{master}, standby: ctl{standby}");

    let a = c.vm_system(0, "a", "02:00:00:00:0e:0a", "10.0.14.10/24", VNET);
    let mut m = c.vm_system(1, "m", "02:00:00:00:0e:0b", "10.0.14.11/24", VNET);
    assert!(ping(&a.ns, "10.0.14.11", 2, Duration::from_secs(10)), "a -> m");
    let at_host1 = format!("{:016x}", Cluster::dpid(1));
    let stored = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let reg = etcd_registry(&c, 2, &endpoints);
        etcd_location(&reg, VNET, &m.mac).is_some_and(|l| l["dpid"].as_str() == Some(at_host1.as_str()))
    });
    assert!(stored, "etcd does not hold m on host 1");

    // The master's machine dies; in the same few milliseconds m moves to host 2 and
    // announces itself, with nobody master to hear it.
    if let Some(mut p) = ctls[master].take() {
        p.signal(libc::SIGKILL);
        p.wait_exit(Duration::from_secs(5));
    }
    m.host_if = c.move_vm_system(&m, 1, 2);
    announce(&m);
    let moved_at = Instant::now();

    let ctl = ctls[standby].as_mut().unwrap();
    ctl.expect_log("took over as master", Duration::from_secs(10));
    println!(
        "ctl{standby} took over {:.0} ms after the move",
        moved_at.elapsed().as_secs_f64() * 1000.0
    );
    let took_at = Instant::now();
    let reachable = wait_until(Duration::from_secs(10), Duration::from_millis(10), || {
        ping(&a.ns, "10.0.14.11", 1, Duration::from_millis(300))
    });
    let refusals: Vec<String> = ctl
        .logs()
        .lines()
        .filter(|l| l.contains("refused a MAC"))
        .map(String::from)
        .collect();
    assert!(
        reachable,
        "m is unreachable 10 s after the takeover; the new master refused: {refusals:#?}"
    );
    println!(
        "takeover -> m reachable from a: {:.0} ms",
        took_at.elapsed().as_secs_f64() * 1000.0
    );
    assert!(refusals.is_empty(), "the new master refused m: {refusals:#?}");

    // etcd and every switch agree: m on host 2, at its new port.
    let vms = [
        Placement {
            mac: a.mac.clone(),
            vnet: VNET,
            host: 0,
            port_name: a.host_if.clone(),
        },
        Placement {
            mac: m.mac.clone(),
            vnet: VNET,
            host: 2,
            port_name: m.host_if.clone(),
        },
    ];
    let mut problems = Vec::new();
    let agreed = wait_until(Duration::from_secs(5), Duration::from_millis(200), || {
        problems = disagreements(&c, &etcd_registry(&c, 2, &endpoints), &vms);
        problems.is_empty()
    });
    assert!(agreed, "etcd and the switches disagree: {problems:#?}");
    drop(ctls);
    drop(c);
    drop(etcd);
}
