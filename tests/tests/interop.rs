//! Interoperability with the tools operators already run: a Cloud Rack host joins an Open
//! vSwitch GRE mesh through a static tunnel, and ovs-ofctl inspects the switch over OpenFlow 1.3.

use cloudrack_tests::*;
use std::net::Ipv4Addr;
use std::time::Duration;

const MB: u64 = 1024 * 1024;

/// VMs behind our switch and behind a real Open vSwitch (userspace datapath, `type=gre` with
/// `options:key=5`) ping and exchange TCP over a static tunnel.
#[test]
fn static_tunnel_to_open_vswitch() {
    let _logs = TestLogs::new("static_tunnel_to_open_vswitch");
    require_tool("ovs-vswitchd");
    let c = Cluster::start_with(2, 1, &[], &[]);
    let key = 5;

    // Host 1: Open vSwitch, underlay on br-phy, VM on br-int, GRE back to host 0.
    let ovs = OvsHost::start(&c.net[1].ns);
    ovs.setup_underlay(WAN_IF, &c.net[1].underlay_cidr);
    ovs.add_bridge("br-int");
    ovs.add_gre_port("br-int", "gre0", &c.net[0].underlay_ip.to_string(), key);
    let o = vm_ns(&c.net[1], "ovsvm", "02:00:00:00:05:02", "10.5.0.2/24");
    // OVS's userspace datapath cannot handle offloaded frames from a veth: its VM gets them off.
    o.ns.run(&["ethtool", "-K", "eth0", "tx", "off", "tso", "off", "gso", "off"]);
    ovs.add_port("br-int", &o.host_if);

    // Host 0: Cloud Rack, a static tunnel into the mesh, our VM with offloads left on.
    let out = c.ctl(
        0,
        &[
            "add-tunnel",
            &c.net[1].underlay_ip.to_string(),
            "--key",
            &key.to_string(),
        ],
    );
    assert!(out.contains("tunnel"), "{out}");
    let a = c.vm_system(0, "crvm", "02:00:00:00:05:01", "10.5.0.1/24", key);
    // A 1500-byte underlay carries 1458-byte VM packets (README): OVS drops what does not fit.
    set_mtu(&a.ns, "eth0", 1458);
    set_mtu(&o.ns, "eth0", 1458);

    assert!(
        ping(&a.ns, "10.5.0.2", 3, Duration::from_secs(15)),
        "Cloud Rack VM cannot ping the OVS VM"
    );
    assert!(
        ping(&o.ns, "10.5.0.1", 3, Duration::from_secs(10)),
        "OVS VM cannot ping the Cloud Rack VM"
    );
    let t = tcp_transfer(
        &a.ns,
        &o.ns,
        Ipv4Addr::new(10, 5, 0, 2),
        5010,
        20 * MB,
        Duration::from_secs(60),
    );
    println!("Cloud Rack VM -> OVS VM: 20 MiB in {t:?}");
    let t = tcp_transfer(
        &o.ns,
        &a.ns,
        Ipv4Addr::new(10, 5, 0, 1),
        5011,
        20 * MB,
        Duration::from_secs(60),
    );
    println!("OVS VM -> Cloud Rack VM: 20 MiB in {t:?}");

    let tunnels = c.ctl_json(0, &["tunnels"]);
    let t = &tunnels[0];
    assert_eq!(t["is_static"], true);
    assert!(t["counters"]["rx_packets"].as_u64().unwrap() > 1000, "{t}");
    assert!(t["counters"]["tx_packets"].as_u64().unwrap() > 1000, "{t}");
    let stats = c.ctl_json(0, &["stats"]);
    assert_eq!(stats["datapath"]["gre_rx_malformed"], 0, "{stats}");
}

/// `ovs-ofctl -O OpenFlow13` show, dump-flows, dump-ports, dump-ports-desc and dump-tables
/// work against the switch's passive listener, and add-flow/del-flows change its table.
#[test]
fn ovs_ofctl_inspects_the_switch() {
    let _logs = TestLogs::new("ovs_ofctl_inspects_the_switch");
    require_tool("ovs-ofctl");
    let c = Cluster::start_with(2, 2, &[], &["--ofp-listen", "127.0.0.1:6634"]);
    let a = c.vm_system(0, "a", "02:00:00:00:00:31", "10.0.0.31/24", 3);
    let _b = c.vm_system(1, "b", "02:00:00:00:00:32", "10.0.0.32/24", 3);
    assert!(ping(&a.ns, "10.0.0.32", 2, Duration::from_secs(10)));
    let ns = &c.net[0].ns;
    let ofctl = |args: &[&str]| {
        let mut argv = vec!["ovs-ofctl", "-O", "OpenFlow13"];
        argv.extend_from_slice(args);
        ns.run(&argv)
    };
    let target = "tcp:127.0.0.1:6634";

    let dpid = c.ctl_json(0, &["show"])["dpid"].as_str().unwrap().to_string();
    let show = ofctl(&["show", target]);
    println!("{show}");
    assert!(
        show.contains(&format!("dpid:{dpid}")),
        "show lacks the dpid {dpid}: {show}"
    );
    assert!(show.contains(&a.host_if), "show lacks the VM port: {show}");
    assert!(show.contains("gre3-198.18.0.2"), "show lacks the tunnel port: {show}");

    let flows = ofctl(&["dump-flows", target]);
    println!("{flows}");
    assert!(
        flows.contains("tun_id=0x3") && flows.contains("dl_dst=02:00:00:00:00:31"),
        "{flows}"
    );
    assert!(flows.contains("actions=output:1"), "local VM flow missing: {flows}");
    assert!(flows.contains("n_packets="), "{flows}");

    let ports = ofctl(&["dump-ports", target]);
    assert!(ports.contains("rx pkts="), "{ports}");
    let desc = ofctl(&["dump-ports-desc", target]);
    assert!(desc.contains(&a.host_if), "{desc}");
    let tables = ofctl(&["dump-tables", target]);
    assert!(tables.contains("active=") || tables.contains("table 0"), "{tables}");

    // Writes go through too: add a drop flow, see it, delete it.
    ofctl(&["add-flow", target, "tun_id=3,dl_dst=02:00:00:00:00:99,actions=drop"]);
    let flows = ofctl(&["dump-flows", target]);
    assert!(flows.contains("dl_dst=02:00:00:00:00:99"), "{flows}");
    ofctl(&["del-flows", target, "tun_id=3,dl_dst=02:00:00:00:00:99"]);
    let flows = ofctl(&["dump-flows", target]);
    assert!(!flows.contains("dl_dst=02:00:00:00:00:99"), "{flows}");
    // Any OpenFlow 1.3 match goes in now; what this switch cannot match (MPLS) is refused with
    // an OpenFlow error, not silently accepted.
    ofctl(&["add-flow", target, "ip,nw_dst=10.0.0.1,actions=drop"]);
    let flows = ofctl(&["dump-flows", target]);
    assert!(flows.contains("nw_dst=10.0.0.1"), "{flows}");
    let out = ns.exec(&[
        "ovs-ofctl",
        "-O",
        "OpenFlow13",
        "add-flow",
        target,
        "mpls,mpls_label=5,actions=drop",
    ]);
    assert!(!out.status.success(), "an unsupported match was accepted");
    println!("refused as expected: {}", String::from_utf8_lossy(&out.stderr).trim());
}
