//! A private Open vSwitch (userspace datapath) inside a host namespace, as a
//! reference implementation to compare against or interoperate with.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::logs::{register_log, scratch_dir, TempDir};
use crate::netns::Netns;
use crate::process::Proc;
use crate::util::{checked_output, command, require_tool, wait_until};

/// Where Debian installs the Open_vSwitch database schema.
pub const OVS_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// Name of the bridge [`OvsHost::setup_underlay`] creates.
pub const OVS_UNDERLAY_BRIDGE: &str = "br-phy";

/// `ovsdb-server` + `ovs-vswitchd` (netdev datapath, `--disable-system`)
/// running in the foreground inside a namespace, with their database,
/// sockets, pid file and logs in a private directory. Both are killed when
/// this is dropped (vswitchd first).
#[derive(Debug)]
pub struct OvsHost {
    vswitchd: Proc,
    ovsdb: Proc,
    ns_name: String,
    dir: PathBuf,
    _dir: TempDir,
}

impl OvsHost {
    /// Creates the database and starts both daemons inside `ns`. Panics if
    /// Open vSwitch is not installed or a daemon does not come up.
    pub fn start(ns: &Netns) -> OvsHost {
        for t in ["ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl"] {
            require_tool(t);
        }
        if !Path::new(OVS_SCHEMA).exists() {
            panic!("{OVS_SCHEMA} not found: install openvswitch-common");
        }
        let tmp = scratch_dir("ovs");
        let dir = tmp.path().to_path_buf();
        let d = dir.to_string_lossy().into_owned();
        let db = format!("{d}/conf.db");
        checked_output(&mut command(&["ovsdb-tool", "create", &db, OVS_SCHEMA]));

        let mut c = ns.command(&[
            "ovsdb-server",
            &db,
            &format!("--remote=punix:{d}/db.sock"),
            "--no-chdir",
            &format!("--unixctl={d}/ovsdb.ctl"),
            &format!("--log-file={d}/ovsdb.log"),
        ]);
        set_ovs_env(&mut c, &dir);
        let mut ovsdb = Proc::start(&format!("ovsdb-server@{}", ns.name()), c);
        let sock = dir.join("db.sock");
        if !wait_until(Duration::from_secs(10), Duration::from_millis(20), || sock.exists()) {
            ovsdb.assert_running();
            panic!("ovsdb-server did not create {}", sock.display());
        }
        register_log(&format!("ovsdb.log@{}", ns.name()), &dir.join("ovsdb.log"));

        let mut c = command(&["ovs-vsctl", &format!("--db=unix:{d}/db.sock"), "--no-wait", "init"]);
        set_ovs_env(&mut c, &dir);
        checked_output(&mut c);

        let mut c = ns.command(&[
            "ovs-vswitchd",
            &format!("unix:{d}/db.sock"),
            "--disable-system",
            &format!("--pidfile={d}/vswitchd.pid"),
            &format!("--unixctl={d}/vswitchd.ctl"),
            &format!("--log-file={d}/vswitchd.log"),
        ]);
        set_ovs_env(&mut c, &dir);
        let mut vswitchd = Proc::start(&format!("ovs-vswitchd@{}", ns.name()), c);
        let ctl = dir.join("vswitchd.ctl");
        if !wait_until(Duration::from_secs(15), Duration::from_millis(20), || ctl.exists()) {
            vswitchd.assert_running();
            panic!("ovs-vswitchd did not create {}", ctl.display());
        }
        register_log(&format!("vswitchd.log@{}", ns.name()), &dir.join("vswitchd.log"));
        let host = OvsHost {
            vswitchd,
            ovsdb,
            ns_name: ns.name().to_string(),
            dir,
            _dir: tmp,
        };
        // Blocks until vswitchd has read the database once.
        host.vsctl(&["show"]);
        host
    }

    /// The private directory (database, sockets, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The namespace the daemons run in.
    pub fn ns_name(&self) -> &str {
        &self.ns_name
    }

    /// The `ovs-vswitchd` process (e.g. to read its console log).
    pub fn vswitchd(&mut self) -> &mut Proc {
        &mut self.vswitchd
    }

