//! WebTransport data streams: binding a peer stream to its session by its header, buffering it until the
//! session exists, reading, writing, finishing, resetting, stopping and prioritising, and the session-level
//! flow credit they use (draft-ietf-webtrans-http3 sections 4 and 5.6).

use std::collections::VecDeque;
use std::time::Instant;

use smallvec::SmallVec;

use crate::capsule::Capsule;
use crate::error::{code, H3Error, SessionError, StreamError};
use crate::event::{Event, StreamId};
use crate::frame;
use crate::varint;

use super::types::{DataStream, RecvSide, SendSide, SessionState, Stream};
use super::{h3_to_app, is_bidi, Connection};
use crate::stream_header::stream_type;

impl Connection {
    // ---------------------------------------------------------------------------------------------
    // Peer streams: binding to sessions, buffering until the session exists

    /// Binds a new peer WebTransport stream to its session, buffers it until the session is established, or
    /// rejects it (draft-ietf-webtrans-http3 section 4.6).
    pub(super) fn attach_peer_stream(
        &mut self,
        id: u64,
        session: u64,
        fin: bool,
        now: Instant,
        ev: &mut VecDeque<Event>,
    ) -> Result<(), H3Error> {
        // Session ids are client-initiated bidirectional stream ids (section 4.1).
        if session & 0x3 != 0 {
            return Err(H3Error::new(
                code::H3_ID_ERROR,
                format!("session id {session} is not a request stream"),
            ));
        }
        let bidi = is_bidi(id);
        let ds = DataStream {
            session,
            recv: RecvSide::Open,
            send: if bidi { SendSide::Open } else { SendSide::None },
            header: SmallVec::new(),
            fin_pending: false,
            fin_buffered: fin,
            buffered_until: None,
            want_writable: false,
            writable_armed: false,
            readable_reported: false,
            peer_initiated: true,
        };
        match self.sessions.get(&session).map(|s| s.state) {
            Some(SessionState::Established) => {
                if let Err(e) = self.count_peer_stream(session, bidi) {
                    self.reject_stream(id, code::WT_FLOW_CONTROL_ERROR);
                    self.session_violation(session, e, ev);
                    return Ok(());
                }
                self.streams.insert(id, Stream::Data(ds));
                ev.push_back(Event::StreamOpened {
                    stream: self.stid(id),
                    session: self.sid(session),
                });
                if fin || self.quic.stream_readable(id) {
                    ev.push_back(Event::StreamReadable {
                        stream: self.stid(id),
                    });
                }
                Ok(())
            }
            Some(_) => self.buffer_stream(id, ds, now),
            None => {
                let may_come = if self.server {
                    session >= self.next_peer_bidi || self.peer_unseen(session)
                } else if session < self.next_local_bidi {
                    false
                } else {
                    return Err(H3Error::new(
                        code::H3_ID_ERROR,
                        format!("stream for session {session} we never opened"),
                    ));
                };
                if may_come {
                    self.buffer_stream(id, ds, now)
                } else {
                    self.reject_stream(id, code::WT_SESSION_GONE);
                    Ok(())
                }
            }
        }
    }

    fn buffer_stream(&mut self, id: u64, mut ds: DataStream, now: Instant) -> Result<(), H3Error> {
        if self.buffered_streams >= self.cfg.max_buffered_streams {
            log::debug!(
                "stream {id}: rejecting, {} streams already wait for sessions",
                self.buffered_streams
            );
            self.streams_rejected += 1;
            self.reject_stream(id, code::WT_BUFFERED_STREAM_REJECTED);
            return Ok(());
        }
        let until = now + self.cfg.buffered_stream_timeout;
        ds.buffered_until = Some(until);
        self.buffered_streams += 1;
        self.deadline = Some(self.deadline.map_or(until, |d| d.min(until)));
        self.streams.insert(id, Stream::Data(ds));
        Ok(())
    }

