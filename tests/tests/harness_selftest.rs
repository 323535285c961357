//! Self-tests of the namespace harness (run as root).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use cloudrack_tests::*;

#[test]
fn unique_tags_are_short_and_unique() {
    let tags: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| (0..200).map(|_| unique_tag()).collect::<Vec<_>>()))
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let set: HashSet<&String> = tags.iter().collect();
    assert_eq!(set.len(), tags.len(), "duplicate tags");
    for t in &tags {
        assert_eq!(t.len(), 6, "tag {t:?}");
        assert!(t.chars().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
    }
    assert_eq!(base36(35, 2), "0z");
    assert_eq!(base36(36 * 36 + 1, 2), "01");
}

#[test]
fn missing_tool_and_binary_fail_loudly() {
    let e = std::panic::catch_unwind(|| require_tool("no-such-tool-cloudrack")).unwrap_err();
    let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("no-such-tool-cloudrack"), "{msg}");

    let e = std::panic::catch_unwind(|| bin_path("no-such-binary-cloudrack")).unwrap_err();
    let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("build the workspace first: cargo build --release"),
        "{msg}"
    );
    // Everything else in this file needs root; make that explicit.
    require_root();
}

#[test]
fn wan_hosts_ping_each_other() {
    let _logs = TestLogs::new("wan_hosts_ping_each_other");
    let net = HostNet::new(3);
    assert_eq!(net[0].underlay_ip.to_string(), "198.18.0.1");
    assert_eq!(net[2].underlay_cidr, "198.18.0.3/24");
    for (a, b) in [(0, 1), (1, 0), (2, 0)] {
        let dst = net[b].underlay_ip.to_string();
        assert!(
            ping(&net[a].ns, &dst, 3, Duration::from_secs(10)),
            "h{a} cannot ping h{b} at {dst}"
        );
    }
    // A host does not reach addresses outside the test's namespaces.
    let st = ping_stats(&net[0].ns, "198.18.0.99", 1, Duration::from_millis(500));
    assert_eq!(st.received, 0);
}

#[test]
fn wan_mtu_option_applies_to_both_ends() {
    let _logs = TestLogs::new("wan_mtu_option");
    let net = HostNet::with_wan_mtu(2, 1600);
    let h = net[1].ns.ip(&["-o", "link", "show", "dev", WAN_IF]);
    assert!(h.contains("mtu 1600"), "{h}");
    let w = net.wan.ns().ip(&["-o", "link", "show", "dev", &net[1].wan_port]);
    assert!(w.contains("mtu 1600"), "{w}");
    assert!(ping(&net[1].ns, "198.18.0.1", 1, Duration::from_secs(10)));
}

#[test]
fn vm_reaches_host_over_veth() {
    let _logs = TestLogs::new("vm_reaches_host_over_veth");
    let net = HostNet::new(1);
    let vm = vm_ns(&net[0], "vmalpha", "02:aa:bb:cc:dd:01", "10.9.0.2/24");
    assert!(vm.host_if.len() <= 15, "{}", vm.host_if);
    assert!(vm.host_if.starts_with("vmalpha"));
    assert_eq!(get_mac(&vm.ns, "eth0"), "02:aa:bb:cc:dd:01");
    add_addr(&net[0].ns, &vm.host_if, "10.9.0.1/24");
    assert!(ping(&vm.ns, "10.9.0.1", 2, Duration::from_secs(10)));
    // Offloads are left at their defaults.
    if find_tool("ethtool").is_some() {
        let k = vm.ns.run(&["ethtool", "-k", "eth0"]);
        assert!(k.contains("tx-checksumming: on"), "{k}");
    }
}

fn all_links(nss: &[&Netns]) -> Vec<String> {
    let mut v = Vec::new();
    for ns in nss {
        v.extend(link_names(ns).into_iter().filter(|n| n != "lo"));
    }
    v
}

