//! TCCS ("Topology Central Control Service") messages between Cloud Rack switches and the
//! controller. This doc comment is the specification of their encoding.
//!
//! # Transport
//!
//! Each TCCS message is one OpenFlow 1.3 `OFPT_EXPERIMENTER` message (`ofp::Body::Experimenter`)
//! with `experimenter` = [`TCCS_EXPERIMENTER`] (`0x00C1_0DAC`) and `exp_type` selecting the
//! message. The id is private to Cloud Rack: it is not an IEEE OUI assigned by the ONF, it has a
//! zero top byte like OUI-based ids, and it is only ever exchanged between Cloud Rack peers. A peer
//! that does not know it answers with an OFPET_BAD_REQUEST/OFPBRC_BAD_EXPERIMENTER error.
//!
//! # Layouts
//!
//! The experimenter `data` is a fixed-size big-endian record; offsets are in bytes from its
//! start. Every record begins with a `version` byte (currently [`TCCS_VERSION`] = 1) followed by
//! three bytes that are reserved unless listed below. Lengths are multiples of 8.
//!
//! | exp_type | message | direction | length |
//! |---|---|---|---|
//! | 1 | `Register` | switch → controller, after the features exchange | 24 |
//! | 2 | `TunnelAdd` | controller → switch | 32 |
//! | 3 | `TunnelDel` | controller → switch | 16 |
//! | 4 | `TunnelIdle` | switch → controller | 24 |
//! | 5 | `TunnelReport` | switch → controller, after (re)connect, one per tunnel | 32 |
//! | 6 | `PortVnet` | switch → controller, after register and on port add | 16 |
//! | 7 | `MigrationNotify` | anyone → controller | 32 (24 before `dst_port` was appended) |
//! | 8 | `PortBinding` | switch → controller, after `PortVnet` and on bind/unbind | 24 |
//!
//! `Register`:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version |
//! | 1 | 3 | reserved |
//! | 4 | 4 | underlay_ip (IPv4 the switch terminates tunnels on) |
//! | 8 | 8 | dpid |
//! | 16 | 6 | underlay_mac |
//! | 22 | 2 | reserved |
//!
//! `TunnelAdd` (create tunnel port `port_no` towards `remote_ip` with GRE key `key`) and
//! `TunnelReport` (an existing tunnel, so a restarted controller can rebuild its registry):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version |
//! | 1 | 1 | `TunnelReport`: flags, bit 0 = static (configured, never idled out); `TunnelAdd`: reserved |
//! | 2 | 2 | reserved |
//! | 4 | 4 | remote_ip |
//! | 8 | 8 | remote_dpid |
//! | 16 | 4 | key |
//! | 20 | 4 | port_no |
//! | 24 | 4 | idle_timeout_s (0 = never idle out) |
//! | 28 | 4 | reserved |
//!
//! `TunnelDel` (remove the tunnel) and `TunnelIdle` (the tunnel carried nothing for `idle_ms`):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version |
//! | 1 | 3 | reserved |
//! | 4 | 4 | remote_ip |
//! | 8 | 4 | key |
//! | 12 | 4 | port_no |
//! | 16 | 8 | `TunnelIdle` only: idle_ms |
//!
//! `PortVnet` (local port `port_no` belongs to virtual network `vnet`):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version |
//! | 1 | 3 | reserved |
//! | 4 | 4 | port_no |
//! | 8 | 4 | vnet |
//! | 12 | 4 | reserved |
//!
//! `MigrationNotify` (live-migration hint for the VM `mac` in `vnet` moving to `dst_dpid`):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version |
//! | 1 | 1 | phase: 1 started, 2 stopped, 3 completed, 4 failed |
//! | 2 | 2 | reserved |
//! | 4 | 4 | vnet |
//! | 8 | 8 | dst_dpid |
//! | 16 | 6 | mac |
//! | 22 | 2 | reserved |
//! | 24 | 4 | dst_port: the VM's port on the destination switch (0 = not given; absent in 24-byte records) |
//! | 28 | 4 | reserved |
//!
//! `PortBinding` (local port `port_no` is bound to the VM `mac` in `vnet`, or no longer is): only
//! a port bound to a MAC may take that MAC over from another port (MAC-move authorization; a
//! migration's destination declares the binding before the VM arrives):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version |
//! | 1 | 1 | flags, bit 0 = bound (clear: the binding is released) |
//! | 2 | 2 | reserved |
//! | 4 | 4 | port_no |
//! | 8 | 4 | vnet |
//! | 12 | 6 | mac |
//! | 18 | 6 | reserved |
//!
//! # Compatibility rules
//!
//! Senders write version 1 and zeros in reserved bytes. Receivers reject version 0, accept any
//! version ≥ 1, ignore reserved bytes, unknown flag bits and bytes after the layout above (a later
//! version may only append fields), and report data shorter than the layout as truncated. Unknown
//! phases are passed through as numbers.

