//! Bounds-checked big-endian reader. Decoders never index into slices themselves: every read goes
//! through here and fails with [`OfpError::Truncated`] instead of panicking.

use super::error::OfpError;

/// A cursor over a byte slice; reading shrinks the slice.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], OfpError> {
        if n > self.buf.len() {
            return Err(OfpError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], OfpError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, OfpError> {
        let [b] = self.array::<1>()?;
        Ok(b)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, OfpError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, OfpError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, OfpError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Skips padding. Its content is not checked here: callers keep typed values only when they
    /// re-encode exactly, which catches non-zero padding.
    pub(crate) fn skip(&mut self, n: usize) -> Result<(), OfpError> {
        self.bytes(n).map(|_| ())
    }

    /// Takes everything that is left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// Reads a big-endian u16 `offset` bytes ahead without consuming anything.
    pub(crate) fn peek_u16(&self, offset: usize) -> Result<u16, OfpError> {
        let mut ahead = *self;
        ahead.skip(offset)?;
        ahead.u16()
    }

    /// Splits off one TLV whose u16 length field (at `len_offset`) counts the whole TLV.
    /// Lengths below `min`, not a multiple of `align`, or beyond the buffer are rejected with
    /// `err`; since `min` is positive, a zero length can never stall a decode loop.
    pub(crate) fn tlv(
        &mut self,
        len_offset: usize,
        min: usize,
        align: usize,
        err: OfpError,
    ) -> Result<&'a [u8], OfpError> {
        debug_assert!(min >= len_offset + 2 && align > 0);
        let len = match self.peek_u16(len_offset) {
            Ok(len) => usize::from(len),
            Err(_) => return Err(err),
        };
        if len < min || len % align != 0 || len > self.remaining() {
            return Err(err);
        }
        self.bytes(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_big_endian_and_stops_at_end() {
        let mut r = Reader::new(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u16(), Ok(0x0203));
        assert_eq!(r.u32(), Ok(0x0405_0607));
        assert_eq!(r.u64(), Err(OfpError::Truncated));
        // A failed read consumes nothing.
        assert_eq!(r.remaining(), 7);
        assert_eq!(r.u32(), Ok(0x0809_0a0b));
        assert_eq!(r.array::<2>(), Ok([12, 13]));
        assert_eq!(r.u8(), Ok(14));
        assert!(r.is_empty());
        assert_eq!(r.u8(), Err(OfpError::Truncated));
        assert_eq!(r.skip(1), Err(OfpError::Truncated));
        assert_eq!(r.rest(), &[] as &[u8]);
    }

    #[test]
    fn peek_does_not_consume() {
        let r = Reader::new(&[0, 0, 0, 8]);
        assert_eq!(r.peek_u16(2), Ok(8));
        assert_eq!(r.peek_u16(3), Err(OfpError::Truncated));
        assert_eq!(r.remaining(), 4);
    }

    #[test]
    fn tlv_rejects_zero_short_unaligned_and_oversized_lengths() {
        let bad = OfpError::BadActionLength;
        for buf in [
            &[0u8, 0, 0, 0, 0, 0, 0, 0][..],  // zero length
            &[0, 0, 0, 4, 0, 0, 0, 0][..],    // below the minimum
            &[0, 0, 0, 9, 0, 0, 0, 0, 0][..], // not a multiple of 8
            &[0, 0, 0, 16, 0, 0, 0, 0][..],   // longer than the buffer
            &[0, 0, 0][..],                   // no room for the length field
        ] {
            assert_eq!(Reader::new(buf).tlv(2, 8, 8, bad.clone()), Err(bad.clone()));
        }
        let mut r = Reader::new(&[0, 7, 0, 8, 1, 2, 3, 4, 0xaa]);
        assert_eq!(r.tlv(2, 8, 8, bad), Ok(&[0, 7, 0, 8, 1, 2, 3, 4][..]));
        assert_eq!(r.rest(), &[0xaa]);
    }
}