    /// Aborts both directions of a peer stream with an HTTP/3 code.
    pub(super) fn reject_stream(&mut self, id: u64, c: u64) {
        let discard = self.stop_reading(id, c);
        if is_bidi(id) {
            let _ = self.quic.stream_shutdown(id, quiche::Shutdown::Write, c);
        }
        if let Some(Stream::Data(ds)) = self.streams.remove(&id) {
            if ds.buffered_until.is_some() {
                self.buffered_streams -= 1;
            }
        }
        if discard {
            self.streams.insert(id, Stream::Discard);
        }
    }

    /// Recomputes the connection's deadline from the streams that still wait for something (buffered
    /// streams without their session, requests whose HEADERS are incomplete), so a request that completed
    /// leaves no timer behind.
    pub(super) fn recompute_deadline(&mut self) {
        self.deadline = self
            .streams
            .values()
            .filter_map(|st| match st {
                Stream::Data(DataStream {
                    buffered_until: Some(u),
                    ..
                }) => Some(*u),
                Stream::Request(r) if !r.headers_done => r.headers_deadline,
                _ => None,
            })
            .min();
    }

    /// Rejects buffered streams whose session did not arrive in time.
    pub(super) fn expire_buffered(&mut self, now: Instant) {
        let Some(d) = self.deadline else { return };
        if d > now {
            return;
        }
        let mut expired = Vec::new();
        let mut incomplete = Vec::new();
        let mut next: Option<Instant> = None;
        for (id, st) in &self.streams {
            let (until, list) = match st {
                Stream::Data(DataStream {
                    buffered_until: Some(u),
                    ..
                }) => (*u, &mut expired),
                Stream::Request(r) => match r.headers_deadline {
                    Some(u) if !r.headers_done => (u, &mut incomplete),
                    _ => continue,
                },
                _ => continue,
            };
            if until <= now {
                list.push(*id);
            } else {
                next = Some(next.map_or(until, |n| n.min(until)));
            }
        }
        for id in expired {
            log::debug!("stream {id}: its session never arrived; rejecting");
            self.streams_rejected += 1;
            self.reject_stream(id, code::WT_BUFFERED_STREAM_REJECTED);
        }
        for id in incomplete {
            // A request whose HEADERS never completed (RFC 9114 section 4.1.2: H3_REQUEST_INCOMPLETE); no
            // session exists for it yet.
            log::debug!("stream {id}: request headers incomplete in time; aborting");
            self.requests_timed_out += 1;
            let c = code::H3_REQUEST_INCOMPLETE;
            let _ = self.quic.stream_shutdown(id, quiche::Shutdown::Read, c);
            let _ = self.quic.stream_shutdown(id, quiche::Shutdown::Write, c);
            self.streams.remove(&id);
        }
        self.deadline = next;
    }

    // ---------------------------------------------------------------------------------------------
    // Readiness and flow credit

    /// Counts a peer-opened stream against the limits we advertised.
    pub(super) fn count_peer_stream(&mut self, session: u64, bidi: bool) -> Result<(), H3Error> {
        let Some(s) = self.sessions.get_mut(&session) else {
            return Ok(());
        };
        if bidi {
            s.stats.peer_bidi_streams += 1;
        } else {
            s.stats.peer_uni_streams += 1;
        }
        let Some(rc) = s.recv_credit.as_mut() else {
            return Ok(());
        };
        let (opened, max) = if bidi {
            rc.opened_bidi += 1;
            (rc.opened_bidi, rc.max_bidi)
        } else {
            rc.opened_uni += 1;
            (rc.opened_uni, rc.max_uni)
        };
        if opened > max {
            return Err(H3Error::new(
                code::WT_FLOW_CONTROL_ERROR,
                format!("peer opened {opened} streams, limit {max}"),
            ));
        }
        Ok(())
    }

