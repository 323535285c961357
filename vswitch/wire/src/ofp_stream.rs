//! Framing OpenFlow messages on a byte stream: collect bytes until a whole message (by the
//! header's length) is there. Generic over `Read`, so it owns no socket; both the switch and
//! the controller read their TCP connections through it.

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

pub struct MsgReader<R: Read> {
    inner: R,
    buf: Vec<u8>,
    filled: usize,
}

impl<R: Read> MsgReader<R> {
    pub fn new(inner: R) -> Self {
        MsgReader {
            inner,
            buf: vec![0; MAX_MESSAGE * 2],
            filled: 0,
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The next message. Errors: the stream's (timeouts included, after which calling again
    /// resumes where it stopped), `UnexpectedEof` on close, and `InvalidData` when the length
    /// field is below 8, after which the stream cannot be re-synchronised.
    pub fn next_message(&mut self) -> io::Result<Incoming> {
        loop {
            match frame_len(&self.buf[..self.filled]) {
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
                Ok(Some(len)) if len <= self.filled => {
                    let raw = &self.buf[..len];
                    let out = match Message::decode(raw) {
                        Ok(m) => Incoming::Message(m),
                        Err(error) => Incoming::Malformed {
                            raw: raw.to_vec(),
                            error,
                        },
                    };
                    self.buf.copy_within(len..self.filled, 0);
                    self.filled -= len;
                    return Ok(out);
                }
                _ => {}
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
    fn bad_length_is_an_error() {
        let mut r = MsgReader::new(io::Cursor::new(vec![4, 0, 0, 4, 0, 0, 0, 0]));
        assert_eq!(r.next_message().unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
