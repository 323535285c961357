//! MAC addresses as text (`aa:bb:cc:dd:ee:ff`): the switch's management socket, the
//! controller's logs and etcd keys all print and read them the same way. [`Mac`] is the
//! controller's type for one; the wire formats themselves carry plain `[u8; 6]`.

use std::fmt;
use std::str::FromStr;

/// A MAC address. Displays as `aa:bb:cc:dd:ee:ff`; Debug shows its six bytes as the array
/// does, so what derives Debug around it prints as it did when MACs were arrays.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Group bit set: broadcast or multicast, never a station's source address.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }
}

impl From<[u8; 6]> for Mac {
    fn from(octets: [u8; 6]) -> Mac {
        Mac(octets)
    }
}

impl From<Mac> for [u8; 6] {
    fn from(m: Mac) -> [u8; 6] {
        m.0
    }
}

impl fmt::Display for Mac {
    /// `aa:bb:cc:dd:ee:ff`, lower case.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A text that is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadMac;

impl fmt::Display for BadMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a MAC address (aa:bb:cc:dd:ee:ff)")
    }
}

impl std::error::Error for BadMac {}

impl FromStr for Mac {
    type Err = BadMac;

    /// As [`parse`].
    fn from_str(s: &str) -> Result<Mac, BadMac> {
        parse(s).map(Mac).ok_or(BadMac)
    }
}

/// `aa:bb:cc:dd:ee:ff`, lower case.
pub fn fmt(m: &[u8; 6]) -> String {
    Mac(*m).to_string()
}

/// Six hex octets separated by colons (either case, one or two digits each).
pub fn parse(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for o in out.iter_mut() {
        *o = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn round_trip() {
        let m = [0x02, 0, 0xab, 0xcd, 0xef, 0x01];
        assert_eq!(fmt(&m), "02:00:ab:cd:ef:01");
        assert_eq!(parse(&fmt(&m)), Some(m));
        assert_eq!(parse("02:00:ab"), None);
        assert_eq!(parse("02:00:ab:cd:ef:01:02"), None);
        assert_eq!(parse("zz:00:ab:cd:ef:01"), None);
    }

    #[test]
    fn the_type_prints_and_reads_as_the_helpers_do() {
        let m = Mac([0x02, 0, 0xab, 0xcd, 0xef, 0x01]);
        assert_eq!(m.to_string(), "02:00:ab:cd:ef:01");
        assert_eq!("02:00:AB:cd:ef:1".parse(), Ok(m));
        assert_eq!("02:00:ab".parse::<Mac>(), Err(BadMac));
        assert_eq!(format!("{m:?}"), format!("{:?}", m.0));
        assert!(Mac([0xff; 6]).is_multicast() && Mac([0x01, 0, 0x5e, 0, 0, 1]).is_multicast());
        assert!(!m.is_multicast());
    }
}
