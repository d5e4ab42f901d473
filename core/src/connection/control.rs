//! The HTTP/3 layer under the sessions: our control stream and SETTINGS, the peer's control stream
//! (SETTINGS, GOAWAY and the rules for critical streams), the peer's QPACK streams, and sniffing the type of
//! each new peer stream (RFC 9114 section 6.2, RFC 9204 section 4.2).

use std::collections::VecDeque;
use std::time::Instant;

use crate::capsule::{CapsuleParser, MAX_CAPSULE};
use crate::error::{code, H3Error};
use crate::event::{Event, SessionCloseReason};
use crate::frame::{self, FrameEvent, FrameReader, MAX_CONTROL_FRAME};
use crate::settings::{self, PeerSettings, Settings};
use crate::varint;

use super::types::{RequestStream, SessionState, Stream};
use super::{Connection, SCRATCH};
use crate::stream_header::{stream_type, StreamKind};

impl Connection {
    // ---------------------------------------------------------------------------------------------
    // HTTP/3 setup

    fn local_settings(&self) -> Settings {
        let mut s = Settings::new();
        // Static-only QPACK: browsers use the dynamic table whenever it is offered (PROTOCOL.md).
        s.set(settings::QPACK_MAX_TABLE_CAPACITY, 0);
        s.set(
            settings::MAX_FIELD_SECTION_SIZE,
            self.cfg.max_field_section_size,
        );
        s.set(settings::QPACK_BLOCKED_STREAMS, 0);
        s.set(settings::ENABLE_CONNECT_PROTOCOL, 1);
        s.set(settings::H3_DATAGRAM, 1);
        let max_sessions = self.cfg.max_sessions.max(1);
        if self.dialects.draft02 {
            s.set(settings::H3_DATAGRAM_DRAFT, 1);
            s.set(settings::ENABLE_WEBTRANSPORT_DRAFT02, 1);
            s.set(settings::WT_MAX_SESSIONS_DRAFT07, max_sessions);
            s.set(settings::WT_MAX_SESSIONS, max_sessions);
        }
        if self.dialects.latest {
            s.set(settings::WT_ENABLED, 1);
            s.set(
                settings::WT_INITIAL_MAX_DATA,
                self.cfg.session_max_data.min(varint::MAX),
            );
            s.set(
                settings::WT_INITIAL_MAX_STREAMS_UNI,
                self.cfg.session_max_streams_uni,
            );
            s.set(
                settings::WT_INITIAL_MAX_STREAMS_BIDI,
                self.cfg.session_max_streams_bidi,
            );
        }
        // A reserved identifier keeps peers honest about ignoring unknown settings (RFC 9114 section 7.2.4.1).
        s.set(0x1f * 0x2a + 0x21, 0x5e);
        s
    }

    /// Opens our control stream with SETTINGS (RFC 9114 section 6.2.1). QPACK encoder/decoder streams are not
    /// opened: with a dynamic table capacity of 0 they would carry nothing (RFC 9204 section 4.2).
    pub(super) fn start_h3(&mut self) {
        self.h3_started = true;
        let id = self.next_local_uni;
        self.next_local_uni += 4;
        let mut out = Vec::with_capacity(64);
        varint::write(stream_type::CONTROL, &mut out);
        let mut payload = Vec::new();
        self.local_settings().encode(&mut payload);
        frame::write_frame(frame::SETTINGS, &payload, &mut out);
        let _ = self.quic.stream_priority(id, 0, false);
        self.streams.insert(id, Stream::LocalControl { out });
        self.flush_local(id);
    }

    // ---------------------------------------------------------------------------------------------
    // Peer unidirectional streams and stream type sniffing

