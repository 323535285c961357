//! cloudrack-ctl: manage a running cloudrack-switch through its management socket.

use clap::{Parser, Subcommand, ValueEnum};
use cloudrack_vswitch::ctl::{client, Request};
use cloudrack_vswitch::dp::fib::PortKind;
use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "cloudrack-ctl",
    version,
    about = "Manage a running Cloud Rack switch: ports, tunnels, MAC/flow table, counters"
)]
struct Cli {
    /// The switch's management socket (cloudrack-switch --ctl).
    #[arg(
        long,
        global = true,
        default_value = "/run/cloudrack/switch.sock",
        env = "CLOUDRACK_CTL"
    )]
    ctl: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    /// An existing interface (a QEMU VM's tap, a veth end), attached through AF_PACKET.
    System,
    /// A tap device the switch creates and owns.
    Tap,
}

#[derive(clap::Args)]
struct Json {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Attach an interface (or create a tap) as a switch port.
    AddPort {
        name: String,
        #[arg(long, value_enum, default_value_t = Kind::System)]
        kind: Kind,
        /// Virtual network (tenant) of the port; carried as the GRE key.
        #[arg(long, default_value_t = 0)]
        vnet: u32,
        /// Bind the VM's MAC to the port (repeat for more). A bound port drops frames from any
        /// other source MAC, and only a bound port may take over a MAC seen elsewhere: a
        /// migration destination declares its VM this way before the VM arrives.
        #[arg(long = "mac", value_name = "MAC")]
        macs: Vec<String>,
    },
    /// Bind a VM's MAC to a port (port security, and the right to take the MAC over).
    Bind {
        port: String,
        #[arg(long)]
        mac: String,
    },
    /// Release a MAC bound to a port.
    Unbind {
        port: String,
        #[arg(long)]
        mac: String,
    },
    /// Detach a port (by name or number).
    DelPort { name: String },
    /// Add a static GRE tunnel to a remote host (e.g. an Open vSwitch host of an existing mesh).
    AddTunnel {
        remote_ip: Ipv4Addr,
        /// GRE key = virtual network id.
        #[arg(long, default_value_t = 0)]
        key: u32,
    },
    /// Remove a tunnel (by name, port number or remote IP).
    DelTunnel { port: String },
    /// Tell the controller a migrating VM is arriving behind PORT on this host.
    ///
    /// Every switch is pointed here at once. Run it at the migration source's STOP event (e.g.
    /// `cloudrack-vm migrate --on-stop`): traffic then waits in the destination tap until the
    /// VM resumes, instead of being lost until the VM announces itself.
    MigrateIn {
        port: String,
        /// The VM's MAC address.
        #[arg(long)]
        mac: String,
    },
    /// The switch: dpid, underlay, ports and tunnels.
    Show(Json),
    /// Tunnels with their remote, key and traffic.
    Tunnels(Json),
    /// The MAC table: (virtual network, MAC) -> port, from table 0's L2 entries.
    Macs(Json),
    /// Every OpenFlow flow entry, all tables, with its counters.
    Flows(Json),
    /// Datapath counters, drops by reason.
    Stats(Json),
    /// The controllers this switch is registered with, and their OpenFlow roles.
    Controllers(Json),
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("cloudrack-ctl: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let (req, json) = match cli.cmd {
        Cmd::AddPort { name, kind, vnet, macs } => {
            let kind = match kind {
                Kind::System => PortKind::System,
                Kind::Tap => PortKind::Tap,
            };
            (Request::AddPort { name, kind, vnet, macs }, false)
        }
        Cmd::Bind { port, mac } => (Request::Bind { port, mac, bound: true }, false),
        Cmd::Unbind { port, mac } => (
            Request::Bind {
                port,
                mac,
                bound: false,
            },
            false,
        ),
        Cmd::DelPort { name } => (Request::DelPort { name }, false),
        Cmd::AddTunnel { remote_ip, key } => (Request::AddTunnel { remote: remote_ip, key }, false),
        Cmd::DelTunnel { port } => (Request::DelTunnel { port }, false),
        Cmd::MigrateIn { port, mac } => (Request::MigrateIn { port, mac }, false),
        Cmd::Show(j) => (Request::Show, j.json),
        Cmd::Tunnels(j) => (Request::Tunnels, j.json),
        Cmd::Macs(j) => (Request::Macs, j.json),
        Cmd::Flows(j) => (Request::Flows, j.json),
        Cmd::Stats(j) => (Request::Stats, j.json),
        Cmd::Controllers(j) => (Request::Controllers, j.json),
    };
    let data = client::call(&cli.ctl, &req)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&data)?);
        return Ok(());
    }
    match req {
        Request::AddPort { .. } => println!(
            "port {} added as number {}",
            data["name"].as_str().unwrap_or("?"),
            data["port_no"]
        ),
        Request::AddTunnel { .. } => println!(
            "tunnel {} added as port {}",
            data["name"].as_str().unwrap_or("?"),
            data["port_no"]
        ),
        Request::DelPort { .. } | Request::DelTunnel { .. } => println!("removed"),
        Request::MigrateIn { .. } => println!("controller told: VM arriving at port {}", data["port_no"]),
        Request::Bind { bound, .. } => println!(
            "{} {} port {}",
            data["mac"].as_str().unwrap_or("?"),
            if bound { "bound to" } else { "released from" },
            data["port_no"]
        ),
        Request::Show => print_show(&data),
        Request::Tunnels => print_tunnels(&data),
        Request::Macs => print_macs(&data),
        Request::Flows => print_flows(&data),
        Request::Stats => print_stats(&data),
        Request::Controllers => {
            println!("{:<28} {:<7} PACKET_INS", "CONTROLLER", "ROLE");
            for c in data.as_array().into_iter().flatten() {
                let pins = if c["receives_packet_ins"] == true { "yes" } else { "no" };
                println!("{:<28} {:<7} {pins}", s(&c["controller"]), s(&c["role"]));
            }
        }
    }
    Ok(())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print_show(d: &Value) {
    println!(
        "dpid {}  underlay {} ({})  controller {}",
        s(&d["dpid"]),
        s(&d["underlay_ip"]),
        s(&d["underlay_mac"]),
        if d["controller_connected"].as_bool() == Some(true) {
            "connected"
        } else {
            "NOT connected"
        }
    );
    println!(
        "{:>6}  {:<16} {:<7} {:>5}  {:<17} {:>12} {:>12}  BOUND",
        "PORT", "NAME", "KIND", "VNET", "MAC", "RX_PKTS", "TX_PKTS"
    );
    for p in d["ports"].as_array().into_iter().flatten() {
        println!(
            "{:>6}  {:<16} {:<7} {:>5}  {:<17} {:>12} {:>12}  {}",
            s(&p["port_no"]),
            s(&p["name"]),
            s(&p["kind"]),
            s(&p["vnet"]),
            s(&p["hw_addr"]),
            s(&p["counters"]["rx_packets"]),
            s(&p["counters"]["tx_packets"]),
            p["bound_macs"]
                .as_array()
                .filter(|a| !a.is_empty())
                .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
                .unwrap_or_else(|| "-".into())
        );
    }
    print_tunnels(&d["tunnels"]);
}

