//! WebTransport sessions: the extended CONNECT request and response on a session's CONNECT stream, its
//! capsules (CLOSE, DRAIN, flow control), and a session's lifetime from request to end
//! (draft-ietf-webtrans-http3 sections 3, 5.6 and 6).

use std::collections::VecDeque;

use crate::capsule::{Capsule, CapsuleError, CapsuleParser, MAX_CAPSULE, MAX_CLOSE_REASON};
use crate::connect::{self, RequestCheck};
use crate::error::{code, H3Error, SessionError};
use crate::event::{
    Event, Headers, IncomingRequest, SessionCloseReason, SessionRequest, SessionStats,
};
use crate::frame::{self, FrameEvent, FrameReader};
use crate::qpack;
use crate::settings::{Dialect, FlowLimits, PeerSettings};

use super::types::{
    RecvCredit, RecvSide, RequestStream, SendCredit, SendSide, Session, SessionState, Stream,
};
use super::{is_bidi, Connection, SCRATCH};

impl Connection {
    // ---------------------------------------------------------------------------------------------
    // CONNECT streams, capsules and session lifetime

    pub(super) fn read_request(
        &mut self,
        id: u64,
        ev: &mut VecDeque<Event>,
    ) -> Result<(), H3Error> {
        let mut buf = [0u8; SCRATCH];
        let buf = &mut buf[..];
        loop {
            let over = matches!(self.streams.get(&id), Some(Stream::Request(r)) if r.over);
            if over {
                if self.discard(id) {
                    self.forget_request(id);
                }
                return Ok(());
            }
            let (n, fin) = match self.quic.stream_recv(id, buf) {
                Ok(v) => v,
                Err(quiche::Error::Done) => return Ok(()),
                Err(quiche::Error::StreamReset(c)) => {
                    log::debug!("session {id}: CONNECT stream reset with {c:#x}");
                    self.request_ended(id, false, ev);
                    return Ok(());
                }
                Err(_) => {
                    self.request_ended(id, false, ev);
                    return Ok(());
                }
            };
            let Some(Stream::Request(mut rs)) = self.streams.remove(&id) else {
                return Ok(());
            };
            let mut items: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut capsules = Vec::new();
            let mut capsule_err: Option<CapsuleError> = None;
            let headers_done = &mut rs.headers_done;
            let parser = &mut rs.capsules;
            let r = rs.reader.push(&buf[..n], |f| {
                match f {
                    FrameEvent::Frame { ty, payload } => {
                        if ty == frame::HEADERS {
                            *headers_done = true;
                        }
                        items.push((ty, payload.to_vec()));
                    }
                    FrameEvent::Data(d) => {
                        if !*headers_done {
                            // DATA before HEADERS (RFC 9114 section 4.1).
                            return Err(H3Error::new(
                                code::H3_FRAME_UNEXPECTED,
                                "DATA before HEADERS",
                            ));
                        }
                        if capsule_err.is_none() {
                            if let Err(e) = parser.push(d, &mut capsules) {
                                capsule_err = Some(e);
                            }
                        }
                    }
                }
                Ok(())
            });
            let clean_end = fin && rs.reader.is_idle() && rs.capsules.is_idle();
            let headers_completed = rs.headers_done && rs.headers_deadline.is_some();
            if rs.headers_done {
                rs.headers_deadline = None;
            }
            self.streams.insert(id, Stream::Request(rs));
            if headers_completed {
                self.recompute_deadline();
            }
            r?;
            // HEADERS frames come before the DATA that carries capsules in the same chunk; other buffered
            // frame types on a request stream are errors (RFC 9114 section 4.1).
            for (ty, payload) in items {
                match ty {
                    frame::HEADERS => self.on_headers(id, &payload, ev)?,
                    t if frame::is_h2_reserved(t) => {
                        return Err(H3Error::new(
                            code::H3_FRAME_UNEXPECTED,
                            format!("HTTP/2 frame {t:#x}"),
                        ))
                    }
                    frame::SETTINGS | frame::GOAWAY | frame::MAX_PUSH_ID | frame::CANCEL_PUSH => {
                        return Err(H3Error::new(
                            code::H3_FRAME_UNEXPECTED,
                            format!("frame {ty:#x} on a request stream"),
                        ))
                    }
                    frame::PUSH_PROMISE => {
                        return Err(H3Error::new(
                            code::H3_ID_ERROR,
                            "PUSH_PROMISE without MAX_PUSH_ID",
                        ))
                    }
                    _ => {}
                }
            }
            for c in capsules {
                if !self.sessions.contains_key(&id) {
                    break;
                }
                self.on_capsule(id, c, ev);
            }
            if let Some(e) = capsule_err {
                if self.sessions.contains_key(&id) {
                    let reason = e.to_string();
                    self.session_violation(id, H3Error::new(code::H3_MESSAGE_ERROR, reason), ev);
                }
            }
            if fin {
                if !clean_end {
                    log::debug!("session {id}: CONNECT stream ended inside a frame or capsule");
                }
                self.request_ended(id, clean_end, ev);
                return Ok(());
            }
            if n == 0 {
                return Ok(());
            }
        }
    }

