//! cloudrack-controller: the Cloud Rack controller (OpenFlow 1.3 server with the Commander and
//! TCCS apps).

use anyhow::{bail, Context};
use clap::Parser;
use cloudrack_controller::{app, server};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};

#[derive(Parser)]
#[command(
    name = "cloudrack-controller",
    version,
    about = "Cloud Rack controller: learns where every VM MAC is, sets up GRE tunnels between hosts on demand, re-points forwarding when a VM migrates",
    long_about = "Cloud Rack controller.\n\nSwitches (cloudrack-switch --controller tcp:IP:PORT) connect here over OpenFlow 1.3. \
        The Commander app keeps the location of every (virtual network, MAC), installs forwarding on both ends of a \
        conversation, relays broadcasts (ARP) to every host, and re-points every entry when a MAC shows up on another \
        host (live migration). The TCCS app knows each host's underlay address, brings GRE tunnels up when a flow \
        first needs one, and releases tunnels idle longer than --tunnel-idle.\n\nState is in memory; after a restart the \
        switches reconnect and the controller rebuilds it from their flow tables.\n\nLog level: RUST_LOG (default info)."
)]
struct Args {
    /// Address to accept switch connections on.
    #[arg(long, default_value = "0.0.0.0:6653")]
    listen: SocketAddr,
    /// Release tunnels that carried nothing for this long (e.g. 60s, 500ms, 2m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    tunnel_idle: Duration,
    /// Idle timeout, in seconds, of forwarding entries towards remote hosts (0: none).
    #[arg(long, default_value_t = 300)]
    flow_idle: u16,
    /// Most VM MACs the controller accepts behind one switch port (a VM inventing source MACs
    /// is refused beyond this, with a log line and a counter).
    #[arg(long, default_value_t = 256)]
    max_macs_per_port: usize,
    /// Most VM MACs the controller accepts in one virtual network.
    #[arg(long, default_value_t = 1_000_000)]
    max_macs_per_vnet: usize,
    /// This controller's certificate (PEM; scripts/pki.sh makes one for controller.cloudrack).
    /// With --tls-key and --tls-ca, switches must connect over TLS with a certificate from
    /// that CA that names their dpid.
    #[arg(long, value_name = "PEM", requires_all = ["tls_key", "tls_ca"], conflicts_with = "plain_tcp")]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM, PKCS#8).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// The CA that switch certificates must come from (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_ca: Option<std::path::PathBuf>,
    /// Accept switches over plain TCP, unauthenticated: any host that reaches the port can
    /// register any dpid. For labs only.
    #[arg(long)]
    plain_tcp: bool,
    /// Threads doing the switches' network I/O (TLS, framing, echo), each an event loop
    /// serving its share of the connections; the app's state stays on one thread.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    io_threads: u16,
    /// etcd endpoints for shared state (not available in this build; state is in memory).
    #[arg(long, value_name = "URL[,URL...]")]
    etcd: Option<String>,
}

/// A listening socket with a backlog for thousands of switches reconnecting at once (std's
/// `TcpListener::bind` uses 128).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    Ok(sock.into())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 60s, 500ms or 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = run(Args::parse()) {
        error!("{e:#}");
        eprintln!("cloudrack-controller: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.etcd.is_some() {
        bail!("--etcd is not supported by this build yet; run without it to keep state in memory");
    }
    let tls = match (&args.tls_cert, &args.tls_key, &args.tls_ca) {
        (Some(cert), Some(key), Some(ca)) => Some(cloudrack_channel::server_config(&cloudrack_channel::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        })?),
        _ if args.plain_tcp => None,
        _ => bail!(
            "switches connect over mutual TLS: give --tls-cert, --tls-key and --tls-ca (scripts/pki.sh makes a CA and \
             certificates), or --plain-tcp for an unauthenticated lab setup"
        ),
    };
    let listener = listen(args.listen).with_context(|| format!("listening on {}", args.listen))?;
    info!(listen = %args.listen, tls = tls.is_some(), tunnel_idle = ?args.tunnel_idle, "cloudrack-controller running");
    if tls.is_none() {
        warn!("plain TCP: switches are not authenticated (--plain-tcp)");
    }
    let (tx, rx) = crossbeam_channel::bounded::<app::Event>(65_536);
    let counters = Arc::new(server::Counters::default());
    server::spawn(listener, tx, counters.clone(), tls, usize::from(args.io_threads))
        .context("starting the OpenFlow server")?;
    let mut app = app::App::new(app::Config {
        tunnel_idle: args.tunnel_idle,
        flow_idle_s: args.flow_idle,
        limits: cloudrack_controller::commander::Limits {
            macs_per_port: args.max_macs_per_port,
            macs_per_vnet: args.max_macs_per_vnet,
        },
    });
    let tick = Duration::from_millis(500);
    let mut last = std::time::Instant::now();
    let mut last_status = serde_json::Value::Null;
    loop {
        match rx.recv_timeout(tick) {
            Ok(ev) => app.handle(ev),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => bail!("the listener stopped"),
        }
        if last.elapsed() >= tick {
            last = std::time::Instant::now();
            app.tick();
            let mut status = app.status();
            status["server"] = counters.snapshot();
            if status != last_status {
                info!(status = %status, "controller state");
                last_status = status;
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
