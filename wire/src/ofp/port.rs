//! Ports: reserved port numbers, `ofp_port` (spec 7.2.1), PORT_STATUS reasons and PORT_MOD.

use super::reader::Reader;
use super::writer::Writer;
use super::OfpError;

/// Highest number of a physical or logical port.
pub const OFPP_MAX: u32 = 0xffff_ff00;
/// Reserved port: the packet's ingress port.
pub const OFPP_IN_PORT: u32 = 0xffff_fff8;
/// Reserved port: submit to the first flow table (packet-out only).
pub const OFPP_TABLE: u32 = 0xffff_fff9;
pub const OFPP_NORMAL: u32 = 0xffff_fffa;
/// All ports except the ingress port and those that are down or blocked.
pub const OFPP_FLOOD: u32 = 0xffff_fffb;
/// All ports except the ingress port.
pub const OFPP_ALL: u32 = 0xffff_fffc;
pub const OFPP_CONTROLLER: u32 = 0xffff_fffd;
pub const OFPP_LOCAL: u32 = 0xffff_fffe;
/// Wildcard: "no restriction" in flow deletes and stats requests.
pub const OFPP_ANY: u32 = 0xffff_ffff;

/// Length of `ofp_port.name`, NUL terminator included.
pub const OFP_MAX_PORT_NAME_LEN: usize = 16;

// Port config bits (ofp_port_config).
pub const OFPPC_PORT_DOWN: u32 = 1 << 0;
pub const OFPPC_NO_RECV: u32 = 1 << 2;
pub const OFPPC_NO_FWD: u32 = 1 << 5;
pub const OFPPC_NO_PACKET_IN: u32 = 1 << 6;

// Port state bits (ofp_port_state).
pub const OFPPS_LINK_DOWN: u32 = 1 << 0;
pub const OFPPS_BLOCKED: u32 = 1 << 1;
pub const OFPPS_LIVE: u32 = 1 << 2;

// Port feature bits (ofp_port_features).
pub const OFPPF_10MB_HD: u32 = 1 << 0;
pub const OFPPF_10MB_FD: u32 = 1 << 1;
pub const OFPPF_100MB_HD: u32 = 1 << 2;
pub const OFPPF_100MB_FD: u32 = 1 << 3;
pub const OFPPF_1GB_HD: u32 = 1 << 4;
pub const OFPPF_1GB_FD: u32 = 1 << 5;
pub const OFPPF_10GB_FD: u32 = 1 << 6;
pub const OFPPF_40GB_FD: u32 = 1 << 7;
pub const OFPPF_100GB_FD: u32 = 1 << 8;
pub const OFPPF_1TB_FD: u32 = 1 << 9;
pub const OFPPF_OTHER: u32 = 1 << 10;
pub const OFPPF_COPPER: u32 = 1 << 11;
pub const OFPPF_FIBER: u32 = 1 << 12;
pub const OFPPF_AUTONEG: u32 = 1 << 13;
pub const OFPPF_PAUSE: u32 = 1 << 14;
pub const OFPPF_PAUSE_ASYM: u32 = 1 << 15;

// PORT_STATUS reasons (ofp_port_reason).
pub const OFPPR_ADD: u8 = 0;
pub const OFPPR_DELETE: u8 = 1;
pub const OFPPR_MODIFY: u8 = 2;

/// Size of `ofp_port`.
pub const PORT_DESC_LEN: usize = 64;

/// `ofp_port`. The name is kept as its 16 wire bytes so that re-encoding is exact.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PortDesc {
    pub port_no: u32,
    pub hw_addr: [u8; 6],
    /// NUL-padded; see [`PortDesc::name`] and [`PortDesc::with_name`].
    pub name: [u8; OFP_MAX_PORT_NAME_LEN],
    pub config: u32,
    pub state: u32,
    pub curr: u32,
    pub advertised: u32,
    pub supported: u32,
    pub peer: u32,
    /// kbps.
    pub curr_speed: u32,
    /// kbps.
    pub max_speed: u32,
}

impl PortDesc {
    /// The name up to its first NUL (lossy for non-UTF-8 bytes).
    pub fn name(&self) -> String {
        fixed_str(&self.name)
    }

    /// A port that is up (OFPPS_LIVE), with no configuration flags and no speeds.
    pub fn live(port_no: u32, hw_addr: [u8; 6], name: &str) -> Self {
        PortDesc {
            port_no,
            hw_addr,
            state: OFPPS_LIVE,
            ..Default::default()
        }
        .with_name(name)
    }