    pub(super) fn read_sniff(
        &mut self,
        id: u64,
        now: Instant,
        ev: &mut VecDeque<Event>,
    ) -> Result<(), H3Error> {
        let Some(Stream::Sniff(mut header)) = self.streams.remove(&id) else {
            return Ok(());
        };
        // Read the header byte-exactly: what follows it belongs to the stream's next reader.
        let mut fin = false;
        let mut tmp = [0u8; 8];
        while header.want() > 0 && !fin {
            let want = header.want();
            match self.quic.stream_recv(id, &mut tmp[..want]) {
                Ok((n, f)) => {
                    header.push(&tmp[..n]);
                    fin = f;
                    if n == 0 && !f {
                        break;
                    }
                }
                Err(quiche::Error::Done) => break,
                // Reset before the header was complete: nothing to do.
                Err(_) => return Ok(()),
            }
        }
        let Some(kind) = header.kind() else {
            if !fin {
                self.streams.insert(id, Stream::Sniff(header));
            }
            // A stream that ends before its type is ignored (RFC 9114 section 6.2).
            return Ok(());
        };
        match kind {
            StreamKind::Control => {
                if self.have_peer_control {
                    return Err(H3Error::new(
                        code::H3_STREAM_CREATION_ERROR,
                        "second control stream",
                    ));
                }
                self.have_peer_control = true;
                self.streams.insert(
                    id,
                    Stream::PeerControl {
                        reader: FrameReader::new(MAX_CONTROL_FRAME),
                        settings_seen: false,
                    },
                );
                if fin {
                    return Err(H3Error::new(
                        code::H3_CLOSED_CRITICAL_STREAM,
                        "control stream closed",
                    ));
                }
                self.read_control(id, ev)
            }
            StreamKind::QpackEncoder | StreamKind::QpackDecoder => {
                let enc = kind == StreamKind::QpackEncoder;
                let seen = if enc {
                    &mut self.have_peer_encoder
                } else {
                    &mut self.have_peer_decoder
                };
                if *seen {
                    return Err(H3Error::new(
                        code::H3_STREAM_CREATION_ERROR,
                        "second QPACK stream of one type",
                    ));
                }
                *seen = true;
                if fin {
                    return Err(H3Error::new(
                        code::H3_CLOSED_CRITICAL_STREAM,
                        "QPACK stream closed",
                    ));
                }
                self.streams.insert(
                    id,
                    if enc {
                        Stream::QpackEncoder
                    } else {
                        Stream::QpackDecoder
                    },
                );
                if enc {
                    self.read_qpack_encoder(id)
                } else {
                    Ok(())
                }
            }
            StreamKind::Push => {
                if self.server {
                    return Err(H3Error::new(
                        code::H3_STREAM_CREATION_ERROR,
                        "push stream from a client",
                    ));
                }
                // We never send MAX_PUSH_ID, so any push id exceeds it (RFC 9114 section 4.6).
                Err(H3Error::new(
                    code::H3_ID_ERROR,
                    "push stream without MAX_PUSH_ID",
                ))
            }
            StreamKind::Unknown(other) => {
                // Unknown and GREASE stream types: the recipient either aborts reading or discards
                // what arrives (RFC 9114 section 6.2). Tern discards: quiche 0.30 frees a stream whose
                // reading was aborted only when the application reads it again, which it never
                // reports, so a stopped stream that already carried its FIN would hold its slot (and
                // the peer's stream credit) for the life of the connection (quiche issue #1968; fix
                // proposed in quiche PR #2054). Read to its end, it is freed at once and the credit
                // returns.
                log::debug!("stream {id}: discarding unknown stream type {other:#x}");
                if !fin && !self.discard(id) {
                    self.streams.insert(id, Stream::Discard);
                }
                Ok(())
            }
            StreamKind::Request(first) => {
                if !self.server {
                    return Err(H3Error::new(
                        code::H3_STREAM_CREATION_ERROR,
                        format!("server-initiated bidirectional stream starting with {first:#x}"),
                    ));
                }
                // A request stream: the varint was the first frame's type.
                let headers_deadline = now + self.cfg.request_header_timeout;
                self.streams.insert(
                    id,
                    Stream::Request(Box::new(RequestStream {
                        reader: FrameReader::with_type(
                            first,
                            self.cfg.max_field_section_size.min(1 << 20) as usize * 2,
                        ),
                        capsules: CapsuleParser::new(MAX_CAPSULE),
                        headers_done: false,
                        out: Vec::new(),
                        fin_queued: false,
                        fin_sent: false,
                        over: false,
                        headers_deadline: Some(headers_deadline),
                    })),
                );
                self.deadline = Some(
                    self.deadline
                        .map_or(headers_deadline, |d| d.min(headers_deadline)),
                );
                if fin {
                    self.streams.remove(&id);
                    return Ok(());
                }
                self.read_request(id, ev)
            }
            StreamKind::WebTransport { session } => {
                self.attach_peer_stream(id, session, fin, now, ev)
            }
        }
    }

