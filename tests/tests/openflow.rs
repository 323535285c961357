//! The switch as a general OpenFlow 1.3 switch: a third-party controller (os-ken running a
//! textbook learning switch) drives it, ovs-ofctl programs and inspects it the way operators
//! program Open vSwitch, and what dump-flows prints reads like Open vSwitch's for the same
//! flows. Also: a FLOW_MOD takes effect at once, whatever the workers have cached.

use cloudrack_tests::*;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const MB: u64 = 1024 * 1024;
const OFP_LISTEN: &str = "127.0.0.1:6634";

fn ofctl(ns: &Netns, args: &[&str]) -> String {
    let mut argv = vec!["ovs-ofctl", "-O", "OpenFlow13"];
    argv.extend_from_slice(args);
    ns.run(&argv)
}

fn workspace_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// os-ken's learning switch replaces the switch's default NORMAL entry with its own table-miss
/// entry, learns both VMs through PACKET_INs, installs in_port+eth_dst flows, and TCP then runs
/// on those flows rather than through the controller.
#[test]
fn a_third_party_controller_programs_the_switch() {
    let _logs = TestLogs::new("a_third_party_controller_programs_the_switch");
    require_tool("osken-manager");
    require_tool("ovs-ofctl");
    let net = HostNet::new(1);
    let app = workspace_file("osken/learning_switch.py");
    let mut osken = net[0].ns.spawn_named(
        "osken",
        &[
            "osken-manager",
            "--ofp-listen-host",
            "127.0.0.1",
            "--ofp-tcp-listen-port",
            "6653",
            app.to_str().unwrap(),
        ],
    );
    let mut c = Cluster::new(net, &["--plain-tcp"]);
    let sw = c.spawn_switch_as(
        0,
        "tcp:127.0.0.1:6653",
        Cluster::dpid(0),
        &[],
        &["--ofp-listen", OFP_LISTEN],
    );
    c.switches.push(Some(sw));
    osken.expect_log("table-miss installed", Duration::from_secs(20));
    let a = c.vm_system(0, "oka", "02:00:00:00:07:01", "10.7.0.1/24", 0);
    let b = c.vm_system(0, "okb", "02:00:00:00:07:02", "10.7.0.2/24", 0);
    let ns = &c.net[0].ns;
    let target = format!("tcp:{OFP_LISTEN}");
    let flows = ofctl(ns, &["dump-flows", &target]);
    assert!(flows.contains("priority=0 actions=CONTROLLER:65535"), "{flows}");
    assert!(
        !flows.contains("NORMAL"),
        "the default NORMAL entry is still there: {flows}"
    );

    assert!(
        ping(&a.ns, "10.7.0.2", 3, Duration::from_secs(15)),
        "VMs cannot ping through os-ken"
    );
    let pins_before = c.ctl_json(0, &["stats"])["datapath"]["packet_in_sent"]
        .as_u64()
        .unwrap();
    let t = tcp_transfer(
        &a.ns,
        &b.ns,
        Ipv4Addr::new(10, 7, 0, 2),
        5020,
        50 * MB,
        Duration::from_secs(60),
    );
    let mbit = 50.0 * 8.0 * 1.048_576 / t.as_secs_f64();
    println!("50 MiB over os-ken's flows in {t:?} ({mbit:.0} Mbit/s)");
    let pins = c.ctl_json(0, &["stats"])["datapath"]["packet_in_sent"]
        .as_u64()
        .unwrap()
        - pins_before;
    // The transfer's tens of thousands of frames ran on flows; at most its first few frames
    // (before both directions were learned) went to the controller.
    assert!(
        pins < 50,
        "{pins} PACKET_INs during the transfer: traffic is not on flows"
    );
    assert!(mbit > 100.0, "TCP over os-ken's flows ran at {mbit:.0} Mbit/s");

    let flows = ofctl(ns, &["dump-flows", &target]);
    println!("{flows}");
    for (port, mac) in [(2, "02:00:00:00:07:01"), (1, "02:00:00:00:07:02")] {
        assert!(
            flows.contains(&format!("priority=1,in_port={port},dl_dst={mac} actions=output:")),
            "os-ken's flow for {mac} is missing: {flows}"
        );
    }
    assert!(osken.is_running(), "os-ken died: {}", osken.log_tail(20));
}