    /// The peer ended its side of a CONNECT stream (FIN or reset).
    fn request_ended(&mut self, id: u64, clean: bool, ev: &mut VecDeque<Event>) {
        if self.sessions.contains_key(&id) {
            // A clean FIN without CLOSE capsule is a close with code 0 and no reason (draft section 6);
            // a reset or a FIN inside a frame ends the session without a code.
            let reason = if clean {
                SessionCloseReason::Closed {
                    code: 0,
                    reason: String::new(),
                    by_peer: true,
                }
            } else {
                SessionCloseReason::StreamEnded
            };
            self.end_session(id, reason, true, ev);
        }
        self.forget_request(id);
    }

    fn forget_request(&mut self, id: u64) {
        let done = match self.streams.get(&id) {
            Some(Stream::Request(r)) => r.fin_sent || !r.fin_queued && r.over,
            _ => false,
        };
        if done {
            self.streams.remove(&id);
        } else if let Some(Stream::Request(r)) = self.streams.get_mut(&id) {
            r.over = true;
        }
    }

    fn on_headers(
        &mut self,
        id: u64,
        block: &[u8],
        ev: &mut VecDeque<Event>,
    ) -> Result<(), H3Error> {
        let already = self.sessions.get(&id).map(|s| s.state);
        let fields = match qpack::decode(block, self.cfg.max_field_section_size) {
            Ok(f) => f,
            Err(qpack::QpackError::TooLarge { limit }) => {
                log::debug!("stream {id}: header section exceeds {limit} bytes");
                if self.server && already.is_none() {
                    self.respond_and_finish(id, 431, Dialect::Latest);
                } else {
                    self.abort_request(id, code::H3_EXCESSIVE_LOAD, ev);
                }
                return Ok(());
            }
            Err(e) => {
                return Err(H3Error::new(
                    code::QPACK_DECOMPRESSION_FAILED,
                    e.to_string(),
                ))
            }
        };
        if self.server {
            if already.is_some() {
                // Trailers on a CONNECT stream carry nothing for us.
                return Ok(());
            }
            self.on_request(id, fields, ev);
        } else {
            match already {
                Some(SessionState::Requested) => {}
                _ => return Ok(()),
            }
            match connect::check_response(fields) {
                Err(why) => {
                    log::warn!("session {id}: malformed response: {why}");
                    self.session_violation(id, H3Error::new(code::H3_MESSAGE_ERROR, why), ev);
                }
                Ok((status, headers)) if (100..200).contains(&status) => {
                    log::debug!("session {id}: interim response {status} {headers:?}");
                }
                Ok((status, headers)) if (200..300).contains(&status) => {
                    let s = self.sessions.get_mut(&id).expect("checked");
                    s.state = SessionState::Established;
                    ev.push_back(Event::SessionEstablished {
                        session: self.sid(id),
                        status,
                        headers,
                    });
                    self.session_established(id, ev);
                }
                Ok((status, headers)) => {
                    self.sessions.remove(&id);
                    ev.push_back(Event::SessionRejected {
                        session: self.sid(id),
                        status,
                        headers,
                    });
                    self.reject_buffered_for(id);
                    self.queue_fin(id);
                }
            }
        }
        Ok(())
    }