    // ---------------------------------------------------------------------------------------------
    // The peer's control and QPACK streams

    pub(super) fn read_control(
        &mut self,
        id: u64,
        ev: &mut VecDeque<Event>,
    ) -> Result<(), H3Error> {
        let mut buf = [0u8; SCRATCH];
        let buf = &mut buf[..];
        loop {
            let (n, fin) = match self.quic.stream_recv(id, buf) {
                Ok(v) => v,
                Err(quiche::Error::Done) => return Ok(()),
                Err(_) => {
                    return Err(H3Error::new(
                        code::H3_CLOSED_CRITICAL_STREAM,
                        "control stream reset",
                    ));
                }
            };
            let Some(Stream::PeerControl {
                mut reader,
                mut settings_seen,
            }) = self.streams.remove(&id)
            else {
                return Ok(());
            };
            let mut frames: Vec<(u64, Vec<u8>)> = Vec::new();
            let r = reader.push(&buf[..n], |f| {
                match f {
                    FrameEvent::Frame { ty, payload } => frames.push((ty, payload.to_vec())),
                    FrameEvent::Data(_) => frames.push((frame::DATA, Vec::new())),
                }
                Ok(())
            });
            let mut result = r;
            // The reader skips unknown (GREASE) frames without reporting them; one of those first is still
            // "any other frame type" (RFC 9114 section 6.2.1).
            if let Some(t) = reader
                .first_type()
                .filter(|t| result.is_ok() && !settings_seen && *t != frame::SETTINGS)
            {
                result = Err(H3Error::new(
                    code::H3_MISSING_SETTINGS,
                    format!("first control frame is {t:#x}"),
                ));
            }
            for (ty, payload) in frames {
                if result.is_err() {
                    break;
                }
                result = self.control_frame(ty, &payload, &mut settings_seen, ev);
            }
            self.streams.insert(
                id,
                Stream::PeerControl {
                    reader,
                    settings_seen,
                },
            );
            result?;
            if fin {
                return Err(H3Error::new(
                    code::H3_CLOSED_CRITICAL_STREAM,
                    "control stream closed",
                ));
            }
        }
    }

    /// One frame on the peer's control stream (RFC 9114 section 6.2.1, 7.2).
    fn control_frame(
        &mut self,
        ty: u64,
        payload: &[u8],
        settings_seen: &mut bool,
        ev: &mut VecDeque<Event>,
    ) -> Result<(), H3Error> {
        if !*settings_seen {
            if ty != frame::SETTINGS {
                return Err(H3Error::new(
                    code::H3_MISSING_SETTINGS,
                    format!("first control frame is {ty:#x}"),
                ));
            }
            *settings_seen = true;
            let s = Settings::decode(payload)?;
            self.on_settings(s, ev);
            return Ok(());
        }
        match ty {
            frame::SETTINGS => Err(H3Error::new(
                code::H3_FRAME_UNEXPECTED,
                "second SETTINGS frame",
            )),
            frame::DATA | frame::HEADERS | frame::PUSH_PROMISE => Err(H3Error::new(
                code::H3_FRAME_UNEXPECTED,
                format!("frame {ty:#x} on the control stream"),
            )),
            frame::GOAWAY => {
                let id = frame::parse_goaway(payload)?;
                self.on_goaway(id, ev)
            }
            frame::MAX_PUSH_ID => {
                if !self.server {
                    return Err(H3Error::new(
                        code::H3_FRAME_UNEXPECTED,
                        "MAX_PUSH_ID from a server",
                    ));
                }
                Ok(())
            }
            frame::CANCEL_PUSH => Ok(()),
            t if frame::is_h2_reserved(t) => Err(H3Error::new(
                code::H3_FRAME_UNEXPECTED,
                format!("HTTP/2 frame type {t:#x}"),
            )),
            _ => Ok(()),
        }
    }