use std::net::Ipv4Addr;

use crate::ofp::Body;
use crate::ofp::Message;

/// Experimenter id of TCCS messages (private to Cloud Rack, see the module docs).
/// How a Cloud Rack switch numbers its OpenFlow ports, shared by the switch and the controller.
/// Every number stays below 0xff00 because Open vSwitch's tools (ovs-ofctl) hold OpenFlow port
/// numbers in 16 bits and refuse larger ones.
pub mod port_ranges {
    /// Local ports (taps, AF_PACKET ports): 1 to this, numbered by the switch.
    pub const MAX_LOCAL_PORT: u32 = 0x3fff;
    /// Tunnel ports the controller hands out in `TunnelAdd`: from here to `LAST_CONTROLLER_TUNNEL`.
    pub const FIRST_CONTROLLER_TUNNEL: u32 = 0x4000;
    pub const LAST_CONTROLLER_TUNNEL: u32 = 0xdfff;
    /// Static tunnels (`--tunnel` on the command line), numbered by the switch up to `LAST_PORT`.
    pub const FIRST_STATIC_TUNNEL: u32 = LAST_CONTROLLER_TUNNEL + 1;
    pub const LAST_PORT: u32 = 0xfeff;
}

pub const TCCS_EXPERIMENTER: u32 = 0x00C1_0DAC;
/// Version written by this implementation.
pub const TCCS_VERSION: u8 = 1;

// exp_type values.
pub const TCCS_REGISTER: u32 = 1;
pub const TCCS_TUNNEL_ADD: u32 = 2;
pub const TCCS_TUNNEL_DEL: u32 = 3;
pub const TCCS_TUNNEL_IDLE: u32 = 4;
pub const TCCS_TUNNEL_REPORT: u32 = 5;
pub const TCCS_PORT_VNET: u32 = 6;
pub const TCCS_MIGRATION_NOTIFY: u32 = 7;
pub const TCCS_PORT_BINDING: u32 = 8;

// MigrationNotify phases.
pub const MIGRATION_STARTED: u8 = 1;
pub const MIGRATION_STOPPED: u8 = 2;
pub const MIGRATION_COMPLETED: u8 = 3;
pub const MIGRATION_FAILED: u8 = 4;

/// TunnelReport flag: the tunnel is static.
const FLAG_STATIC: u8 = 1;
/// PortBinding flag: the binding holds (clear: released).
const FLAG_BOUND: u8 = 1;

/// Why TCCS data could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum TccsError {
    #[error("TCCS message truncated")]
    Truncated,
    #[error("unknown TCCS message type {0}")]
    UnknownType(u32),
    #[error("bad TCCS record version {0}")]
    BadVersion(u8),
}

