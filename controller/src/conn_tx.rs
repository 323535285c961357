//! The app's handle on one switch connection: [`ConnTx::send`] encodes a message on the
//! caller's (the app's) thread, appends the bytes to the connection's outbox and wakes the I/O
//! thread that owns the socket, at most once until that thread has looked at its outboxes.
//!
//! Thread-safety: the outbox is a mutex the app holds while encoding and the I/O thread holds
//! only to swap the bytes out. Wake-ups go through the I/O thread's [`Mailbox`]: a list of
//! connections with new bytes, and a `mio::Waker` rung when that list goes from empty to not.

use crate::ids::ConnId;
use crate::io_counters::IoCounters;
use cloudrack_wire::ofp::{Message, OfpError};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

/// Bytes queued towards one switch (in the outbox and not yet written to its socket) beyond
/// which messages are refused: a switch that stops reading cannot grow the controller forever.
pub const MAX_QUEUED_BYTES: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the message cannot be encoded: {0}")]
    Encode(#[from] OfpError),
    #[error("the switch is not reading ({0} bytes queued)")]
    Full(usize),
    #[error("the connection is closed")]
    Closed,
}

/// A cloneable handle that queues messages towards one switch.
#[derive(Clone)]
pub struct ConnTx {
    out: Arc<Outbox>,
}

impl std::fmt::Debug for ConnTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnTx").field("conn", &self.out.id).finish()
    }
}

/// What one connection's handles and its I/O thread share.
pub(crate) struct Outbox {
    pub(crate) id: ConnId,
    /// The connection's slot in its I/O thread (its mio token).
    slot: usize,
    queue: Mutex<Queue>,
    /// Bytes the I/O thread took but has not written to the socket yet (for the bound).
    pub(crate) unsent: AtomicUsize,
    /// None for a handle that only collects ([`ConnTx::capture`]).
    mailbox: Option<Arc<Mailbox>>,
}

#[derive(Default)]
pub(crate) struct Queue {
    pub(crate) bytes: Vec<u8>,
    /// Already on the mailbox's list: no need to tell the I/O thread again.
    pub(crate) scheduled: bool,
    pub(crate) closed: bool,
}

/// One I/O thread's doorbell.
pub(crate) struct Mailbox {
    /// (slot, connection) of every outbox with new bytes since the thread last looked.
    pub(crate) ready: Mutex<Vec<(usize, ConnId)>>,
    waker: mio::Waker,
    counters: Arc<IoCounters>,
}

impl Mailbox {
    pub(crate) fn new(waker: mio::Waker, counters: Arc<IoCounters>) -> Mailbox {
        Mailbox {
            ready: Mutex::new(Vec::new()),
            waker,
            counters,
        }
    }

    fn schedule(&self, slot: usize, id: ConnId) {
        let was_empty = {
            let mut ready = lock(&self.ready);
            ready.push((slot, id));
            ready.len() == 1
        };
        // A non-empty list means a wake is already on its way and the thread will see ours too.
        if was_empty {
            if let Err(e) = self.waker.wake() {
                tracing::error!(error = %e, "cannot wake the I/O thread");
            }
        }
    }
}