#[test]
fn names_unique_and_everything_removed_on_drop() {
    let _logs = TestLogs::new("names_unique_and_removed");
    let root_before: HashSet<String> = root_link_names().into_iter().collect();

    // Two topologies built at the same time from two threads.
    let (a, b) = std::thread::scope(|s| {
        let ha = s.spawn(|| {
            let n = HostNet::new(2);
            let v = vm_ns(&n[0], "vm", "02:00:00:00:01:01", "10.1.0.1/24");
            (n, v)
        });
        let hb = s.spawn(|| {
            let n = HostNet::new(2);
            let v = vm_ns(&n[0], "vm", "02:00:00:00:01:01", "10.1.0.1/24");
            (n, v)
        });
        (ha.join().unwrap(), hb.join().unwrap())
    });
    let mut ns_a = a.0.namespace_names();
    ns_a.push(a.1.ns.name().to_string());
    let mut ns_b = b.0.namespace_names();
    ns_b.push(b.1.ns.name().to_string());
    let set_a: HashSet<&String> = ns_a.iter().collect();
    assert!(ns_b.iter().all(|n| !set_a.contains(n)), "{ns_a:?} vs {ns_b:?}");
    assert_ne!(a.1.host_if, b.1.host_if);

    let listed: HashSet<String> = netns_list().into_iter().collect();
    for n in ns_a.iter().chain(&ns_b) {
        assert!(listed.contains(n), "{n} not in `ip netns list`");
    }

    // Names of every link we created, wherever it lives.
    let mut created = Vec::new();
    for (net, vm) in [&a, &b] {
        let mut nss: Vec<&Netns> = net.hosts.iter().map(|h| &h.ns).collect();
        nss.push(net.wan.ns());
        nss.push(&vm.ns);
        created.extend(all_links(&nss));
    }
    assert!(created.contains(&a.1.host_if) && created.contains(&"wan0".to_string()));
    let new_in_root = |created: &[String]| -> Vec<String> {
        root_link_names()
            .into_iter()
            .filter(|n| created.contains(n) && !root_before.contains(n))
            .collect()
    };
    assert_eq!(new_in_root(&created), Vec::<String>::new(), "links leaked into root ns");

    // A process left running inside a namespace is killed with it.
    let mut stray = a.0[1].ns.command(&["sleep", "1000"]).spawn().unwrap();
    let stray_pid = stray.id() as i32;
    assert!(wait_until(Duration::from_secs(5), Duration::from_millis(20), || a.0[1]
        .ns
        .pids()
        .contains(&stray_pid)));

    let t = Instant::now();
    drop(a);
    drop(b);
    let status = stray.wait().unwrap();
    assert!(!status.success(), "stray process should have been killed");
    assert!(t.elapsed() < Duration::from_secs(10));

    let listed: HashSet<String> = netns_list().into_iter().collect();
    for n in ns_a.iter().chain(&ns_b) {
        assert!(!listed.contains(n), "{n} still in `ip netns list`");
    }
    assert_eq!(new_in_root(&created), Vec::<String>::new(), "links left in root ns");
}

#[test]
fn cleanup_happens_when_a_test_panics() {
    // Outside the panicking closure, so the (passing) test's files go.
    let _logs = TestLogs::new("cleanup_on_panic");
    let names = std::sync::Mutex::new(Vec::new());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let net = HostNet::new(1);
        let mut p = net[0].ns.spawn(&["sleep", "1000"]);
        assert!(p.is_running());
        names.lock().unwrap().extend(net.namespace_names());
        panic!("deliberate failure inside a test");
    }));
    assert!(r.is_err());
    let listed: HashSet<String> = netns_list().into_iter().collect();
    let names = names.into_inner().unwrap();
    assert_eq!(names.len(), 2);
    for n in &names {
        assert!(!listed.contains(n), "{n} survived a panic");
    }
}

#[test]
fn proc_logs_and_termination() {
    let logs = TestLogs::new("proc_logs_and_termination");
    let ns = Netns::new("crproc");
    let mut p = ns.spawn_named(
        "talker",
        &["sh", "-c", "echo hello-out; echo hello-err >&2; exec sleep 1000"],
    );
    assert!(p.wait_for_log("hello-out", Duration::from_secs(5)));
    assert!(p.wait_for_log("hello-err", Duration::from_secs(5)));
    assert!(!p.wait_for_log("never-printed", Duration::from_millis(200)));
    assert!(p.log_path().starts_with(logs.dir()));
    assert!(logs.logs().iter().any(|(_, path)| path == p.log_path()));
    let t = Instant::now();
    let st = p.stop().expect("reaped");
    assert!(!st.success());
    assert!(t.elapsed() < TERM_GRACE, "SIGTERM should have been enough");

    let mut q = ns.spawn(&["sh", "-c", "echo done; exit 3"]);
    assert_eq!(q.wait_exit(Duration::from_secs(5)).unwrap().code(), Some(3));
    assert!(q.logs().contains("done"));
}

