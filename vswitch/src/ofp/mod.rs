//! OpenFlow 1.3: sessions with controllers (active, reconnecting) and with tools such as
//! ovs-ofctl (the passive `--ofp-listen` listener), and the PACKET_IN dispatcher.

pub mod agent;
pub mod packet_out;
pub mod roles;
pub mod session;
mod table_features;
pub mod translate;

use crate::dp::PacketIn;
use crate::switch::Switch;
use cloudrack_channel::Channel;
use cloudrack_wire::ofp::{Body, Message};
use crossbeam_channel::{Receiver, Sender};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

/// The controller connections that completed registration, in the order they did, with
/// their OpenFlow roles: the master (else the first EQUAL one) receives PACKET_INs.
#[derive(Default)]
pub struct Hub {
    state: Mutex<HubState>,
    next: AtomicU64,
}

#[derive(Default)]
struct HubState {
    links: Vec<(u64, Sender<Message>, String)>,
    roles: roles::Roles,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A registered controller connection; `remote` names it (tls:IP:PORT).
    pub fn add(&self, tx: Sender<Message>, remote: &str) -> u64 {
        let id = self.next.fetch_add(1, Relaxed);
        let mut st = self.lock();
        st.links.push((id, tx, remote.to_string()));
        st.roles.add(id);
        id
    }

    pub fn remove(&self, id: u64) {
        let mut st = self.lock();
        st.links.retain(|(i, _, _)| *i != id);
        st.roles.remove(id);
    }

    pub fn has_controller(&self) -> bool {
        !self.lock().links.is_empty()
    }

    /// A ROLE_REQUEST from connection `id`: the role to reply with, or the error.
    pub fn request_role(&self, id: u64, role: u32, generation_id: u64) -> Result<u32, roles::RoleErr> {
        self.lock().roles.request(id, role, generation_id)
    }

    pub fn role(&self, id: u64) -> u32 {
        self.lock().roles.role(id)
    }

    pub fn is_slave(&self, id: u64) -> bool {
        self.lock().roles.is_slave(id)
    }

    /// Send to the primary controller; false if there is none or it is not keeping up.
    pub fn to_primary(&self, msg: Message) -> bool {
        let st = self.lock();
        let Some(id) = st.roles.primary() else { return false };
        st.links
            .iter()
            .find(|(i, _, _)| *i == id)
            .is_some_and(|(_, tx, _)| tx.try_send(msg).is_ok())
    }

    /// The registered controller connections and their roles, for `cloudrack-ctl controllers`.
    pub fn controllers(&self) -> serde_json::Value {
        let st = self.lock();
        let primary = st.roles.primary();
        st.links
            .iter()
            .map(|(id, _, remote)| {
                let role = match st.roles.role(*id) {
                    cloudrack_wire::ofp::OFPCR_ROLE_MASTER => "master",
                    cloudrack_wire::ofp::OFPCR_ROLE_SLAVE => "slave",
                    _ => "equal",
                };
                serde_json::json!({
                    "controller": remote,
                    "role": role,
                    "receives_packet_ins": primary == Some(*id),
                })
            })
            .collect()
    }
}

/// A controller to keep a connection to.
#[derive(Clone)]
pub struct ControllerTarget {
    pub addr: SocketAddr,
    /// TLS configuration and the name the controller's certificate must carry; None: plain TCP.
    pub tls: Option<(Arc<cloudrack_channel::rustls::ClientConfig>, String)>,
}

impl std::fmt::Debug for ControllerTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls.is_some() { "tls" } else { "tcp" };
        write!(f, "{scheme}:{}", self.addr)
    }
}

/// Start the threads that keep the controller connections, the PACKET_IN dispatcher and the
/// passive listener.
pub fn start(
    switch: Arc<Switch>,
    controllers: Vec<ControllerTarget>,
    listen: Option<SocketAddr>,
    packet_ins: Receiver<PacketIn>,
) -> std::io::Result<Arc<Hub>> {
    let hub = Arc::new(Hub::default());
    for target in controllers {
        let (sw, h) = (switch.clone(), hub.clone());
        std::thread::Builder::new()
            .name(format!("ofp-{}", target.addr))
            .spawn(move || session::keep_connected(sw, h, target))?;
    }
    {
        let (sw, h) = (switch.clone(), hub.clone());
        std::thread::Builder::new().name("packet-in".into()).spawn(move || {
            for pin in packet_ins {
                let msg = Message::new(0, Body::PacketIn(translate::packet_in(&pin)));
                if !h.to_primary(msg) {
                    sw.dp.shared.counters.packet_in_no_controller.fetch_add(1, Relaxed);
                }
            }
        })?;
    }
    if let Some(addr) = listen {
        let listener = TcpListener::bind(addr)?;
        info!(%addr, "OpenFlow listener ready (ovs-ofctl -O OpenFlow13 ... tcp:{addr})");
        let (sw, h) = (switch, hub.clone());
        std::thread::Builder::new().name("ofp-listen".into()).spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => {
                        let (sw, h) = (sw.clone(), h.clone());
                        let _ = std::thread::Builder::new().name("ofp-passive".into()).spawn(move || {
                            let _ = session::run(sw, h, Channel::plain(stream), session::Peer::Passive);
                        });
                    }
                    Err(e) => warn!(error = %e, "OpenFlow accept failed"),
                }
            }
        })?;
    }
    Ok(hub)
}
