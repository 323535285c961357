//! Framing OpenFlow messages on a byte stream: collect bytes until a whole message (by the
//! header's length) is there. [`MsgReader`] is generic over `Read`, so it owns no socket (the
//! switch reads its connection through it); [`decode_next`] frames a byte buffer, for an event
//! loop that reads whatever the socket has (the controller).

use crate::ofp::{frame_len, Message, OfpError};
use std::io::{self, Read};

/// Largest OpenFlow message (the length field is 16 bits).
pub const MAX_MESSAGE: usize = 65_535;

/// What came off the stream.
#[derive(Debug)]
pub enum Incoming {
    Message(Message),
    /// A whole message that did not decode; its raw bytes (for an OFPET_BAD_REQUEST reply).
    Malformed {
        raw: Vec<u8>,
        error: OfpError,
    },
}

/// The first whole message in `buf` and its length, or `Ok(None)` while it is incomplete. A
/// length field below 8 is an error after which the stream cannot be re-synchronised.
pub fn decode_next(buf: &[u8]) -> Result<Option<(Incoming, usize)>, OfpError> {
    let Some(len) = frame_len(buf)? else {
        return Ok(None);
    };
    let Some(raw) = buf.get(..len) else {
        return Ok(None);
    };
    let incoming = match Message::decode(raw) {
        Ok(m) => Incoming::Message(m),
        Err(error) => Incoming::Malformed {
            raw: raw.to_vec(),
            error,
        },
    };
    Ok(Some((incoming, len)))
}

pub struct MsgReader<R: Read> {
    inner: R,
    buf: Vec<u8>,
    /// Unread bytes are `buf[start..filled]`: taking a message moves `start`, and the bytes
    /// are moved to the front only when the room behind them runs out (not once per message).
    start: usize,
    filled: usize,
}

impl<R: Read> MsgReader<R> {
    pub fn new(inner: R) -> Self {
        MsgReader {
            inner,
            buf: vec![0; MAX_MESSAGE * 2],
            start: 0,
            filled: 0,
        }
    }

    /// Whether a whole message (or a malformed one) is already buffered, so that the next
    /// call returns without reading: a reader can finish work it batches before it would block.
    pub fn has_buffered_message(&self) -> bool {
        !matches!(decode_next(&self.buf[self.start..self.filled]), Ok(None))
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The next message. Errors: the stream's (timeouts included, after which calling again
    /// resumes where it stopped), `UnexpectedEof` on close, and `InvalidData` when the length
    /// field is below 8, after which the stream cannot be re-synchronised.
    pub fn next_message(&mut self) -> io::Result<Incoming> {
        loop {
            match decode_next(&self.buf[self.start..self.filled]) {
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
                Ok(Some((out, len))) => {
                    self.start += len;
                    if self.start == self.filled {
                        (self.start, self.filled) = (0, 0);
                    }
                    return Ok(out);
                }
                Ok(None) => {}
            }
            // A partial message at the back: move it to the front to make room.
            if self.start > 0 && self.filled + MAX_MESSAGE > self.buf.len() {
                self.buf.copy_within(self.start..self.filled, 0);
                self.filled -= self.start;
                self.start = 0;
            }
            let n = self.inner.read(&mut self.buf[self.filled..])?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
            }
            self.filled += n;
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::ofp::Body;

    #[test]
    fn splits_and_joins_messages() {
        let mut bytes = Message::new(1, Body::EchoRequest(vec![1, 2, 3])).encode();
        bytes.extend(Message::new(2, Body::BarrierRequest).encode());
        // Garbage of a valid length: a message of an unknown version.
        bytes.extend([0x09, 0x63, 0x00, 0x08, 0, 0, 0, 3]);
        let mut r = MsgReader::new(io::Cursor::new(bytes));
        match r.next_message().unwrap() {
            Incoming::Message(m) => assert_eq!(m.body, Body::EchoRequest(vec![1, 2, 3])),
            other => panic!("{other:?}"),
        }
        match r.next_message().unwrap() {
            Incoming::Message(m) => assert_eq!((m.xid, m.body), (2, Body::BarrierRequest)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(r.next_message().unwrap(), Incoming::Malformed { .. }));
        assert_eq!(r.next_message().unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn decodes_from_a_buffer_one_message_at_a_time() {
        let first = Message::new(7, Body::EchoRequest(vec![9; 300])).encode();
        let mut bytes = first.clone();
        bytes.extend(Message::new(8, Body::BarrierRequest).encode());
        // Every prefix shorter than the first message is incomplete, not an error.
        for cut in 0..first.len() {
            assert!(decode_next(&bytes[..cut]).unwrap().is_none(), "prefix of {cut} bytes");
        }
        match decode_next(&bytes).unwrap() {
            Some((Incoming::Message(m), len)) => {
                assert_eq!((m.xid, len), (7, first.len()));
            }
            other => panic!("{other:?}"),
        }
        match decode_next(&bytes[first.len()..]).unwrap() {
            Some((Incoming::Message(m), 8)) => assert_eq!(m.body, Body::BarrierRequest),
            other => panic!("{other:?}"),
        }
        // A whole message that does not decode is handed back raw, with its length.
        let bad = [0x09, 0x63, 0x00, 0x08, 0, 0, 0, 3];
        match decode_next(&bad).unwrap() {
            Some((Incoming::Malformed { raw, .. }, 8)) => assert_eq!(raw, bad),
            other => panic!("{other:?}"),
        }
        assert_eq!(decode_next(&[4, 0, 0, 4, 0, 0, 0, 0]).unwrap_err(), OfpError::BadLength);
    }

    #[test]
    fn bad_length_is_an_error() {
        let mut r = MsgReader::new(io::Cursor::new(vec![4, 0, 0, 4, 0, 0, 0, 0]));
        assert_eq!(r.next_message().unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