    pub(super) fn data_readable(&mut self, id: u64, ev: &mut VecDeque<Event>) {
        let Some(Stream::Data(d)) = self.streams.get_mut(&id) else {
            return;
        };
        if d.buffered_until.is_some() {
            // Left in quiche's buffer (bounded by QUIC flow control) until the session is established.
            return;
        }
        if !matches!(d.recv, RecvSide::Open) {
            // Finished, reset or stopped: quiche drops what still arrives. (Discarding here would touch a
            // stream whose sending side is still live.)
            return;
        }
        if d.readable_reported {
            // The application was told and will read (a reset arriving meanwhile is what that read
            // returns).
            return;
        }
        // Probe for a reset without consuming data.
        match self.quic.stream_recv(id, &mut []) {
            Err(quiche::Error::StreamReset(c)) => {
                d.recv = RecvSide::Reset(h3_to_app(c));
                ev.push_back(Event::StreamReset {
                    stream: StreamId {
                        conn: self.handle,
                        id,
                    },
                    code: h3_to_app(c),
                });
                self.maybe_forget(id);
            }
            Ok((_, fin)) => {
                if fin {
                    d.fin_buffered = true;
                }
                d.readable_reported = true;
                ev.push_back(Event::StreamReadable {
                    stream: StreamId {
                        conn: self.handle,
                        id,
                    },
                });
            }
            Err(_) => {}
        }
    }

    /// A data stream quiche reports writable: pushes out a pending stream header and FIN, reports a
    /// STOP_SENDING from the peer, and wakes the application if it waits to write.
    pub(super) fn data_writable(&mut self, id: u64, ev: &mut VecDeque<Event>) {
        let cap = self.quic.stream_capacity(id);
        if let Err(quiche::Error::StreamStopped(c)) = cap {
            self.stopped(id, c, ev);
            return;
        }
        let stid = self.stid(id);
        let Some(Stream::Data(d)) = self.streams.get_mut(&id) else {
            return;
        };
        if !d.header.is_empty() {
            if let Ok(n) = self.quic.stream_send(id, &d.header, false) {
                d.header.drain(..n);
            }
            if !d.header.is_empty() {
                let _ = self.quic.stream_writable(id, d.header.len());
                return;
            }
        }
        if d.fin_pending
            && matches!(d.send, SendSide::Open)
            && self.quic.stream_send(id, &[], true).is_ok()
        {
            d.fin_pending = false;
            d.send = SendSide::Finished;
        }
        d.writable_armed = false;
        if d.want_writable {
            d.want_writable = false;
            ev.push_back(Event::StreamWritable { stream: stid });
        }
        self.maybe_forget(id);
    }

    /// quiche lists a stream that receives STOP_SENDING in `stream_writable_next` only when it was not
    /// writable before; an open stream with send capacity is stopped silently. Its counter of received
    /// STOP_SENDING frames says when to look at the streams still sending.
    pub(super) fn find_stopped(&mut self, ev: &mut VecDeque<Event>) {
        let n = self.quic.stats().stopped_stream_count_remote;
        if n == self.stops_seen {
            return;
        }
        self.stops_seen = n;
        let sending: Vec<u64> = self
            .streams
            .iter()
            .filter_map(|(id, st)| match st {
                Stream::Data(d) if matches!(d.send, SendSide::Open | SendSide::Finished) => {
                    Some(*id)
                }
                _ => None,
            })
            .collect();
        for id in sending {
            // One probe only: quiche may collect a complete stream while answering it.
            if let Err(quiche::Error::StreamStopped(c)) = self.quic.stream_capacity(id) {
                self.stopped(id, c, ev);
            }
        }
    }

    /// The peer sent STOP_SENDING with HTTP/3 code `c` (quiche has reset our sending side).
    fn stopped(&mut self, id: u64, c: u64, ev: &mut VecDeque<Event>) {
        let stid = self.stid(id);
        let Some(Stream::Data(d)) = self.streams.get_mut(&id) else {
            return;
        };
        if matches!(d.send, SendSide::Open | SendSide::Finished) {
            let code = h3_to_app(c);
            let was_open = matches!(d.send, SendSide::Open);
            d.send = SendSide::Stopped(code);
            d.fin_pending = false;
            if was_open {
                ev.push_back(Event::StreamStopped { stream: stid, code });
            }
            self.maybe_forget(id);
        }
    }