    /// A server's handling of a new request (draft-ietf-webtrans-http3 section 3.2).
    fn on_request(&mut self, id: u64, fields: Vec<qpack::Field>, ev: &mut VecDeque<Event>) {
        match connect::check_request(fields) {
            RequestCheck::Malformed(why) => {
                log::warn!("stream {id}: malformed request: {why}");
                self.abort_request(id, code::H3_MESSAGE_ERROR, ev);
            }
            RequestCheck::Refuse(status, why) => {
                log::debug!("stream {id}: answering {status}: {why}");
                self.respond_and_finish(id, status, Dialect::Latest);
            }
            RequestCheck::WebTransport {
                request,
                protocol,
                dialect,
            } => {
                let allowed = match dialect {
                    Dialect::Draft02 => self.dialects.draft02,
                    Dialect::Latest => self.dialects.latest,
                };
                if !allowed {
                    self.respond_and_finish(id, 400, dialect);
                    return;
                }
                // Requests at or above a GOAWAY we sent, or beyond the sessions we allow, are rejected
                // without processing (RFC 9114 section 5.2; draft section 3.1).
                let rejected = self.goaway_sent.is_some_and(|g| id >= g)
                    || self.sessions.len() as u64 >= self.allowed_sessions();
                if rejected {
                    log::debug!("stream {id}: session refused (limit or GOAWAY)");
                    self.abort_request(id, code::H3_REQUEST_REJECTED, ev);
                    return;
                }
                let mut s = Session::new(SessionState::Incoming, dialect);
                s.incoming = Some(IncomingRequest {
                    request,
                    protocol,
                    dialect,
                    remote: self.remote,
                });
                let request = s.incoming.clone().expect("set");
                self.sessions.insert(id, s);
                ev.push_back(Event::SessionRequest {
                    session: self.sid(id),
                    request,
                });
            }
        }
    }

    /// Sessions the peer may hold open at once: more than one only where per-session flow control is in use
    /// (PROTOCOL.md; draft section 5.2).
    fn allowed_sessions(&self) -> u64 {
        let fc =
            self.dialects.latest && self.peer.as_ref().is_some_and(|p| p.flow_control.is_some());
        if fc {
            self.cfg.max_sessions.max(1)
        } else {
            1
        }
    }

    /// Resets a request stream in both directions (a malformed or refused request).
    fn abort_request(&mut self, id: u64, c: u64, ev: &mut VecDeque<Event>) {
        let _ = self.quic.stream_shutdown(id, quiche::Shutdown::Read, c);
        let _ = self.quic.stream_shutdown(id, quiche::Shutdown::Write, c);
        self.streams.remove(&id);
        if self.sessions.contains_key(&id) {
            self.end_session(
                id,
                SessionCloseReason::ProtocolViolation {
                    code: c,
                    reason: code_reason(c),
                },
                false,
                ev,
            );
        }
        self.reject_buffered_for(id);
    }

    fn respond_and_finish(&mut self, id: u64, status: u16, dialect: Dialect) {
        if let Ok(fields) = connect::response_fields(status, dialect, &Headers::new()) {
            self.send_headers(id, &fields);
        }
        self.queue_fin(id);
        self.reject_buffered_for(id);
        if let Some(Stream::Request(r)) = self.streams.get_mut(&id) {
            r.over = true;
        }
    }

    fn send_headers(&mut self, id: u64, fields: &[qpack::Field]) {
        let mut block = Vec::with_capacity(128);
        qpack::encode(fields, &mut block);
        if let Some(Stream::Request(r)) = self.streams.get_mut(&id) {
            frame::write_frame(frame::HEADERS, &block, &mut r.out);
        }
        self.flush_local(id);
    }

    pub(super) fn send_capsule(&mut self, id: u64, c: &Capsule) {
        let mut body = Vec::with_capacity(16);
        c.encode(&mut body);
        if let Some(Stream::Request(r)) = self.streams.get_mut(&id) {
            frame::write_frame(frame::DATA, &body, &mut r.out);
        }
        self.flush_local(id);
    }

    fn queue_fin(&mut self, id: u64) {
        if let Some(Stream::Request(r)) = self.streams.get_mut(&id) {
            r.fin_queued = true;
        }
        self.flush_local(id);
    }