/// Normalize ovs-ofctl dump-flows output for comparison: drop the reply header, durations and
/// counters (which differ by timing), keep the flow text, sorted.
fn flow_lines(dump: &str) -> Vec<String> {
    let mut lines: Vec<String> = dump
        .lines()
        .filter(|l| l.starts_with(' ') && l.contains("actions="))
        .map(|l| {
            l.split(", ")
                .filter(|f| {
                    let f = f.trim();
                    !(f.starts_with("duration=") || f.starts_with("n_packets=") || f.starts_with("n_bytes="))
                })
                .collect::<Vec<_>>()
                .join(", ")
                .trim()
                .to_string()
        })
        .collect();
    lines.sort();
    lines
}

/// The flows of the ovs-ofctl parity test: one per feature a user reaches for.
const FLOWS: &[&str] = &[
    "table=0,priority=100,in_port=1,actions=output:2",
    "table=0,priority=90,ip,nw_src=10.1.0.0/16,actions=goto_table:1",
    "table=0,priority=80,tcp,tp_dst=80,actions=write_metadata:0x5/0xff,goto_table:2",
    "table=0,priority=70,udp,udp_dst=53,actions=set_field:10.9.9.9->ip_dst,output:3",
    "table=0,priority=60,dl_vlan=10,actions=pop_vlan,output:2",
    "table=0,priority=50,arp,arp_tpa=10.0.0.1,actions=output:IN_PORT",
    "table=0,priority=40,ipv6,ipv6_dst=fd00::/64,actions=dec_ttl,output:3",
    "table=0,priority=30,dl_src=02:00:00:00:00:00/ff:ff:ff:00:00:00,actions=push_vlan:0x8100,set_field:4106->vlan_vid,output:2",
    "table=0,cookie=0x42,priority=20,icmp,icmp_type=8,actions=CONTROLLER:128",
    "table=0,priority=0,actions=drop",
    "table=1,priority=10,tcp,tp_src=0x1000/0xf000,actions=clear_actions,write_actions(output:4)",
    "table=1,priority=5,actions=FLOOD",
    "table=2,priority=10,metadata=0x5/0xff,actions=group:7",
];