    /// Forgets a data stream both of whose directions are over; returns stream credit to the peer.
    fn maybe_forget(&mut self, id: u64) {
        let Some(Stream::Data(d)) = self.streams.get(&id) else {
            return;
        };
        let recv_over = !matches!(d.recv, RecvSide::Open);
        let send_over = !matches!(d.send, SendSide::Open) && !d.fin_pending;
        if !(recv_over && send_over) {
            return;
        }
        let (session, peer) = (d.session, d.peer_initiated);
        self.streams.remove(&id);
        if peer {
            self.grant_stream_credit(session, is_bidi(id));
        }
    }

    /// Raises the peer's stream limit as its streams close, in batches of half the window.
    fn grant_stream_credit(&mut self, session: u64, bidi: bool) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let Some(rc) = s.recv_credit.as_mut() else {
            return;
        };
        let capsule = if bidi {
            rc.closed_bidi += 1;
            let target = rc.closed_bidi + rc.window_bidi;
            (target - rc.max_bidi >= rc.window_bidi.div_ceil(2)).then(|| {
                rc.max_bidi = target;
                Capsule::MaxStreamsBidi(target)
            })
        } else {
            rc.closed_uni += 1;
            let target = rc.closed_uni + rc.window_uni;
            (target - rc.max_uni >= rc.window_uni.div_ceil(2)).then(|| {
                rc.max_uni = target;
                Capsule::MaxStreamsUni(target)
            })
        };
        if let Some(c) = capsule {
            self.send_capsule(session, &c);
        }
    }

    fn grant_data_credit(&mut self, session: u64, n: u64) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let Some(rc) = s.recv_credit.as_mut() else {
            return;
        };
        rc.consumed += n;
        let target = rc.consumed.saturating_add(rc.window_data).min(varint::MAX);
        if target > rc.max_data && target - rc.max_data >= rc.window_data / 2 {
            rc.max_data = target;
            self.send_capsule(session, &Capsule::MaxData(target));
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Commands: streams

    /// Opens a WebTransport stream on an established session (section 4.2 / 4.3).
    pub(crate) fn open_stream(&mut self, session: u64, bidi: bool) -> Result<u64, SessionError> {
        let s = self
            .sessions
            .get_mut(&session)
            .ok_or(SessionError::Closed)?;
        if s.state != SessionState::Established {
            return Err(SessionError::InvalidState("session not established"));
        }
        let quic_left = if bidi {
            self.quic.peer_streams_left_bidi()
        } else {
            self.quic.peer_streams_left_uni()
        };
        if quic_left == 0 {
            if !self.quic_streams_blocked.contains(&(session, bidi)) {
                self.quic_streams_blocked.push((session, bidi));
            }
            return Err(SessionError::StreamLimit);
        }
        if let Some(cr) = s.send_credit.as_mut() {
            let (opened, max) = if bidi {
                (cr.opened_bidi, cr.max_bidi)
            } else {
                (cr.opened_uni, cr.max_uni)
            };
            if opened >= max {
                if !cr.streams_blocked {
                    cr.streams_blocked = true;
                    let c = if bidi {
                        Capsule::StreamsBlockedBidi(max)
                    } else {
                        Capsule::StreamsBlockedUni(max)
                    };
                    self.send_capsule(session, &c);
                }
                return Err(SessionError::StreamLimit);
            }
            if bidi {
                cr.opened_bidi += 1;
            } else {
                cr.opened_uni += 1;
            }
        }
        let s = self.sessions.get_mut(&session).expect("checked");
        let id = if bidi {
            s.stats.local_bidi_streams += 1;
            let id = self.next_local_bidi;
            self.next_local_bidi += 4;
            id
        } else {
            s.stats.local_uni_streams += 1;
            let id = self.next_local_uni;
            self.next_local_uni += 4;
            id
        };
        let mut header = SmallVec::new();
        let mut tmp = Vec::with_capacity(16);
        varint::write(
            if bidi {
                frame::WEBTRANSPORT_STREAM
            } else {
                stream_type::WEBTRANSPORT
            },
            &mut tmp,
        );
        varint::write(session, &mut tmp);
        // Creates the stream in quiche so the header can be written now.
        let _ = self.quic.stream_priority(id, 127, true);
        match self.quic.stream_send(id, &tmp, false) {
            Ok(n) => header.extend_from_slice(&tmp[n..]),
            Err(_) => header.extend_from_slice(&tmp),
        }
        if !header.is_empty() {
            let _ = self.quic.stream_writable(id, header.len());
        }
        self.streams.insert(
            id,
            Stream::Data(DataStream {
                session,
                recv: if bidi { RecvSide::Open } else { RecvSide::None },
                send: SendSide::Open,
                header,
                fin_pending: false,
                fin_buffered: false,
                buffered_until: None,
                want_writable: false,
                writable_armed: false,
                readable_reported: false,
                peer_initiated: false,
            }),
        );
        Ok(id)
    }

    pub(crate) fn stream_session(&self, id: u64) -> Option<u64> {
        match self.streams.get(&id) {
            Some(Stream::Data(d)) if d.buffered_until.is_none() => Some(d.session),
            _ => None,
        }
    }

    fn data_mut(&mut self, id: u64) -> Result<&mut DataStream, StreamError> {
        match self.streams.get_mut(&id) {
            Some(Stream::Data(d)) if d.buffered_until.is_none() => Ok(d),
            _ => Err(StreamError::Unknown),
        }
    }

    /// Reads into `buf`: `Some((n, fin))`, or `None` when nothing is available now.
    pub(crate) fn read(
        &mut self,
        id: u64,
        buf: &mut [u8],
        ev: &mut VecDeque<Event>,
    ) -> Result<Option<(usize, bool)>, StreamError> {
        let stid = self.stid(id);
        let d = self.data_mut(id)?;
        match d.recv {
            RecvSide::None => return Err(StreamError::InvalidState("send-only stream")),
            RecvSide::Done => return Err(StreamError::InvalidState("stream finished")),
            RecvSide::Reset(c) => return Err(StreamError::Reset(c)),
            RecvSide::Stopped => return Err(StreamError::InvalidState("reading was stopped")),
            RecvSide::Open => {}
        }
        d.readable_reported = false;
        let session = d.session;
        let result = if d.fin_buffered {
            d.recv = RecvSide::Done;
            ev.push_back(Event::StreamFinished { stream: stid });
            // quiche may still hold the FIN as an empty chunk (a zero-length read reports the FIN without
            // taking it): take it, or quiche keeps the stream readable, never frees it, and the peer's
            // QUIC stream credit for it never comes back. No data is left to read: the FIN was at the
            // read offset.
            let _ = self.quic.stream_recv(id, &mut [0u8; 1]);
            Ok(Some((0, true)))
        } else {
            let r = self.quic.stream_recv(id, buf);
            let d = self.data_mut(id)?;
            match r {
                Ok((n, fin)) => {
                    if fin {
                        d.recv = RecvSide::Done;
                        ev.push_back(Event::StreamFinished { stream: stid });
                    }
                    Ok(Some((n, fin)))
                }
                Err(quiche::Error::Done) => Ok(None),
                Err(quiche::Error::StreamReset(c)) => {
                    d.recv = RecvSide::Reset(h3_to_app(c));
                    if c == code::WT_SESSION_GONE {
                        // The peer ended the session: say so rather than "reset with no code".
                        Err(StreamError::SessionGone)
                    } else {
                        Err(StreamError::Reset(h3_to_app(c)))
                    }
                }
                Err(_) => {
                    d.recv = RecvSide::Done;
                    Err(StreamError::InvalidState("stream closed"))
                }
            }
        };
        if let Ok(Some((n, _))) = result {
            if let Some(s) = self.sessions.get_mut(&session) {
                s.stats.stream_bytes_received += n as u64;
            }
            if n > 0 {
                self.grant_data_credit(session, n as u64);
            }
        }
        self.maybe_forget(id);
        result
    }

    /// Writes as much of `data` as flow control allows now; returns how much was accepted. When less than
    /// all, `StreamWritable` follows once more can go.
    pub(crate) fn write(&mut self, id: u64, data: &[u8], fin: bool) -> Result<usize, StreamError> {
        let alive = self.alive();
        let d = self.data_mut(id)?;
        match d.send {
            SendSide::None => return Err(StreamError::InvalidState("receive-only stream")),
            SendSide::Finished => return Err(StreamError::InvalidState("stream finished")),
            SendSide::Reset => return Err(StreamError::InvalidState("stream reset")),
            SendSide::Stopped(c) => return Err(StreamError::Stopped(c)),
            SendSide::Open => {}
        }
        if d.fin_pending {
            return Err(StreamError::InvalidState("stream finished"));
        }
        if !alive {
            return Err(StreamError::SessionGone);
        }
        let session = d.session;
        if d.writable_armed {
            // Still blocked: quiche has not reported the stream writable since the last short write (it
            // would have been, in the last `process`). Another `stream_send` now would only make quiche
            // queue one more DATA_BLOCKED frame, a packet per call for a writer that retries in a loop.
            return Ok(0);
        }
        if !d.header.is_empty() {
            let header = std::mem::take(&mut d.header);
            let sent = self.quic.stream_send(id, &header, false).unwrap_or(0);
            let rest: SmallVec<[u8; 16]> = SmallVec::from_slice(&header[sent..]);
            if !rest.is_empty() {
                let _ = self.quic.stream_writable(id, rest.len());
                let d = self.data_mut(id)?;
                d.header = rest;
                d.want_writable = true;
                d.fin_pending |= fin && data.is_empty();
                return Ok(0);
            }
        }
        // Session-level credit when the peer uses WebTransport flow control.
        let mut allowed = data.len();
        let mut credit_limited = false;
        if let Some(cr) = self.sessions.get(&session).and_then(|s| s.send_credit) {
            let left = cr.max_data.saturating_sub(cr.sent);
            if (left as usize) < allowed {
                allowed = left as usize;
                credit_limited = true;
            }
        }
        let send_fin = fin && allowed == data.len();
        let r = if allowed == 0 && !send_fin {
            Err(quiche::Error::Done)
        } else {
            self.quic.stream_send(id, &data[..allowed], send_fin)
        };
        // A stream quiche already collected: its sending side was reset for the peer's STOP_SENDING (the
        // code is gone with it).
        let collected = matches!(r, Err(quiche::Error::Done))
            && matches!(
                self.quic.stream_capacity(id),
                Err(quiche::Error::InvalidStreamState(_))
            );
        let d = self.data_mut(id)?;
        let n = match r {
            Ok(n) => n,
            Err(quiche::Error::Done) if collected => {
                d.send = SendSide::Stopped(None);
                self.maybe_forget(id);
                return Err(StreamError::Stopped(None));
            }
            Err(quiche::Error::Done) => 0,
            Err(quiche::Error::StreamStopped(c)) => {
                d.send = SendSide::Stopped(h3_to_app(c));
                let c = h3_to_app(c);
                self.maybe_forget(id);
                return Err(StreamError::Stopped(c));
            }
            Err(e) => {
                log::debug!("stream {id}: write failed: {e}");
                return Err(StreamError::InvalidState("stream closed"));
            }
        };
        let fin_set = send_fin && n == data.len();
        if fin_set {
            d.send = SendSide::Finished;
        } else if n < data.len() {
            d.want_writable = true;
            if (!credit_limited || n < allowed) && !d.writable_armed {
                // Threshold 1: quiche reports a stream only once its capacity reaches the threshold, and a
                // congestion window smaller than a larger threshold would never wake the writer.
                match self.quic.stream_writable(id, 1) {
                    Ok(true) => self.writable_now.push(id),
                    Ok(false) => {
                        if let Ok(d) = self.data_mut(id) {
                            d.writable_armed = true;
                        }
                    }
                    Err(_) => {}
                }
            }
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.stats.stream_bytes_sent += n as u64;
            if let Some(cr) = s.send_credit.as_mut() {
                cr.sent += n as u64;
                if credit_limited && cr.sent >= cr.max_data && !cr.data_blocked_sent {
                    cr.data_blocked_sent = true;
                    let max = cr.max_data;
                    self.send_capsule(session, &Capsule::DataBlocked(max));
                }
            }
        }
        if fin_set {
            self.send_fin_now();
        }
        self.maybe_forget(id);
        Ok(n)
    }

    pub(crate) fn finish(&mut self, id: u64) -> Result<(), StreamError> {
        let d = self.data_mut(id)?;
        match d.send {
            SendSide::Open => {}
            SendSide::Stopped(c) => return Err(StreamError::Stopped(c)),
            SendSide::None => return Err(StreamError::InvalidState("receive-only stream")),
            _ => {
                return Err(StreamError::InvalidState(
                    "stream already finished or reset",
                ))
            }
        }
        if !d.header.is_empty() {
            d.fin_pending = true;
            return Ok(());
        }
        match self.quic.stream_send(id, &[], true) {
            Ok(_) => {
                let d = self.data_mut(id)?;
                d.send = SendSide::Finished;
                self.send_fin_now();
                self.maybe_forget(id);
                Ok(())
            }
            Err(quiche::Error::StreamStopped(c)) => {
                let d = self.data_mut(id)?;
                d.send = SendSide::Stopped(h3_to_app(c));
                self.maybe_forget(id);
                Err(StreamError::Stopped(h3_to_app(c)))
            }
            Err(_) => {
                let d = self.data_mut(id)?;
                d.fin_pending = true;
                let _ = self.quic.stream_writable(id, 1);
                Ok(())
            }
        }
    }

    pub(crate) fn reset(&mut self, id: u64, app: u32) -> Result<(), StreamError> {
        let d = self.data_mut(id)?;
        match d.send {
            SendSide::Open | SendSide::Finished => {}
            SendSide::None => return Err(StreamError::InvalidState("receive-only stream")),
            _ => return Err(StreamError::InvalidState("stream already reset or stopped")),
        }
        d.send = SendSide::Reset;
        d.fin_pending = false;
        let _ = self
            .quic
            .stream_shutdown(id, quiche::Shutdown::Write, code::app_to_h3(app));
        self.maybe_forget(id);
        Ok(())
    }

    pub(crate) fn stop(&mut self, id: u64, app: u32) -> Result<(), StreamError> {
        let d = self.data_mut(id)?;
        match d.recv {
            RecvSide::Open => {}
            RecvSide::None => return Err(StreamError::InvalidState("send-only stream")),
            _ => return Err(StreamError::InvalidState("receiving already over")),
        }
        d.recv = RecvSide::Stopped;
        let discard = self.stop_reading(id, code::app_to_h3(app));
        self.maybe_forget(id);
        if discard {
            self.streams.insert(id, Stream::Discard);
        }
        Ok(())
    }

    pub(crate) fn set_priority(
        &mut self,
        id: u64,
        urgency: u8,
        incremental: bool,
    ) -> Result<(), StreamError> {
        self.data_mut(id)?;
        self.quic
            .stream_priority(id, urgency, incremental)
            .map_err(|_| StreamError::InvalidState("stream closed"))
    }
}