/// A poisoned lock holds nothing a later user cannot continue with (bytes and flags).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Outbox {
    pub(crate) fn new(id: ConnId, slot: usize, mailbox: Arc<Mailbox>) -> Arc<Outbox> {
        Arc::new(Outbox {
            id,
            slot,
            queue: Mutex::new(Queue::default()),
            unsent: AtomicUsize::new(0),
            mailbox: Some(mailbox),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Queue> {
        lock(&self.queue)
    }
}

impl ConnTx {
    pub(crate) fn new(out: Arc<Outbox>) -> ConnTx {
        ConnTx { out }
    }

    /// A handle attached to no socket: what is sent stays queued until
    /// [`ConnTx::take_messages`] (tests, fuzzing).
    pub fn capture(id: ConnId) -> ConnTx {
        ConnTx {
            out: Arc::new(Outbox {
                id,
                slot: 0,
                queue: Mutex::new(Queue::default()),
                unsent: AtomicUsize::new(0),
                mailbox: None,
            }),
        }
    }

    /// Encode `msg` and queue it for the switch. Never blocks on the socket.
    pub fn send(&self, msg: &Message) -> Result<(), SendError> {
        let mut q = self.out.lock();
        if q.closed {
            return Err(SendError::Closed);
        }
        let queued = q.bytes.len() + self.out.unsent.load(Relaxed);
        if queued >= MAX_QUEUED_BYTES {
            drop(q);
            if let Some(m) = &self.out.mailbox {
                m.counters.send_dropped.fetch_add(1, Relaxed);
            }
            return Err(SendError::Full(queued));
        }
        msg.try_encode_into(&mut q.bytes)?;
        let wake = !q.scheduled;
        q.scheduled = true;
        drop(q);
        if wake {
            if let Some(m) = &self.out.mailbox {
                m.schedule(self.out.slot, self.out.id);
            }
        }
        Ok(())
    }

    /// The messages queued so far, decoded back (for a [`ConnTx::capture`] handle; on a live
    /// connection the I/O thread takes them first).
    pub fn take_messages(&self) -> Vec<Message> {
        let bytes = {
            let mut q = self.out.lock();
            q.scheduled = false;
            std::mem::take(&mut q.bytes)
        };
        let mut out = Vec::new();
        let mut rest = &bytes[..];
        while let Ok(Some((incoming, len))) = cloudrack_wire::ofp_stream::decode_next(rest) {
            match incoming {
                cloudrack_wire::ofp_stream::Incoming::Message(m) => out.push(m),
                cloudrack_wire::ofp_stream::Incoming::Malformed { error, .. } => {
                    panic!("the controller queued a message that does not decode: {error}")
                }
            }
            rest = &rest[len..];
        }
        out
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use cloudrack_wire::ofp::{Body, PacketOut};

    #[test]
    fn a_captured_handle_gives_back_what_was_sent() {
        let tx = ConnTx::capture(3);
        tx.send(&Message::new(1, Body::BarrierRequest)).unwrap();
        tx.send(&Message::new(2, Body::EchoRequest(vec![1, 2]))).unwrap();
        let got = tx.take_messages();
        assert_eq!(
            got,
            vec![
                Message::new(1, Body::BarrierRequest),
                Message::new(2, Body::EchoRequest(vec![1, 2]))
            ]
        );
        assert!(tx.take_messages().is_empty());
    }

    #[test]
    fn an_unencodable_message_is_refused_and_queues_nothing() {
        let tx = ConnTx::capture(1);
        let po = PacketOut {
            buffer_id: cloudrack_wire::ofp::OFP_NO_BUFFER,
            in_port: 1,
            actions: vec![],
            data: vec![0; 70_000],
        };
        assert!(matches!(
            tx.send(&Message::new(1, Body::PacketOut(po))),
            Err(SendError::Encode(_))
        ));
        assert!(tx.take_messages().is_empty());
    }

    #[test]
    fn a_switch_that_does_not_read_is_cut_off_at_the_bound() {
        let tx = ConnTx::capture(1);
        let big = Message::new(1, Body::EchoRequest(vec![0; 60_000]));
        let mut sent = 0;
        while tx.send(&big).is_ok() {
            sent += 1;
        }
        assert_eq!(sent, MAX_QUEUED_BYTES.div_ceil(60_008));
        assert!(matches!(tx.send(&big), Err(SendError::Full(_))));
        tx.take_messages();
        assert!(tx.send(&big).is_ok(), "room again once taken");
        tx.out.lock().closed = true;
        assert!(matches!(tx.send(&big), Err(SendError::Closed)));
    }
}