    /// A capsule on an established (or requested) session's CONNECT stream.
    fn on_capsule(&mut self, id: u64, c: Capsule, ev: &mut VecDeque<Event>) {
        match c {
            Capsule::Close { code: c, reason } => {
                let reason = String::from_utf8_lossy(&reason).into_owned();
                log::debug!("session {id}: peer closed with {c}: {reason:?}");
                self.end_session(
                    id,
                    SessionCloseReason::Closed {
                        code: c,
                        reason,
                        by_peer: true,
                    },
                    true,
                    ev,
                );
            }
            Capsule::Drain => {
                let sid = self.sid(id);
                if let Some(s) = self.sessions.get_mut(&id) {
                    if !s.draining_reported {
                        s.draining_reported = true;
                        ev.push_back(Event::SessionDraining { session: sid });
                    }
                }
            }
            Capsule::MaxData(v) | Capsule::MaxStreamsBidi(v) | Capsule::MaxStreamsUni(v) => {
                let sid = self.sid(id);
                let Some(s) = self.sessions.get_mut(&id) else {
                    return;
                };
                let Some(cr) = s.send_credit.as_mut() else {
                    return;
                };
                let (was_blocked_streams, was_blocked_data) =
                    (cr.streams_blocked, cr.sent >= cr.max_data);
                match c {
                    Capsule::MaxData(_) => cr.max_data = cr.max_data.max(v),
                    Capsule::MaxStreamsBidi(_) => cr.max_bidi = cr.max_bidi.max(v),
                    _ => cr.max_uni = cr.max_uni.max(v),
                }
                if cr.max_data > cr.sent {
                    cr.data_blocked_sent = false;
                }
                if was_blocked_streams {
                    cr.streams_blocked = false;
                    ev.push_back(Event::StreamsAvailable { session: sid });
                }
                if was_blocked_data && cr.sent < cr.max_data {
                    let wake: Vec<u64> = self
                        .streams
                        .iter_mut()
                        .filter_map(|(sid2, st)| match st {
                            Stream::Data(d) if d.session == id && d.want_writable => {
                                d.want_writable = false;
                                Some(*sid2)
                            }
                            _ => None,
                        })
                        .collect();
                    for w in wake {
                        ev.push_back(Event::StreamWritable {
                            stream: self.stid(w),
                        });
                    }
                }
            }
            Capsule::DataBlocked(_)
            | Capsule::StreamsBlockedBidi(_)
            | Capsule::StreamsBlockedUni(_) => {
                log::debug!("session {id}: peer reports it is blocked: {c:?}");
            }
            Capsule::Unknown { ty, .. } => log::trace!("session {id}: skipped capsule {ty:#x}"),
        }
    }

    /// The peer broke a session's rules: reset its CONNECT stream with `e.code` and end the session.
    pub(super) fn session_violation(&mut self, id: u64, e: H3Error, ev: &mut VecDeque<Event>) {
        log::warn!("session {id}: {e}");
        let _ = self
            .quic
            .stream_shutdown(id, quiche::Shutdown::Read, e.code);
        let _ = self
            .quic
            .stream_shutdown(id, quiche::Shutdown::Write, e.code);
        self.streams.remove(&id);
        self.end_session(
            id,
            SessionCloseReason::ProtocolViolation {
                code: e.code,
                reason: e.reason,
            },
            false,
            ev,
        );
    }