fn ovs_diag(ovs: &[OvsHost]) -> String {
    let mut s = String::new();
    for (i, o) in ovs.iter().enumerate() {
        for args in [
            &["ovs/route/show"][..],
            &["tnl/neigh/show"],
            &["dpctl/dump-flows"],
            &["dpif/show"],
        ] {
            s += &format!("--- h{i}: ovs-appctl {} ---\n{}\n", args.join(" "), o.appctl(args));
        }
        s += &format!("--- h{i}: ovs-vsctl show ---\n{}\n", o.vsctl(&["show"]));
    }
    s
}

/// Two OVS userspace hosts joined by GRE (key 5) over the WAN; a VM behind
/// each pings the other, and the WAN capture decodes as GRE key 5 carrying
/// Transparent Ethernet Bridging (0x6558).
#[test]
fn ovs_gre_vm_to_vm_ping_and_capture() {
    let _logs = TestLogs::new("ovs_gre_vm_to_vm");
    require_tool("ethtool");
    let net = HostNet::new(2);
    let mut ovs = Vec::new();
    let mut vms = Vec::new();
    for i in 0..2 {
        let h = &net[i];
        let o = OvsHost::start(&h.ns);
        o.setup_underlay(&h.wan_if, &h.underlay_cidr);
        o.add_bridge("br-int");
        o.add_gre_port("br-int", "gre0", &net[1 - i].underlay_ip.to_string(), 5);
        let vm = vm_ns(
            h,
            &format!("vm{i}"),
            &format!("02:00:00:00:00:0{}", i + 1),
            &format!("10.0.0.{}/24", i + 1),
        );
        // OVS's AF_PACKET path needs real checksums/segments from the VM.
        vm.ns
            .run(&["ethtool", "-K", "eth0", "tx", "off", "tso", "off", "gso", "off"]);
        o.add_port("br-int", &vm.host_if);
        ovs.push(o);
        vms.push(vm);
    }
    // The underlay still works through br-phy.
    assert!(
        ping(&net[0].ns, "198.18.0.2", 2, Duration::from_secs(10)),
        "underlay ping via br-phy failed\n{}",
        ovs_diag(&ovs)
    );

    let mut cap = Capture::start(net.wan.ns(), net.wan.bridge(), "ip proto 47");
    let ok = ping(&vms[0].ns, "10.0.0.2", 3, Duration::from_secs(20));
    assert!(ok, "VM-to-VM ping across OVS GRE failed\n{}", ovs_diag(&ovs));
    assert!(ping(&vms[1].ns, "10.0.0.1", 2, Duration::from_secs(10)));

    let out = cap.decode("gre", &["gre.key", "gre.proto", "ip.src", "ip.dst"]);
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
    assert!(!rows.is_empty(), "no GRE packets captured");
    for r in &rows {
        assert_eq!(tshark_num(r[0]), Some(5), "gre.key in {r:?}");
        assert_eq!(tshark_num(r[1]), Some(0x6558), "gre.proto in {r:?}");
        assert!(r[2].starts_with("198.18.0.") && r[3].starts_with("198.18.0."));
    }
    let inner = tshark_decode(cap.path(), "gre && icmp", &["icmp.type"]);
    assert!(
        inner.lines().any(|l| l == "8") && inner.lines().any(|l| l == "0"),
        "{inner}"
    );
    // The display filter the brief asks for matches too.
    let keyed = tshark_decode(cap.path(), "gre.key == 5 && gre.proto == 0x6558", &["frame.number"]);
    assert_eq!(keyed.lines().count(), rows.len(), "{keyed}");
}
