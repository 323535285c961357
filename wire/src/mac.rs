//! MAC addresses as text (`aa:bb:cc:dd:ee:ff`): the switch's management socket, the
//! controller's logs and etcd keys all print and read them the same way.

pub type Mac = [u8; 6];

/// `aa:bb:cc:dd:ee:ff`, lower case.
pub fn fmt(m: &Mac) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// Six hex octets separated by colons (either case, one or two digits each).
pub fn parse(s: &str) -> Option<Mac> {
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
}