fn print_tunnels(d: &Value) {
    let list = d.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no tunnels");
        return;
    }
    println!(
        "{:>10}  {:<16} {:<15} {:>6} {:<7} {:>9} {:>12} {:>12}",
        "PORT", "NAME", "REMOTE", "KEY", "KIND", "IDLE_MS", "RX_PKTS", "TX_PKTS"
    );
    for t in list {
        println!(
            "{:>10}  {:<16} {:<15} {:>6} {:<7} {:>9} {:>12} {:>12}",
            s(&t["port_no"]),
            s(&t["name"]),
            s(&t["remote_ip"]),
            s(&t["key"]),
            if t["is_static"].as_bool() == Some(true) {
                "static"
            } else {
                "dynamic"
            },
            s(&t["idle_ms"]),
            s(&t["counters"]["rx_packets"]),
            s(&t["counters"]["tx_packets"])
        );
    }
}

fn print_macs(d: &Value) {
    println!(
        "{:>5}  {:<17}  {:<18} {:>9} {:>10} {:>13}",
        "VNET", "MAC", "PORT", "PACKETS", "BYTES", "IDLE_TIMEOUT"
    );
    for f in d.as_array().into_iter().flatten() {
        let port = match (&f["out_port"], &f["out_name"]) {
            (Value::Null, _) => "drop".to_string(),
            (p, Value::Null) => s(p),
            (p, n) => format!("{} ({})", s(p), s(n)),
        };
        println!(
            "{:>5}  {:<17}  {:<18} {:>9} {:>10} {:>13}",
            s(&f["vnet"]),
            s(&f["mac"]),
            port,
            s(&f["packets"]),
            s(&f["bytes"]),
            s(&f["idle_timeout"])
        );
    }
}

fn print_flows(d: &Value) {
    println!(
        "{:>5} {:>5} {:>9} {:>10}  MATCH -> ACTIONS",
        "TABLE", "PRIO", "PACKETS", "BYTES"
    );
    for f in d.as_array().into_iter().flatten() {
        println!(
            "{:>5} {:>5} {:>9} {:>10}  {} -> {}",
            s(&f["table"]),
            s(&f["priority"]),
            s(&f["packets"]),
            s(&f["bytes"]),
            s(&f["match"]),
            s(&f["actions"])
        );
    }
}

fn print_stats(d: &Value) {
    for (k, v) in d.as_object().into_iter().flatten() {
        if k != "datapath" {
            println!("{k:<28} {}", s(v));
        }
    }
    for (k, v) in d["datapath"].as_object().into_iter().flatten() {
        println!("{k:<28} {}", s(v));
    }
}