/// ovs-ofctl add-flow, add-flows, mod-flows, del-flows, dump-flows, dump-aggregate,
/// dump-tables, dump-ports, add-group, dump-groups, add-meter and dump-meters all work against
/// the switch; after the same commands, dump-flows lists the same flows as Open vSwitch's.
#[test]
fn ovs_ofctl_programs_the_switch_like_open_vswitch() {
    let _logs = TestLogs::new("ovs_ofctl_programs_the_switch_like_open_vswitch");
    require_tool("ovs-ofctl");
    require_tool("ovs-vswitchd");
    let c = Cluster::standalone("tcp:127.0.0.1:1", OFP_LISTEN);
    let ns = &c.net[0].ns;
    // Four ports, numbered 1-4 on both switches.
    let mut vms = Vec::new();
    for i in 1..=4 {
        vms.push(c.vm_system(
            0,
            &format!("of{i}"),
            &format!("02:00:00:00:08:0{i}"),
            &format!("10.8.0.{i}/24"),
            0,
        ));
    }
    let ours = format!("tcp:{OFP_LISTEN}");

    let peer = Netns::new("ovsref");
    let ovs = OvsHost::start(&peer);
    ovs.add_bridge("br0");
    for i in 1..=4 {
        let p = format!("p{i}");
        peer.ip(&["link", "add", &p, "type", "veth", "peer", "name", &format!("x{i}")]);
        peer.ip(&["link", "set", &p, "up"]);
        ovs.vsctl(&[
            "add-port",
            "br0",
            &p,
            "--",
            "set",
            "Interface",
            &p,
            &format!("ofport_request={i}"),
        ]);
    }
    let theirs = |args: &[&str]| {
        let mut a = vec!["-O", "OpenFlow13"];
        a.extend_from_slice(args);
        ovs.ofctl(&a)
    };

    // The same commands on both.
    let group = "group_id=7,type=all,bucket=output:1,bucket=output:4";
    let meter = "meter=1,pktps,band=type=drop,rate=100";
    let flows_file = scratch_dir("flows");
    let file = flows_file.path().join("flows.txt");
    std::fs::write(&file, FLOWS[1..].join("\n")).unwrap();
    let file = file.to_str().unwrap();
    for (name, run) in [
        ("ours", &(|a: &[&str]| ofctl(ns, a)) as &dyn Fn(&[&str]) -> String),
        ("ovs", &|a: &[&str]| theirs(a)),
    ] {
        let t = if name == "ours" { ours.as_str() } else { "br0" };
        run(&["del-flows", t]);
        run(&["add-group", t, group]);
        run(&["add-meter", t, meter]);
        run(&["add-flow", t, FLOWS[0]]);
        run(&["add-flows", t, file]);
        run(&["mod-flows", t, "table=1,tcp,actions=output:3"]);
        run(&["del-flows", t, "table=0,udp,udp_dst=53"]);
        run(&[
            "add-flow",
            t,
            "table=0,priority=70,udp,udp_dst=53,actions=meter:1,output:3",
        ]);
    }
    let mine = ofctl(ns, &["dump-flows", &ours]);
    let reference = theirs(&["dump-flows", "br0"]);
    println!("ours:\n{mine}\nOpen vSwitch:\n{reference}");
    assert_eq!(
        flow_lines(&mine),
        flow_lines(&reference),
        "dump-flows differs from Open vSwitch's"
    );
    assert_eq!(flow_lines(&mine).len(), FLOWS.len());

    let agg = ofctl(ns, &["dump-aggregate", &ours]);
    assert!(agg.contains(&format!("flow_count={}", FLOWS.len())), "{agg}");
    let tables = ofctl(ns, &["dump-tables", &ours]);
    assert!(tables.contains("table 0") && tables.contains("active="), "{tables}");
    let ports = ofctl(ns, &["dump-ports", &ours]);
    assert!(ports.contains("port  1: rx pkts="), "{ports}");
    let groups = ofctl(ns, &["dump-groups", &ours]);
    assert!(
        groups.contains("group_id=7,type=all,bucket=actions=output:1,bucket=actions=output:4"),
        "{groups}"
    );
    assert_eq!(
        groups.trim_start().lines().skip(1).collect::<Vec<_>>(),
        theirs(&["dump-groups", "br0"])
            .trim_start()
            .lines()
            .skip(1)
            .collect::<Vec<_>>()
    );
    let meters = ofctl(ns, &["dump-meters", &ours]);
    assert!(
        meters.contains("meter=1 pktps bands=") && meters.contains("type=drop rate=100"),
        "{meters}"
    );

    // Traffic follows the flows: in_port=1 goes to port 2 only.
    let before = c.ctl_json(0, &["show"]);
    let tx2 = |v: &serde_json::Value| v["ports"][1]["counters"]["tx_packets"].as_u64().unwrap();
    let n0 = tx2(&before);
    vms[0].ns.enter(|| raw_send_many("eth0", &udp_frame(1, 2), 20));
    std::thread::sleep(Duration::from_millis(300));
    let after = c.ctl_json(0, &["show"]);
    assert!(
        tx2(&after) >= n0 + 20,
        "frames from port 1 did not reach port 2: {after}"
    );

    // Deleting a group takes its flows with it, as in Open vSwitch.
    ofctl(ns, &["del-groups", &ours, "group_id=7"]);
    let flows = ofctl(ns, &["dump-flows", &ours]);
    assert!(!flows.contains("group:7"), "{flows}");
    // Bad input is refused with an error, not accepted or crashed on.
    let bad = ns.exec(&[
        "ovs-ofctl",
        "-O",
        "OpenFlow13",
        "add-flow",
        &ours,
        "table=0,actions=group:99",
    ]);
    assert!(!bad.status.success(), "a flow to a missing group was accepted");
    c.ctl(0, &["show"]);
}

