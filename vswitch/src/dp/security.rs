//! Port security: a port bound to VM MACs takes frames only from those sources. Checked
//! before the pipeline, whatever the flows say.

use super::fib::Mac;

pub fn is_multicast(mac: &Mac) -> bool {
    mac[0] & 1 != 0
}

pub fn macs(frame: &[u8]) -> Option<(Mac, Mac)> {
    let dst: Mac = frame.get(0..6)?.try_into().ok()?;
    let src: Mac = frame.get(6..12)?.try_into().ok()?;
    frame.get(13)?;
    Some((dst, src))
}

/// Port security: a port bound to VM MACs may only send from those (an empty list binds
/// nothing and allows any source).
pub fn source_allowed(bound: &[Mac], frame: &[u8]) -> bool {
    if bound.is_empty() {
        return true;
    }
    macs(frame).is_some_and(|(_, src)| bound.contains(&src))
}

#[cfg(test)]
mod test {
    use super::*;

    const A: Mac = [2, 0, 0, 0, 0, 0xa];
    const B: Mac = [2, 0, 0, 0, 0, 0xb];
    const BCAST: Mac = [0xff; 6];

    fn frame(dst: Mac, src: Mac) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[0; 46]);
        f
    }

    #[test]
    fn port_security_allows_only_bound_sources() {
        assert!(source_allowed(&[], &frame(B, A)));
        assert!(source_allowed(&[A], &frame(B, A)));
        assert!(source_allowed(&[B, A], &frame(BCAST, A)));
        assert!(!source_allowed(&[B], &frame(BCAST, A)));
        assert!(
            !source_allowed(&[A], &[0u8; 10]),
            "a runt from a bound port is not allowed"
        );
        assert!(is_multicast(&BCAST) && !is_multicast(&A));
        assert_eq!(macs(&frame(B, A)), Some((B, A)));
    }
}
