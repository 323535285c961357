//! Big-endian writer with back-patched length fields. A length that does not fit its field is
//! recorded as an overflow (reported by `Message::try_encode`) instead of being silently
//! truncated.

/// Appends to a caller-provided buffer.
pub(crate) struct Writer<'a> {
    out: &'a mut Vec<u8>,
    overflow: bool,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        Writer { out, overflow: false }
    }

    pub(crate) fn pos(&self) -> usize {
        self.out.len()
    }

    pub(crate) fn overflowed(&self) -> bool {
        self.overflow
    }

    pub(crate) fn mark_overflow(&mut self) {
        self.overflow = true;
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.out.push(v);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }

    pub(crate) fn zeros(&mut self, n: usize) {
        self.out.resize(self.out.len() + n, 0);
    }

    /// Writes a zero u16 to be filled in by [`Writer::patch_len`] once the size is known.
    pub(crate) fn len_placeholder(&mut self) -> usize {
        let at = self.pos();
        self.u16(0);
        at
    }

    /// Stores the number of bytes written since `start` into the u16 at `at`.
    pub(crate) fn patch_len(&mut self, at: usize, start: usize) {
        let len = self.pos().saturating_sub(start);
        let value = match u16::try_from(len) {
            Ok(v) => v,
            Err(_) => {
                self.overflow = true;
                u16::MAX
            }
        };
        if let Some(dst) = self.out.get_mut(at..at + 2) {
            dst.copy_from_slice(&value.to_be_bytes());
        }
    }

    /// Appends zeros until the object that began at `start` is a multiple of 8 bytes long.
    pub(crate) fn pad_to_8(&mut self, start: usize) {
        let len = self.pos().saturating_sub(start);
        self.zeros((8 - len % 8) % 8);
    }
}

/// Number of zero bytes that follow a `len`-byte object padded to 8 bytes.
pub(crate) fn pad8(len: usize) -> usize {
    (8 - len % 8) % 8
}

/// Runs `encode` into a scratch buffer and reports whether it reproduces `raw` exactly. Decoders
/// use this to decide between a typed value and the raw fallback, which is what makes every
/// decode/encode round trip byte-exact.
pub(crate) fn reencodes_to(raw: &[u8], encode: impl FnOnce(&mut Writer)) -> bool {
    let mut buf = Vec::with_capacity(raw.len());
    let overflowed = {
        let mut w = Writer::new(&mut buf);
        encode(&mut w);
        w.overflowed()
    };
    !overflowed && buf == raw
}

/// Encodes with `encode` into a new vector (for the public `to_bytes` helpers).
pub(crate) fn to_vec(encode: impl FnOnce(&mut Writer)) -> Vec<u8> {
    let mut buf = Vec::new();
    encode(&mut Writer::new(&mut buf));
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_lengths_and_pads() {
        let mut buf = vec![0xee];
        let mut w = Writer::new(&mut buf);
        let start = w.pos();
        w.u16(0x0102);
        let at = w.len_placeholder();
        w.u8(0xff);
        w.patch_len(at, start);
        w.pad_to_8(start);
        assert!(!w.overflowed());
        assert_eq!(buf, [0xee, 1, 2, 0, 5, 0xff, 0, 0, 0]);
        assert_eq!((pad8(0), pad8(1), pad8(8), pad8(13)), (0, 7, 0, 3));
    }

    #[test]
    fn oversized_length_is_flagged() {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        let at = w.len_placeholder();
        w.zeros(70_000);
        w.patch_len(at, 0);
        assert!(w.overflowed());
    }

    #[test]
    fn reencode_check() {
        assert!(reencodes_to(&[0, 1], |w| w.u16(1)));
        assert!(!reencodes_to(&[0, 1, 0], |w| w.u16(1)));
        assert_eq!(to_vec(|w| w.u32(7)), [0, 0, 0, 7]);
    }
}