    /// Ends a session: resets its streams with WT_SESSION_GONE, drops its datagrams, finishes our side of
    /// the CONNECT stream when `fin` (section 6), and reports it.
    pub(super) fn end_session(
        &mut self,
        id: u64,
        reason: SessionCloseReason,
        fin: bool,
        ev: &mut VecDeque<Event>,
    ) {
        let Some(s) = self.sessions.remove(&id) else {
            return;
        };
        super::add_stats(&mut self.ended_stats, &s.stats);
        let streams: Vec<u64> = self
            .streams
            .iter()
            .filter_map(|(sid, st)| match st {
                Stream::Data(d) if d.session == id => Some(*sid),
                _ => None,
            })
            .collect();
        for s in streams {
            if let Some(Stream::Data(d)) = self.streams.remove(&s) {
                if d.buffered_until.is_some() {
                    self.buffered_streams -= 1;
                }
                if matches!(d.recv, RecvSide::Open) && self.stop_reading(s, code::WT_SESSION_GONE) {
                    self.streams.insert(s, Stream::Discard);
                }
                if matches!(d.send, SendSide::Open) {
                    let _ = self.quic.stream_shutdown(
                        s,
                        quiche::Shutdown::Write,
                        code::WT_SESSION_GONE,
                    );
                }
            }
        }
        self.pending_datagrams.retain(|(s, _)| *s != id);
        if fin {
            self.queue_fin(id);
        }
        if let Some(Stream::Request(r)) = self.streams.get_mut(&id) {
            r.over = true;
        }
        ev.push_back(Event::SessionClosed {
            session: self.sid(id),
            reason,
        });
    }

    fn reject_buffered_for(&mut self, session: u64) {
        let ids: Vec<u64> = self
            .streams
            .iter()
            .filter_map(|(id, st)| match st {
                Stream::Data(d) if d.session == session => Some(*id),
                _ => None,
            })
            .collect();
        for id in ids {
            self.reject_stream(id, code::WT_SESSION_GONE);
        }
        self.pending_datagrams.retain(|(s, _)| *s != session);
    }