    /// Builder: sets the name, truncated to 15 bytes so a NUL terminator remains.
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = fixed_bytes(name);
        self
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<PortDesc, OfpError> {
        let port_no = r.u32()?;
        r.skip(4)?;
        let hw_addr = r.array()?;
        r.skip(2)?;
        Ok(PortDesc {
            port_no,
            hw_addr,
            name: r.array()?,
            config: r.u32()?,
            state: r.u32()?,
            curr: r.u32()?,
            advertised: r.u32()?,
            supported: r.u32()?,
            peer: r.u32()?,
            curr_speed: r.u32()?,
            max_speed: r.u32()?,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u32(self.port_no);
        w.zeros(4);
        w.bytes(&self.hw_addr);
        w.zeros(2);
        w.bytes(&self.name);
        for v in [
            self.config,
            self.state,
            self.curr,
            self.advertised,
            self.supported,
            self.peer,
            self.curr_speed,
            self.max_speed,
        ] {
            w.u32(v);
        }
    }
}

/// OFPT_PORT_MOD body.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PortMod {
    pub port_no: u32,
    pub hw_addr: [u8; 6],
    /// OFPPC_* bits to set ...
    pub config: u32,
    /// ... of which only these are changed.
    pub mask: u32,
    /// OFPPF_* bits to advertise; 0 leaves advertisement unchanged.
    pub advertise: u32,
}

impl PortMod {
    pub(crate) fn decode(r: &mut Reader) -> Result<PortMod, OfpError> {
        let port_no = r.u32()?;
        r.skip(4)?;
        let hw_addr = r.array()?;
        r.skip(2)?;
        let pm = PortMod {
            port_no,
            hw_addr,
            config: r.u32()?,
            mask: r.u32()?,
            advertise: r.u32()?,
        };
        r.skip(4)?;
        Ok(pm)
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u32(self.port_no);
        w.zeros(4);
        w.bytes(&self.hw_addr);
        w.zeros(2);
        w.u32(self.config);
        w.u32(self.mask);
        w.u32(self.advertise);
        w.zeros(4);
    }
}

/// Text of a NUL-padded fixed-size field, up to the first NUL.
pub fn fixed_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(bytes.get(..end).unwrap_or_default()).into_owned()
}

/// A NUL-padded fixed-size field holding `s`, truncated so that a terminating NUL remains.
pub fn fixed_bytes<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let n = s.len().min(N.saturating_sub(1));
    if let (Some(dst), Some(src)) = (out.get_mut(..n), s.as_bytes().get(..n)) {
        dst.copy_from_slice(src);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ofp::writer::to_vec;

    /// Port 1 ("cf4681a1") from the captured port-desc reply.
    const PORT1: [u8; 64] = [
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0xd6, 0xbe, 0x12, 0xfd, 0x2f, 0x92, 0x00, 0x00, 0x63, 0x66,
        0x34, 0x36, 0x38, 0x31, 0x61, 0x31, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x08, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x98, 0x96, 0x80, 0x00, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn port_desc_from_capture() {
        let p = PortDesc::decode(&mut Reader::new(&PORT1)).unwrap();
        assert_eq!(p.port_no, 1);
        assert_eq!(p.hw_addr, [0xd6, 0xbe, 0x12, 0xfd, 0x2f, 0x92]);
        assert_eq!(p.name(), "cf4681a1");
        assert_eq!(p.state, OFPPS_LIVE);
        assert_eq!(p.curr, OFPPF_10GB_FD | OFPPF_COPPER);
        assert_eq!(p.curr_speed, 10_000_000);
        assert_eq!(to_vec(|w| p.encode(w)), PORT1);
        let built = PortDesc {
            port_no: 1,
            hw_addr: [0xd6, 0xbe, 0x12, 0xfd, 0x2f, 0x92],
            state: OFPPS_LIVE,
            curr: OFPPF_10GB_FD | OFPPF_COPPER,
            curr_speed: 10_000_000,
            ..PortDesc::default()
        }
        .with_name("cf4681a1");
        assert_eq!(built, p);
    }

    #[test]
    fn truncated_port_desc() {
        assert_eq!(
            PortDesc::decode(&mut Reader::new(&PORT1[..63])),
            Err(OfpError::Truncated)
        );
    }

    #[test]
    fn names_are_truncated_to_keep_a_nul() {
        let p = PortDesc::default().with_name("a-very-long-port-name");
        assert_eq!(p.name(), "a-very-long-por");
        assert_eq!(p.name[15], 0);
        assert_eq!(fixed_str(b"abc"), "abc");
        assert_eq!(fixed_bytes::<4>("ab"), *b"ab\0\0");
        assert_eq!(fixed_bytes::<0>("ab"), [0u8; 0]);
    }

    #[test]
    fn port_mod_layout() {
        let pm = PortMod {
            port_no: 2,
            hw_addr: [2, 0, 0, 0, 0, 2],
            config: OFPPC_PORT_DOWN,
            mask: OFPPC_PORT_DOWN,
            advertise: 0,
        };
        let bytes = to_vec(|w| pm.encode(w));
        assert_eq!(
            bytes,
            [0, 0, 0, 2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(PortMod::decode(&mut Reader::new(&bytes)), Ok(pm));
    }
}