    /// The `ovsdb-server` process.
    pub fn ovsdb(&mut self) -> &mut Proc {
        &mut self.ovsdb
    }

    /// `ovs-vsctl --db=unix:DIR/db.sock --timeout=30 ARGS...`, panicking on
    /// failure. Returns stdout.
    pub fn vsctl(&self, args: &[&str]) -> String {
        let db = format!("--db=unix:{}/db.sock", self.dir.display());
        let mut c = command(&["ovs-vsctl", &db, "--timeout=30"]);
        c.args(args);
        set_ovs_env(&mut c, &self.dir);
        checked_output(&mut c)
    }

    /// `ovs-ofctl ARGS...` with `OVS_RUNDIR` pointing at this instance, so a
    /// bridge name resolves to its management socket.
    pub fn ofctl(&self, args: &[&str]) -> String {
        let mut c = command(&["ovs-ofctl"]);
        c.args(args);
        set_ovs_env(&mut c, &self.dir);
        checked_output(&mut c)
    }

    /// Like [`ofctl`](Self::ofctl), but returns the output whatever the exit status (for
    /// tests that expect refusals).
    pub fn try_ofctl(&self, args: &[&str]) -> std::process::Output {
        let mut c = command(&["ovs-ofctl"]);
        c.args(args);
        set_ovs_env(&mut c, &self.dir);
        c.output().expect("run ovs-ofctl")
    }

    /// `ovs-appctl -t DIR/vswitchd.ctl ARGS...`.
    pub fn appctl(&self, args: &[&str]) -> String {
        let t = format!("{}/vswitchd.ctl", self.dir.display());
        let mut c = command(&["ovs-appctl", "-t", &t]);
        c.args(args);
        set_ovs_env(&mut c, &self.dir);
        checked_output(&mut c)
    }

    /// Adds a bridge with `datapath_type=netdev` (userspace).
    pub fn add_bridge(&self, name: &str) {
        self.vsctl(&[
            "--may-exist",
            "add-br",
            name,
            "--",
            "set",
            "bridge",
            name,
            "datapath_type=netdev",
        ]);
    }

    /// Adds an existing interface of the namespace as a port.
    pub fn add_port(&self, bridge: &str, port: &str) {
        self.vsctl(&["--may-exist", "add-port", bridge, port]);
    }

    /// Adds a GRE tunnel port (`type=gre options:remote_ip=.. options:key=..`).
    pub fn add_gre_port(&self, bridge: &str, name: &str, remote_ip: &str, key: u32) {
        self.vsctl(&[
            "--may-exist",
            "add-port",
            bridge,
            name,
            "--",
            "set",
            "interface",
            name,
            "type=gre",
            &format!("options:remote_ip={remote_ip}"),
            &format!("options:key={key}"),
        ]);
    }

    /// Native tunnelling in the userspace datapath routes encapsulated
    /// packets through an OVS bridge that owns the underlay address: creates
    /// [`OVS_UNDERLAY_BRIDGE`] (netdev), adds `wan_if` as its port and moves
    /// the address from `wan_if` to the bridge's internal port.
    pub fn setup_underlay(&self, wan_if: &str, ip_cidr: &str) {
        self.add_bridge(OVS_UNDERLAY_BRIDGE);
        self.add_port(OVS_UNDERLAY_BRIDGE, wan_if);
        self.ip(&["addr", "flush", "dev", wan_if]);
        self.ip(&["addr", "add", ip_cidr, "dev", OVS_UNDERLAY_BRIDGE]);
        self.ip(&["link", "set", "dev", OVS_UNDERLAY_BRIDGE, "up"]);
    }

    /// `ip -n <namespace> ARGS...`, panicking on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut c = command(&["ip", "-n", &self.ns_name]);
        c.args(args);
        checked_output(&mut c)
    }
}

fn set_ovs_env(c: &mut Command, dir: &Path) {
    for var in [
        "OVS_RUNDIR",
        "OVS_DBDIR",
        "OVS_LOGDIR",
        "OVS_PKGDATADIR",
        "OVS_SYSCONFDIR",
    ] {
        c.env(var, dir);
    }
}