    fn on_settings(&mut self, s: Settings, ev: &mut VecDeque<Event>) {
        let peer = PeerSettings::from_settings(s);
        log::debug!("connection {:?}: peer settings {:?}", self.handle, peer.raw);
        self.peer = Some(peer);
        // Sessions that waited for the server's SETTINGS can now pick their dialect and send CONNECT.
        let waiting: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.state == SessionState::AwaitingSettings)
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            self.send_connect(id, ev);
        }
    }

    fn on_goaway(&mut self, id: u64, ev: &mut VecDeque<Event>) -> Result<(), H3Error> {
        // A server's GOAWAY carries a client-initiated bidirectional stream id (RFC 9114 section 5.2), and
        // the id never increases.
        if !self.server && id & 0x3 != 0 {
            return Err(H3Error::new(
                code::H3_ID_ERROR,
                format!("GOAWAY with stream id {id}"),
            ));
        }
        if let Some(prev) = self.goaway_received {
            if id > prev {
                return Err(H3Error::new(code::H3_ID_ERROR, "GOAWAY id increased"));
            }
        }
        self.goaway_received = Some(id);
        ev.push_back(Event::GoAway {
            conn: self.handle,
            id,
        });
        let ids: Vec<u64> = self.sessions.keys().copied().collect();
        for sid in ids {
            let s = self.sessions.get_mut(&sid).expect("listed");
            if !self.server && sid >= id {
                // Requests at or above the id were not processed: they end here.
                self.end_session(sid, SessionCloseReason::NotSupported, false, ev);
                continue;
            }
            if s.state == SessionState::Established && !s.draining_reported {
                s.draining_reported = true;
                ev.push_back(Event::SessionDraining {
                    session: self.sid(sid),
                });
            }
        }
        Ok(())
    }

    /// The peer's encoder stream may only set the capacity to 0 (RFC 9204 section 4.3.1: more than we
    /// allow is QPACK_ENCODER_STREAM_ERROR, and every insertion needs capacity).
    pub(super) fn read_qpack_encoder(&mut self, id: u64) -> Result<(), H3Error> {
        let mut buf = [0u8; 256];
        loop {
            match self.quic.stream_recv(id, &mut buf) {
                Ok((n, fin)) => {
                    if buf[..n].iter().any(|b| *b != 0x20) {
                        return Err(H3Error::new(
                            code::QPACK_ENCODER_STREAM_ERROR,
                            "encoder instruction needs a dynamic table of capacity 0",
                        ));
                    }
                    if fin {
                        return Err(H3Error::new(
                            code::H3_CLOSED_CRITICAL_STREAM,
                            "QPACK encoder stream closed",
                        ));
                    }
                }
                Err(quiche::Error::Done) => return Ok(()),
                Err(_) => {
                    return Err(H3Error::new(
                        code::H3_CLOSED_CRITICAL_STREAM,
                        "QPACK encoder stream reset",
                    ))
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Commands

    /// Sends GOAWAY (RFC 9114 section 5.2): a server names the first request stream it will not process,
    /// a client sends push id 0.
    pub(crate) fn goaway(&mut self) {
        let id = if self.server { self.next_peer_bidi } else { 0 };
        if self.goaway_sent.is_some_and(|g| g <= id) {
            return;
        }
        if !self.h3_started {
            return;
        }
        self.goaway_sent = Some(id);
        let mut payload = Vec::new();
        varint::write(id, &mut payload);
        let ctrl = self.streams.iter_mut().find_map(|(sid, st)| match st {
            Stream::LocalControl { out } => Some((*sid, out)),
            _ => None,
        });
        if let Some((sid, out)) = ctrl {
            frame::write_frame(frame::GOAWAY, &payload, out);
            self.flush_local(sid);
        }
    }
}
