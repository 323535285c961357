//! Test harness for Cloud Rack integration tests in network namespaces.
//!
//! Rules it enforces:
//! * every namespace gets a unique name (`<prefix>-<tag>`, see
//!   [`unique_tag`]); links are created directly inside namespaces (never in
//!   the root namespace), so parallel tests and concurrent runs don't collide;
//! * everything is removed by `Drop` — namespaces (with their links and the
//!   processes inside them), processes ([`Proc`]), temporary directories —
//!   also when a test panics;
//! * traffic stays inside namespaces the test created (underlay
//!   198.18.0.0/15 on a private WAN bridge);
//! * a test that cannot run (not root, missing tool or binary) panics with a
//!   clear message instead of passing.
//!
//! Typical use:
//! ```no_run
//! use cloudrack_tests::*;
//! use std::time::Duration;
//! let _logs = TestLogs::new("my_test");
//! let net = HostNet::new(2);
//! let vm = vm_ns(&net[0], "vm0", "02:00:00:00:00:01", "10.0.0.1/24");
//! let mut sw = net[0].ns.spawn(&[bin_path("cloudrack-switch").to_str().unwrap()]);
//! sw.expect_log("ready", Duration::from_secs(5));
//! assert!(ping(&net[0].ns, "198.18.0.2", 3, Duration::from_secs(5)));
//! # drop(vm);
//! ```

mod capture;
mod cluster;
mod control;
pub mod differential;
mod etcd;
mod impair;
mod logs;
mod netns;
mod ofpeer;
mod ovs;
mod ping;
mod process;
mod qemu;
mod topology;
mod util;

pub use capture::{tshark_decode, tshark_num, tshark_verbose, Capture};
pub use cluster::{
    announce, controller_status_of, mac_bytes, raw_send, raw_send_each, raw_send_many, send_garp, tcp_transfer,
    tcp_transfer_paced, Cluster, CONTROLLER_PORT,
};
pub use control::{
    disagreements, etcd_location, etcd_registry, steady_master, switch_roles, try_etcd_registry, wait_steady_master,
    Placement,
};
pub use etcd::{EtcdCluster, ETCD_CLIENT_PORT};
pub use impair::segment_in_software;
pub use logs::{
    current_test_dir, harness_tmp_root, print_log_tail, register_log, scratch_dir, tail_file, test_logs_active,
    TempDir, TestLogs, LOG_TAIL_LINES,
};
pub use netns::{
    add_addr, bridge_netfilter_off, get_mac, link_names, link_up, netns_list, root_link_names, set_mac, set_mtu,
    veth_into, Netns, NETNS_RUN_DIR,
};
pub use ofpeer::OfPeer;
pub use ovs::{OvsHost, OVS_SCHEMA, OVS_UNDERLAY_BRIDGE};
pub use ping::{ping, ping_stats, PingStats, PING_INTERVAL};
pub use process::{Proc, TERM_GRACE};
pub use qemu::{cloudrack_vm_path, ensure_guest_image, guest_dir, migrate, require_qemu, GuestOutput, QemuVm, VmSpec};
pub use topology::{vm_ns, Host, HostNet, Vm, Wan, WAN_IF};
pub use util::{
    base36, bin_path, checked_output, command, describe_failure, exec_cmd, find_tool, output_of, render_argv,
    require_root, require_tool, run_cmd, sanitize_name, unique_tag, wait_until, workspace_dir,
};