/// One TCCS message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TccsMsg {
    Register {
        dpid: u64,
        underlay_ip: Ipv4Addr,
        underlay_mac: [u8; 6],
    },
    TunnelAdd {
        remote_dpid: u64,
        remote_ip: Ipv4Addr,
        key: u32,
        port_no: u32,
        idle_timeout_s: u32,
    },
    TunnelDel {
        remote_ip: Ipv4Addr,
        key: u32,
        port_no: u32,
    },
    TunnelIdle {
        remote_ip: Ipv4Addr,
        key: u32,
        port_no: u32,
        idle_ms: u64,
    },
    TunnelReport {
        remote_dpid: u64,
        remote_ip: Ipv4Addr,
        key: u32,
        port_no: u32,
        idle_timeout_s: u32,
        is_static: bool,
    },
    PortVnet {
        port_no: u32,
        vnet: u32,
    },
    MigrationNotify {
        vnet: u32,
        mac: [u8; 6],
        dst_dpid: u64,
        /// One of MIGRATION_*.
        phase: u8,
        /// The VM's port on the destination switch; 0 when not known.
        dst_port: u32,
    },
    PortBinding {
        port_no: u32,
        vnet: u32,
        mac: [u8; 6],
        /// False: the binding is released.
        bound: bool,
    },
}

impl TccsMsg {
    /// The exp_type selecting this message.
    pub fn exp_type(&self) -> u32 {
        match self {
            TccsMsg::Register { .. } => TCCS_REGISTER,
            TccsMsg::TunnelAdd { .. } => TCCS_TUNNEL_ADD,
            TccsMsg::TunnelDel { .. } => TCCS_TUNNEL_DEL,
            TccsMsg::TunnelIdle { .. } => TCCS_TUNNEL_IDLE,
            TccsMsg::TunnelReport { .. } => TCCS_TUNNEL_REPORT,
            TccsMsg::PortVnet { .. } => TCCS_PORT_VNET,
            TccsMsg::MigrationNotify { .. } => TCCS_MIGRATION_NOTIFY,
            TccsMsg::PortBinding { .. } => TCCS_PORT_BINDING,
        }
    }

