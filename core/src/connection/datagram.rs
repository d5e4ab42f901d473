//! WebTransport datagrams (RFC 9297 section 2.1): receiving and routing them to sessions, buffering those
//! for sessions not yet established, per-session receive queues, sending, and the largest size that fits.

use std::collections::VecDeque;

use bytes::{Buf, Bytes};
use smallvec::SmallVec;

use crate::error::{code, DatagramError, H3Error};
use crate::event::Event;
use crate::varint;

use super::types::SessionState;
use super::Connection;

impl Connection {
    // ---------------------------------------------------------------------------------------------
    // Datagrams (RFC 9297 section 2.1: quarter stream id, then payload)

    pub(super) fn recv_datagrams(&mut self, ev: &mut VecDeque<Event>) -> Result<(), H3Error> {
        let mut notify: SmallVec<[u64; 4]> = SmallVec::new();
        while let Ok(d) = self.quic.dgram_recv_buf() {
            let Some((q, n)) = varint::read(&d) else {
                return Err(H3Error::new(
                    code::H3_DATAGRAM_ERROR,
                    "datagram without quarter stream id",
                ));
            };
            if q > (1 << 60) - 1 {
                return Err(H3Error::new(
                    code::H3_DATAGRAM_ERROR,
                    "quarter stream id out of range",
                ));
            }
            let sid = q * 4;
            let mut payload = Bytes::from(d);
            payload.advance(n);
            match self.sessions.get(&sid).map(|s| s.state) {
                Some(SessionState::Established) => {
                    if self.queue_datagram(sid, payload) && !notify.contains(&sid) {
                        notify.push(sid);
                    }
                }
                Some(_) => self.buffer_datagram(sid, payload),
                None => {
                    let may_come =
                        self.server && (sid >= self.next_peer_bidi || self.peer_unseen(sid));
                    if may_come {
                        self.buffer_datagram(sid, payload);
                    } else {
                        self.dgram_dropped_unknown += 1;
                        log::trace!("datagram for unknown session {sid} dropped");
                    }
                }
            }
        }
        for sid in notify {
            ev.push_back(Event::DatagramReceived {
                session: self.sid(sid),
            });
        }
        Ok(())
    }

    fn buffer_datagram(&mut self, sid: u64, payload: Bytes) {
        if self.pending_datagrams.len() >= self.cfg.max_buffered_datagrams {
            self.dgram_dropped_buffer += 1;
            return;
        }
        self.pending_datagrams.push_back((sid, payload));
    }

    /// Queues a received datagram; returns true when the queue was empty before (the application needs a
    /// nudge). A full queue drops its oldest datagram: fresh data matters most for datagram traffic.
    pub(super) fn queue_datagram(&mut self, sid: u64, payload: Bytes) -> bool {
        let limit = self.cfg.datagram_recv_queue.max(1);
        let Some(s) = self.sessions.get_mut(&sid) else {
            return false;
        };
        let was_empty = s.datagrams.is_empty();
        if s.datagrams.len() >= limit {
            s.datagrams.pop_front();
            s.stats.datagrams_dropped_recv += 1;
        }
        s.datagrams.push_back(payload);
        s.stats.datagrams_received += 1;
        was_empty
    }

    // ---------------------------------------------------------------------------------------------
    // Commands: datagrams

    pub(crate) fn max_datagram_size(&self, session: u64) -> Option<usize> {
        if !self.peer.as_ref().is_some_and(|p| p.datagrams) {
            return None;
        }
        let max = self.quic.dgram_max_writable_len()?;
        max.checked_sub(varint::len(session / 4))
    }

    pub(crate) fn send_datagram(&mut self, session: u64, data: &[u8]) -> Result<(), DatagramError> {
        match self.sessions.get(&session).map(|s| s.state) {
            Some(SessionState::Established) => {}
            _ => return Err(DatagramError::SessionNotOpen),
        }
        if !self.peer.as_ref().is_some_and(|p| p.datagrams) {
            return Err(DatagramError::Unsupported);
        }
        let max = self.max_datagram_size(session).unwrap_or(0);
        if data.len() > max {
            return Err(DatagramError::TooLarge {
                size: data.len(),
                max,
            });
        }
        let mut buf = Vec::with_capacity(varint::len(session / 4) + data.len());
        varint::write(session / 4, &mut buf);
        buf.extend_from_slice(data);
        let s = self.sessions.get_mut(&session).expect("checked");
        match self.quic.dgram_send_buf(buf) {
            Ok(()) => {
                s.stats.datagrams_sent += 1;
                Ok(())
            }
            Err(quiche::Error::BufferTooShort) => Err(DatagramError::TooLarge {
                size: data.len(),
                max,
            }),
            Err(_) => {
                s.stats.datagrams_dropped_send += 1;
                Err(DatagramError::QueueFull)
            }
        }
    }

    pub(crate) fn datagram_queue_full(&self) -> bool {
        self.quic.is_dgram_send_queue_full()
    }

    pub(crate) fn recv_datagram(&mut self, session: u64) -> Option<Bytes> {
        self.sessions.get_mut(&session)?.datagrams.pop_front()
    }
}