    /// A session just became established: set up flow control and release what waited for it.
    fn session_established(&mut self, id: u64, ev: &mut VecDeque<Event>) {
        let peer_fc = self.peer.as_ref().and_then(|p| p.flow_control);
        let we_fc = self.dialects.latest;
        let cfg = self.cfg.clone();
        if let Some(s) = self.sessions.get_mut(&id) {
            if let Some(FlowLimits {
                max_data,
                max_streams_bidi,
                max_streams_uni,
            }) = peer_fc
            {
                s.send_credit = Some(SendCredit {
                    max_data,
                    sent: 0,
                    max_bidi: max_streams_bidi,
                    opened_bidi: 0,
                    max_uni: max_streams_uni,
                    opened_uni: 0,
                    streams_blocked: false,
                    data_blocked_sent: false,
                });
                if we_fc {
                    s.recv_credit = Some(RecvCredit {
                        window_data: cfg.session_max_data,
                        max_data: cfg.session_max_data,
                        consumed: 0,
                        window_bidi: cfg.session_max_streams_bidi,
                        max_bidi: cfg.session_max_streams_bidi,
                        opened_bidi: 0,
                        closed_bidi: 0,
                        window_uni: cfg.session_max_streams_uni,
                        max_uni: cfg.session_max_streams_uni,
                        opened_uni: 0,
                        closed_uni: 0,
                    });
                }
            }
        }
        let waiting: Vec<u64> = self
            .streams
            .iter()
            .filter_map(|(sid, st)| match st {
                Stream::Data(d) if d.session == id && d.buffered_until.is_some() => Some(*sid),
                _ => None,
            })
            .collect();
        let mut waiting = waiting;
        waiting.sort_unstable();
        for sid in waiting {
            let bidi = is_bidi(sid);
            if let Some(Stream::Data(d)) = self.streams.get_mut(&sid) {
                d.buffered_until = None;
                self.buffered_streams -= 1;
            }
            if let Err(e) = self.count_peer_stream(id, bidi) {
                self.reject_stream(sid, code::WT_FLOW_CONTROL_ERROR);
                self.session_violation(id, e, ev);
                return;
            }
            ev.push_back(Event::StreamOpened {
                stream: self.stid(sid),
                session: self.sid(id),
            });
            let fin = matches!(self.streams.get(&sid), Some(Stream::Data(d)) if d.fin_buffered);
            if fin || self.quic.stream_readable(sid) {
                ev.push_back(Event::StreamReadable {
                    stream: self.stid(sid),
                });
            }
        }
        let mut got = false;
        let mut rest = VecDeque::new();
        for (s, d) in std::mem::take(&mut self.pending_datagrams) {
            if s == id {
                got |= self.queue_datagram(id, d);
            } else {
                rest.push_back((s, d));
            }
        }
        self.pending_datagrams = rest;
        if got {
            ev.push_back(Event::DatagramReceived {
                session: self.sid(id),
            });
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Commands: opening a session (client)

    /// Client: starts a session; the CONNECT goes out once the server's SETTINGS are known.
    pub(crate) fn open_session(
        &mut self,
        req: SessionRequest,
        ev: &mut VecDeque<Event>,
    ) -> Result<u64, SessionError> {
        if self.server {
            return Err(SessionError::InvalidState("servers do not open sessions"));
        }
        if !self.alive() {
            return Err(SessionError::Closed);
        }
        if self.goaway_received.is_some() {
            return Err(SessionError::GoingAway);
        }
        // Validate before anything goes out.
        connect::request_fields(&req, Dialect::Latest)?;
        if let Some(p) = &self.peer {
            let fc = p.flow_control.is_some() && self.dialects.latest;
            let limit = if fc {
                p.max_sessions
            } else {
                p.max_sessions.min(1)
            };
            if self.dialect_with(p).is_none() || self.sessions.len() as u64 >= limit {
                return Err(SessionError::NotSupported);
            }
        }
        let id = self.next_local_bidi;
        self.next_local_bidi += 4;
        let mut s = Session::new(SessionState::AwaitingSettings, Dialect::Latest);
        s.pending_request = Some(req);
        self.sessions.insert(id, s);
        self.streams.insert(
            id,
            Stream::Request(Box::new(RequestStream {
                reader: FrameReader::new(self.cfg.max_field_section_size.min(1 << 20) as usize * 2),
                capsules: CapsuleParser::new(MAX_CAPSULE),
                headers_done: false,
                out: Vec::new(),
                fin_queued: false,
                fin_sent: false,
                over: false,
                headers_deadline: None,
            })),
        );
        if self.peer.is_some() {
            self.send_connect(id, ev);
        }
        Ok(id)
    }

    /// The newest dialect both we and the server speak: a server that signals only the newest draft is not
    /// sent a draft-02 request (it would answer 400), nor a draft-02-only server a newest-draft one.
    fn dialect_with(&self, peer: &PeerSettings) -> Option<Dialect> {
        if self.dialects.latest && peer.offers(Dialect::Latest) {
            Some(Dialect::Latest)
        } else if self.dialects.draft02 && peer.offers(Dialect::Draft02) {
            Some(Dialect::Draft02)
        } else {
            None
        }
    }

    /// Picks the dialect from the server's SETTINGS and sends the extended CONNECT (PROTOCOL.md: a client
    /// waits for the server's SETTINGS).
    pub(super) fn send_connect(&mut self, id: u64, ev: &mut VecDeque<Event>) {
        let peer = self.peer.clone().expect("settings known");
        let dialect = self.dialect_with(&peer);
        let Some(dialect) = dialect else {
            log::warn!("session {id}: server does not offer a WebTransport dialect we speak");
            self.streams.remove(&id);
            self.end_session(id, SessionCloseReason::NotSupported, false, ev);
            return;
        };
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let req = s.pending_request.take().expect("pending request");
        s.dialect = dialect;
        s.state = SessionState::Requested;
        let fields = match connect::request_fields(&req, dialect) {
            Ok(f) => f,
            Err(e) => {
                log::warn!("session {id}: {e}");
                self.streams.remove(&id);
                self.end_session(id, SessionCloseReason::NotSupported, false, ev);
                return;
            }
        };
        let size = connect::section_size(&fields);
        if size > peer.max_field_section_size {
            log::warn!("session {id}: request headers of {size} bytes exceed the server's limit");
            self.streams.remove(&id);
            self.end_session(id, SessionCloseReason::NotSupported, false, ev);
            return;
        }
        s.incoming = Some(IncomingRequest {
            request: req,
            protocol: String::new(),
            dialect,
            remote: self.remote,
        });
        self.send_headers(id, &fields);
    }

    // ---------------------------------------------------------------------------------------------
    // Commands: sessions

    pub(crate) fn has_session(&self, id: u64) -> bool {
        self.sessions.contains_key(&id)
    }

    pub(crate) fn session_request(&self, id: u64) -> Option<&IncomingRequest> {
        self.sessions.get(&id).and_then(|s| s.incoming.as_ref())
    }

    pub(crate) fn session_established_now(&self, id: u64) -> bool {
        self.sessions
            .get(&id)
            .is_some_and(|s| s.state == SessionState::Established)
    }

    pub(crate) fn accept_session(
        &mut self,
        id: u64,
        headers: &Headers,
        ev: &mut VecDeque<Event>,
    ) -> Result<(), SessionError> {
        self.answer_session(id, 200, headers, ev)
    }

    /// Answers a session request: 2xx establishes it, anything else rejects it.
    pub(crate) fn answer_session(
        &mut self,
        id: u64,
        status: u16,
        headers: &Headers,
        ev: &mut VecDeque<Event>,
    ) -> Result<(), SessionError> {
        let s = self.sessions.get(&id).ok_or(SessionError::Closed)?;
        if s.state != SessionState::Incoming {
            return Err(SessionError::InvalidState("session already answered"));
        }
        if !(200..=599).contains(&status) {
            return Err(SessionError::InvalidStatus(status));
        }
        let fields = connect::response_fields(status, s.dialect, headers)?;
        let size = connect::section_size(&fields);
        let limit = self
            .peer
            .as_ref()
            .map_or(u64::MAX, |p| p.max_field_section_size);
        if size > limit {
            return Err(SessionError::HeadersTooLarge { size, limit });
        }
        self.send_headers(id, &fields);
        if (200..300).contains(&status) {
            let stid = self.sid(id);
            self.sessions.get_mut(&id).expect("checked").state = SessionState::Established;
            ev.push_back(Event::SessionEstablished {
                session: stid,
                status,
                headers: headers.clone(),
            });
            self.session_established(id, ev);
        } else {
            self.sessions.remove(&id);
            self.queue_fin(id);
            self.reject_buffered_for(id);
            if let Some(Stream::Request(r)) = self.streams.get_mut(&id) {
                r.over = true;
            }
        }
        Ok(())
    }

    /// Closes a session with a CLOSE_WEBTRANSPORT_SESSION capsule and FIN (section 6).
    pub(crate) fn close_session(
        &mut self,
        id: u64,
        code: u32,
        reason: &str,
        ev: &mut VecDeque<Event>,
    ) -> Result<(), SessionError> {
        if reason.len() > MAX_CLOSE_REASON {
            return Err(SessionError::ReasonTooLong(reason.len()));
        }
        let s = self.sessions.get(&id).ok_or(SessionError::Closed)?;
        if s.state == SessionState::Incoming {
            return Err(SessionError::InvalidState(
                "accept or reject the session first",
            ));
        }
        if matches!(
            s.state,
            SessionState::AwaitingSettings | SessionState::Requested
        ) {
            // Nothing established yet: cancel the request.
            let _ =
                self.quic
                    .stream_shutdown(id, quiche::Shutdown::Write, code::H3_REQUEST_CANCELLED);
            let _ =
                self.quic
                    .stream_shutdown(id, quiche::Shutdown::Read, code::H3_REQUEST_CANCELLED);
            self.streams.remove(&id);
        } else {
            self.send_capsule(
                id,
                &Capsule::Close {
                    code,
                    reason: reason.as_bytes().to_vec(),
                },
            );
        }
        self.end_session(
            id,
            SessionCloseReason::Closed {
                code,
                reason: reason.to_string(),
                by_peer: false,
            },
            true,
            ev,
        );
        Ok(())
    }

    pub(crate) fn drain_session(&mut self, id: u64) -> Result<(), SessionError> {
        match self.sessions.get(&id).map(|s| s.state) {
            Some(SessionState::Established) => {
                self.send_capsule(id, &Capsule::Drain);
                Ok(())
            }
            Some(_) => Err(SessionError::InvalidState("session not established")),
            None => Err(SessionError::Closed),
        }
    }

    /// The counters of the live sessions.
    pub(crate) fn live_session_stats(&self) -> impl Iterator<Item = &SessionStats> {
        self.sessions.values().map(|s| &s.stats)
    }

    pub(crate) fn session_stats(&self, id: u64) -> Option<SessionStats> {
        self.sessions.get(&id).map(|s| s.stats.clone())
    }
}

fn code_reason(c: u64) -> String {
    crate::error::code_name(c)
}