    /// The experimenter data (the record described in the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        // Byte 1 is the only per-message header byte; the other two are always reserved.
        let byte1 = match self {
            TccsMsg::TunnelReport { is_static, .. } => u8::from(*is_static) * FLAG_STATIC,
            TccsMsg::MigrationNotify { phase, .. } => *phase,
            TccsMsg::PortBinding { bound, .. } => u8::from(*bound) * FLAG_BOUND,
            _ => 0,
        };
        out.extend_from_slice(&[TCCS_VERSION, byte1, 0, 0]);
        match self {
            TccsMsg::Register {
                dpid,
                underlay_ip,
                underlay_mac,
            } => {
                out.extend_from_slice(&underlay_ip.octets());
                out.extend_from_slice(&dpid.to_be_bytes());
                out.extend_from_slice(underlay_mac);
                out.extend_from_slice(&[0, 0]);
            }
            TccsMsg::TunnelAdd {
                remote_dpid,
                remote_ip,
                key,
                port_no,
                idle_timeout_s,
            }
            | TccsMsg::TunnelReport {
                remote_dpid,
                remote_ip,
                key,
                port_no,
                idle_timeout_s,
                ..
            } => {
                out.extend_from_slice(&remote_ip.octets());
                out.extend_from_slice(&remote_dpid.to_be_bytes());
                out.extend_from_slice(&key.to_be_bytes());
                out.extend_from_slice(&port_no.to_be_bytes());
                out.extend_from_slice(&idle_timeout_s.to_be_bytes());
                out.extend_from_slice(&[0; 4]);
            }
            TccsMsg::TunnelDel {
                remote_ip,
                key,
                port_no,
            } => {
                out.extend_from_slice(&remote_ip.octets());
                out.extend_from_slice(&key.to_be_bytes());
                out.extend_from_slice(&port_no.to_be_bytes());
            }
            TccsMsg::TunnelIdle {
                remote_ip,
                key,
                port_no,
                idle_ms,
            } => {
                out.extend_from_slice(&remote_ip.octets());
                out.extend_from_slice(&key.to_be_bytes());
                out.extend_from_slice(&port_no.to_be_bytes());
                out.extend_from_slice(&idle_ms.to_be_bytes());
            }
            TccsMsg::PortVnet { port_no, vnet } => {
                out.extend_from_slice(&port_no.to_be_bytes());
                out.extend_from_slice(&vnet.to_be_bytes());
                out.extend_from_slice(&[0; 4]);
            }
            TccsMsg::MigrationNotify {
                vnet,
                mac,
                dst_dpid,
                dst_port,
                ..
            } => {
                out.extend_from_slice(&vnet.to_be_bytes());
                out.extend_from_slice(&dst_dpid.to_be_bytes());
                out.extend_from_slice(mac);
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&dst_port.to_be_bytes());
                out.extend_from_slice(&[0; 4]);
            }
            TccsMsg::PortBinding { port_no, vnet, mac, .. } => {
                out.extend_from_slice(&port_no.to_be_bytes());
                out.extend_from_slice(&vnet.to_be_bytes());
                out.extend_from_slice(mac);
                out.extend_from_slice(&[0; 6]);
            }
        }
        out
    }

    /// Decodes the experimenter data of a TCCS message of type `exp_type`.
    pub fn decode(exp_type: u32, data: &[u8]) -> Result<TccsMsg, TccsError> {
        let expected = match exp_type {
            TCCS_REGISTER | TCCS_TUNNEL_IDLE | TCCS_MIGRATION_NOTIFY | TCCS_PORT_BINDING => 24,
            TCCS_TUNNEL_ADD | TCCS_TUNNEL_REPORT => 32,
            TCCS_TUNNEL_DEL | TCCS_PORT_VNET => 16,
            other => return Err(TccsError::UnknownType(other)),
        };
        // Check the whole layout up front so a short record is always "truncated", whatever
        // field it stops in.
        if data.len() < expected {
            return Err(TccsError::Truncated);
        }
        let mut c = Cursor(data);
        let [version, byte1, _, _] = c.take::<4>()?;
        if version == 0 {
            return Err(TccsError::BadVersion(version));
        }
        let msg = match exp_type {
            TCCS_REGISTER => {
                let underlay_ip = c.ip()?;
                let dpid = c.u64()?;
                TccsMsg::Register {
                    dpid,
                    underlay_ip,
                    underlay_mac: c.take()?,
                }
            }
            TCCS_TUNNEL_ADD | TCCS_TUNNEL_REPORT => {
                let remote_ip = c.ip()?;
                let remote_dpid = c.u64()?;
                let key = c.u32()?;
                let port_no = c.u32()?;
                let idle_timeout_s = c.u32()?;
                if exp_type == TCCS_TUNNEL_ADD {
                    TccsMsg::TunnelAdd {
                        remote_dpid,
                        remote_ip,
                        key,
                        port_no,
                        idle_timeout_s,
                    }
                } else {
                    TccsMsg::TunnelReport {
                        remote_dpid,
                        remote_ip,
                        key,
                        port_no,
                        idle_timeout_s,
                        is_static: byte1 & FLAG_STATIC != 0,
                    }
                }
            }
            TCCS_TUNNEL_DEL => TccsMsg::TunnelDel {
                remote_ip: c.ip()?,
                key: c.u32()?,
                port_no: c.u32()?,
            },
            TCCS_TUNNEL_IDLE => TccsMsg::TunnelIdle {
                remote_ip: c.ip()?,
                key: c.u32()?,
                port_no: c.u32()?,
                idle_ms: c.u64()?,
            },
            TCCS_PORT_VNET => TccsMsg::PortVnet {
                port_no: c.u32()?,
                vnet: c.u32()?,
            },
            TCCS_PORT_BINDING => TccsMsg::PortBinding {
                port_no: c.u32()?,
                vnet: c.u32()?,
                mac: c.take()?,
                bound: byte1 & FLAG_BOUND != 0,
            },
            _ => {
                let vnet = c.u32()?;
                let dst_dpid = c.u64()?;
                let mac = c.take()?;
                c.take::<2>()?;
                // Appended after the first layout: older 24-byte records leave it unknown.
                let dst_port = c.u32().unwrap_or(0);
                TccsMsg::MigrationNotify {
                    vnet,
                    mac,
                    dst_dpid,
                    phase: byte1,
                    dst_port,
                }
            }
        };
        Ok(msg)
    }

    /// The OpenFlow experimenter body carrying this message.
    pub fn to_body(&self) -> Body {
        Body::Experimenter {
            experimenter: TCCS_EXPERIMENTER,
            exp_type: self.exp_type(),
            data: self.encode(),
        }
    }

    /// A complete OpenFlow message carrying this TCCS message.
    pub fn to_message(&self, xid: u32) -> Message {
        Message::new(xid, self.to_body())
    }

    /// `None` unless `body` is an experimenter message with the TCCS experimenter id.
    pub fn from_body(body: &Body) -> Option<Result<TccsMsg, TccsError>> {
        match body {
            Body::Experimenter {
                experimenter: TCCS_EXPERIMENTER,
                exp_type,
                data,
            } => Some(TccsMsg::decode(*exp_type, data)),
            _ => None,
        }
    }
}