/// A UDP frame from MAC ..:0a to ..:0b, tagged with `id` in its payload.
fn udp_frame(src_last: u8, dst_last: u8) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0x08, dst_last, 2, 0, 0, 0, 0x08, src_last, 0x08, 0x00];
    let ip = [
        0x45, 0, 0, 46, 0, 1, 0, 0, 64, 17, 0, 0, 10, 8, 0, src_last, 10, 8, 0, dst_last,
    ];
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0x13, 0x88, 0x13, 0x89, 0, 26, 0, 0]);
    f.extend_from_slice(&[0xab; 18]);
    f
}

/// A FLOW_MOD takes effect for the very next frames: while frames stream in, their flow is
/// re-pointed from port 2 to port 3; once the barrier reply is in, no frame reaches port 2.
#[test]
fn a_flow_mod_takes_effect_at_once() {
    let _logs = TestLogs::new("a_flow_mod_takes_effect_at_once");
    require_tool("ovs-ofctl");
    let c = Cluster::standalone("tcp:127.0.0.1:1", OFP_LISTEN);
    let ns = &c.net[0].ns;
    let vms: Vec<Vm> = (1..=3)
        .map(|i| {
            c.vm_system(
                0,
                &format!("fm{i}"),
                &format!("02:00:00:00:08:0{i}"),
                &format!("10.8.1.{i}/24"),
                0,
            )
        })
        .collect();
    let ours = format!("tcp:{OFP_LISTEN}");
    ofctl(ns, &["del-flows", &ours]);
    ofctl(ns, &["add-flow", &ours, "priority=10,in_port=1,udp,actions=output:2"]);
    let port_tx = |p: usize| {
        c.ctl_json(0, &["show"])["ports"][p]["counters"]["tx_packets"]
            .as_u64()
            .unwrap()
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (sent, at_2, at_3, start) = std::thread::scope(|s| {
        let sender = s.spawn(|| {
            vms[0].ns.enter(|| {
                let frame = udp_frame(1, 2);
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    raw_send_many("eth0", &frame, 50);
                    n += 50;
                    std::thread::sleep(Duration::from_millis(2));
                }
                n
            })
        });
        assert!(
            wait_until(Duration::from_secs(5), Duration::from_millis(20), || port_tx(1) > 200),
            "the stream does not reach port 2"
        );
        let start = Instant::now();
        ofctl(
            ns,
            &[
                "--strict",
                "mod-flows",
                &ours,
                "priority=10,in_port=1,udp,actions=output:3",
            ],
        );
        // ovs-ofctl waits for the barrier reply: the change is in.
        let at_2 = port_tx(1);
        let at_3 = port_tx(2);
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (sender.join().unwrap(), at_2, at_3, start)
    });
    let (end_2, end_3) = (port_tx(1), port_tx(2));
    println!(
        "re-pointed in {:?}; {sent} frames sent; port 2 +{} after, port 3 +{}",
        start.elapsed(),
        end_2 - at_2,
        end_3 - at_3
    );
    // Frames already queued in the kernel before the barrier may still land at port 2: a few
    // batches at most, never the stream.
    assert!(
        end_2 - at_2 <= 64,
        "port 2 kept receiving after the FLOW_MOD: {} frames",
        end_2 - at_2
    );
    assert!(end_3 - at_3 > 100, "port 3 does not get the stream: {}", end_3 - at_3);
    let stats = c.ctl_json(0, &["stats"]);
    let upcalls: u64 = stats["per_worker"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["upcalls"].as_u64().unwrap())
        .sum();
    assert!(upcalls >= 2, "the caches were never refilled: {stats}");
}
