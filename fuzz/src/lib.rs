//! Helpers shared by the fuzz targets in `fuzz_targets/`. Nothing here touches the network or
//! the file system.

use cloudrack_wire::ofp;

/// Splits a byte stream into whole OpenFlow messages by the 8-byte header's length, as the
/// switch and the controller frame their TCP connections. Returns the messages and whether the
/// stream ended in a length below 8 (after which a real connection is closed).
pub fn split_messages(mut stream: &[u8]) -> (Vec<&[u8]>, bool) {
    let mut out = Vec::new();
    loop {
        match ofp::frame_len(stream) {
            Ok(Some(len)) if len <= stream.len() => {
                let (msg, rest) = stream.split_at(len);
                out.push(msg);
                stream = rest;
            }
            Ok(_) => return (out, false),
            Err(_) => return (out, true),
        }
    }
}

/// Takes control values off the front of a fuzz input; reads past the end give zeros, so every
/// input, even an empty one, is usable.
pub struct Control<'a> {
    data: &'a [u8],
}

impl<'a> Control<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Control { data }
    }

    pub fn u8(&mut self) -> u8 {
        let (b, rest) = self.data.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.data = rest;
        b
    }

    pub fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for b in &mut out {
            *b = self.u8();
        }
        out
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.bytes())
    }

    /// Everything not taken yet.
    pub fn rest(self) -> &'a [u8] {
        self.data
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn splits_on_header_lengths() {
        let mut s = vec![4, 0, 0, 8, 0, 0, 0, 1, 4, 2, 0, 9, 0, 0, 0, 2, 0xaa];
        let (msgs, bad) = split_messages(&s);
        assert_eq!((msgs.len(), bad), (2, false));
        s.extend_from_slice(&[4, 0, 0, 3, 0, 0, 0, 0]);
        assert!(split_messages(&s).1);
        let mut c = Control::new(&[1, 2, 3]);
        assert_eq!((c.u8(), c.u16(), c.u8()), (1, 0x0302, 0));
        assert!(c.rest().is_empty());
    }
}