/// Minimal bounds-checked big-endian reader for the records above.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], TccsError> {
        if self.0.len() < N {
            return Err(TccsError::Truncated);
        }
        let (head, tail) = self.0.split_at(N);
        self.0 = tail;
        let mut out = [0u8; N];
        out.copy_from_slice(head);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, TccsError> {
        self.take().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, TccsError> {
        self.take().map(u64::from_be_bytes)
    }

    fn ip(&mut self) -> Result<Ipv4Addr, TccsError> {
        self.take::<4>().map(Ipv4Addr::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_layout() {
        let msg = TccsMsg::Register {
            dpid: 0x0000_0200_0000_0001,
            underlay_ip: Ipv4Addr::new(192, 168, 10, 1),
            underlay_mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
        };
        let bytes = [
            1, 0, 0, 0, 192, 168, 10, 1, 0, 0, 2, 0, 0, 0, 0, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56, 0, 0,
        ];
        assert_eq!(msg.encode(), bytes);
        assert_eq!(TccsMsg::decode(TCCS_REGISTER, &bytes), Ok(msg));
    }

    #[test]
    fn tunnel_layouts() {
        let add = TccsMsg::TunnelAdd {
            remote_dpid: 2,
            remote_ip: Ipv4Addr::new(10, 0, 0, 2),
            key: 5,
            port_no: 0x100,
            idle_timeout_s: 300,
        };
        let add_bytes = [
            1, 0, 0, 0, 10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 5, 0, 0, 1, 0, 0, 0, 1, 0x2c, 0, 0, 0, 0,
        ];
        assert_eq!(add.encode(), add_bytes);
        assert_eq!(TccsMsg::decode(TCCS_TUNNEL_ADD, &add_bytes), Ok(add));

        let report = TccsMsg::TunnelReport {
            remote_dpid: 2,
            remote_ip: Ipv4Addr::new(10, 0, 0, 2),
            key: 5,
            port_no: 0x100,
            idle_timeout_s: 0,
            is_static: true,
        };
        let bytes = report.encode();
        assert_eq!(bytes.len(), 32);
        assert_eq!(&bytes[..4], &[1, 1, 0, 0]);
        assert_eq!(TccsMsg::decode(TCCS_TUNNEL_REPORT, &bytes), Ok(report));

        let del = TccsMsg::TunnelDel {
            remote_ip: Ipv4Addr::new(10, 0, 0, 2),
            key: 5,
            port_no: 0x100,
        };
        assert_eq!(del.encode(), [1, 0, 0, 0, 10, 0, 0, 2, 0, 0, 0, 5, 0, 0, 1, 0]);

        let idle = TccsMsg::TunnelIdle {
            remote_ip: Ipv4Addr::new(10, 0, 0, 2),
            key: 5,
            port_no: 0x100,
            idle_ms: 60_000,
        };
        assert_eq!(
            idle.encode(),
            [1, 0, 0, 0, 10, 0, 0, 2, 0, 0, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xea, 0x60]
        );
    }

    #[test]
    fn port_vnet_and_migration_layouts() {
        let pv = TccsMsg::PortVnet { port_no: 3, vnet: 42 };
        assert_eq!(pv.encode(), [1, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 42, 0, 0, 0, 0]);
        let mig = TccsMsg::MigrationNotify {
            vnet: 42,
            mac: [2, 0, 0, 0, 0, 9],
            dst_dpid: 7,
            phase: MIGRATION_COMPLETED,
            dst_port: 5,
        };
        let bytes = mig.encode();
        assert_eq!(
            bytes,
            [1, 3, 0, 0, 0, 0, 0, 42, 0, 0, 0, 0, 0, 0, 0, 7, 2, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0]
        );
        // A record of the first, 24-byte layout still decodes, without a port.
        let old = TccsMsg::decode(TCCS_MIGRATION_NOTIFY, &bytes[..24]).unwrap();
        assert!(matches!(
            old,
            TccsMsg::MigrationNotify {
                dst_port: 0,
                dst_dpid: 7,
                ..
            }
        ));
    }

    #[test]
    fn port_binding_layout() {
        let bind = TccsMsg::PortBinding {
            port_no: 3,
            vnet: 42,
            mac: [2, 0, 0, 0, 0, 9],
            bound: true,
        };
        let bytes = bind.encode();
        assert_eq!(
            bytes,
            [1, 1, 0, 0, 0, 0, 0, 3, 0, 0, 0, 42, 2, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(TccsMsg::decode(TCCS_PORT_BINDING, &bytes), Ok(bind));
        let release = TccsMsg::PortBinding {
            port_no: 3,
            vnet: 42,
            mac: [2, 0, 0, 0, 0, 9],
            bound: false,
        };
        assert_eq!(release.encode()[1], 0);
        assert_eq!(TccsMsg::decode(TCCS_PORT_BINDING, &release.encode()), Ok(release));
        assert_eq!(
            TccsMsg::decode(TCCS_PORT_BINDING, &bytes[..23]),
            Err(TccsError::Truncated)
        );
    }

    #[test]
    fn errors() {
        let pv = TccsMsg::PortVnet { port_no: 3, vnet: 42 }.encode();
        assert_eq!(TccsMsg::decode(TCCS_PORT_VNET, &pv[..15]), Err(TccsError::Truncated));
        assert_eq!(TccsMsg::decode(TCCS_REGISTER, &[]), Err(TccsError::Truncated));
        assert_eq!(TccsMsg::decode(99, &pv), Err(TccsError::UnknownType(99)));
        let mut v0 = pv.clone();
        v0[0] = 0;
        assert_eq!(TccsMsg::decode(TCCS_PORT_VNET, &v0), Err(TccsError::BadVersion(0)));
    }

    #[test]
    fn forward_compatible_decode() {
        // A version-2 record with reserved bits set and an appended field still decodes.
        let mut future = vec![2, 0xfe, 0xff, 0xff, 0, 0, 0, 3, 0, 0, 0, 42, 0xff, 0xff, 0xff, 0xff];
        future.extend_from_slice(&[9; 8]);
        assert_eq!(
            TccsMsg::decode(TCCS_PORT_VNET, &future),
            Ok(TccsMsg::PortVnet { port_no: 3, vnet: 42 })
        );
        // Unknown flag bits of a report are ignored.
        let mut report = TccsMsg::TunnelReport {
            remote_dpid: 1,
            remote_ip: Ipv4Addr::LOCALHOST,
            key: 0,
            port_no: 1,
            idle_timeout_s: 0,
            is_static: false,
        }
        .encode();
        report[1] = 0x80;
        assert!(matches!(
            TccsMsg::decode(TCCS_TUNNEL_REPORT, &report),
            Ok(TccsMsg::TunnelReport { is_static: false, .. })
        ));
    }

    #[test]
    fn body_wrapping() {
        let msg = TccsMsg::PortVnet { port_no: 3, vnet: 42 };
        let body = msg.to_body();
        assert_eq!(TccsMsg::from_body(&body), Some(Ok(msg.clone())));
        assert_eq!(msg.to_message(9).xid, 9);
        let other = Body::Experimenter {
            experimenter: 0x2320,
            exp_type: TCCS_PORT_VNET,
            data: msg.encode(),
        };
        assert_eq!(TccsMsg::from_body(&other), None);
        assert_eq!(TccsMsg::from_body(&Body::BarrierRequest), None);
        let unknown = Body::Experimenter {
            experimenter: TCCS_EXPERIMENTER,
            exp_type: 1000,
            data: vec![],
        };
        assert_eq!(TccsMsg::from_body(&unknown), Some(Err(TccsError::UnknownType(1000))));
    }
}
