//! HTTP/3 SETTINGS (RFC 9114 section 7.2.4) and the WebTransport signals each draft generation uses.

use crate::error::{code, H3Error};
use crate::varint;

/// SETTINGS_QPACK_MAX_TABLE_CAPACITY (RFC 9204 section 5).
pub const QPACK_MAX_TABLE_CAPACITY: u64 = 0x1;
/// SETTINGS_MAX_FIELD_SECTION_SIZE (RFC 9114 section 7.2.4.1).
pub const MAX_FIELD_SECTION_SIZE: u64 = 0x6;
/// SETTINGS_QPACK_BLOCKED_STREAMS (RFC 9204 section 5).
pub const QPACK_BLOCKED_STREAMS: u64 = 0x7;
/// SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 9220 section 3).
pub const ENABLE_CONNECT_PROTOCOL: u64 = 0x8;
/// SETTINGS_H3_DATAGRAM (RFC 9297 section 2.1.1).
pub const H3_DATAGRAM: u64 = 0x33;
/// The pre-RFC H3 datagram setting (draft-ietf-masque-h3-datagram-00..03), still sent by browsers.
pub const H3_DATAGRAM_DRAFT: u64 = 0xff_d277;
/// SETTINGS_ENABLE_WEBTRANSPORT (draft-02..06).
pub const ENABLE_WEBTRANSPORT_DRAFT02: u64 = 0x2b60_3742;
/// SETTINGS_WEBTRANSPORT_MAX_SESSIONS (draft-07..12).
pub const WT_MAX_SESSIONS_DRAFT07: u64 = 0xc671_706a;
/// SETTINGS_WT_MAX_SESSIONS (draft-13/14).
pub const WT_MAX_SESSIONS: u64 = 0x14e9_cd29;
/// SETTINGS_WT_ENABLED (draft-15/16).
pub const WT_ENABLED: u64 = 0x2c7c_f000;
/// SETTINGS_WT_INITIAL_MAX_DATA (draft-13 and later).
pub const WT_INITIAL_MAX_DATA: u64 = 0x2b61;
/// SETTINGS_WT_INITIAL_MAX_STREAMS_UNI (draft-13 and later).
pub const WT_INITIAL_MAX_STREAMS_UNI: u64 = 0x2b64;
/// SETTINGS_WT_INITIAL_MAX_STREAMS_BIDI (draft-13 and later).
pub const WT_INITIAL_MAX_STREAMS_BIDI: u64 = 0x2b65;

/// A decoded SETTINGS frame: identifier/value pairs in the order received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pairs: Vec<(u64, u64)>,
}

impl Settings {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a setting.
    pub fn set(&mut self, id: u64, value: u64) -> &mut Self {
        match self.pairs.iter_mut().find(|(i, _)| *i == id) {
            Some(p) => p.1 = value,
            None => self.pairs.push((id, value)),
        }
        self
    }

    /// Removes a setting.
    pub fn remove(&mut self, id: u64) -> &mut Self {
        self.pairs.retain(|(i, _)| *i != id);
        self
    }

    /// The value of a setting, if present.
    pub fn get(&self, id: u64) -> Option<u64> {
        self.pairs.iter().find(|(i, _)| *i == id).map(|(_, v)| *v)
    }

    /// All pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.pairs.iter().copied()
    }

    /// Decodes a SETTINGS payload. A duplicate identifier or an HTTP/2 setting identifier is
    /// H3_SETTINGS_ERROR (RFC 9114 section 7.2.4.1); a truncated pair is H3_FRAME_ERROR (section 7.1).
    /// Reserved (GREASE) and unknown identifiers are kept and ignored by the caller.
    pub(crate) fn decode(mut payload: &[u8]) -> Result<Self, H3Error> {
        let mut s = Settings::new();
        while !payload.is_empty() {
            let (id, n) = varint::read(payload).ok_or_else(|| {
                H3Error::new(code::H3_FRAME_ERROR, "truncated SETTINGS identifier")
            })?;
            payload = &payload[n..];
            let (value, n) = varint::read(payload)
                .ok_or_else(|| H3Error::new(code::H3_FRAME_ERROR, "truncated SETTINGS value"))?;
            payload = &payload[n..];
            if matches!(id, 0x2..=0x5) {
                return Err(H3Error::new(
                    code::H3_SETTINGS_ERROR,
                    format!("HTTP/2 setting {id:#x} in SETTINGS"),
                ));
            }
            if s.get(id).is_some() {
                return Err(H3Error::new(
                    code::H3_SETTINGS_ERROR,
                    format!("duplicate setting {id:#x}"),
                ));
            }
            s.pairs.push((id, value));
        }
        Ok(s)
    }

    /// Encodes the payload of a SETTINGS frame.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        for (id, v) in &self.pairs {
            varint::write(*id, out);
            varint::write(*v, out);
        }
    }
}

/// Which WebTransport generation a peer speaks, as read from its SETTINGS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// draft-02..14 signals: `:protocol webtransport` and `sec-webtransport-http3-draft02: 1`
    /// (Chromium, Firefox, wtransport).
    Draft02,
    /// draft-15 and later: SETTINGS_WT_ENABLED and `:protocol webtransport-h3`.
    Latest,
}

/// What the peer's SETTINGS say about WebTransport and HTTP/3 features.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PeerSettings {
    pub raw: Settings,
    /// The newest generation the peer signals, or None when it signals no WebTransport support.
    pub dialect: Option<Dialect>,
    /// The peer accepts HTTP/3 datagrams.
    pub datagrams: bool,
    /// The number of sessions the peer allows on this connection (1 when it only signals support).
    pub max_sessions: u64,
    /// The peer's MAX_FIELD_SECTION_SIZE (unlimited when absent).
    pub max_field_section_size: u64,
    /// Per-session flow-control limits the peer set, when it uses WebTransport flow control.
    pub flow_control: Option<FlowLimits>,
}

/// Initial per-session flow-control limits (draft-ietf-webtrans-http3 section 5.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FlowLimits {
    pub max_data: u64,
    pub max_streams_bidi: u64,
    pub max_streams_uni: u64,
}

impl PeerSettings {
    /// Whether the peer signals support for `d` (a peer that signals the newest draft may also signal the
    /// draft-02 generation, or not).
    pub(crate) fn offers(&self, d: Dialect) -> bool {
        match d {
            Dialect::Latest => self.dialect == Some(Dialect::Latest),
            Dialect::Draft02 => {
                self.raw.get(ENABLE_WEBTRANSPORT_DRAFT02) == Some(1)
                    || self.raw.get(WT_MAX_SESSIONS).unwrap_or(0) > 0
                    || self.raw.get(WT_MAX_SESSIONS_DRAFT07).unwrap_or(0) > 0
            }
        }
    }

    pub(crate) fn from_settings(raw: Settings) -> Self {
        let latest = raw.get(WT_ENABLED) == Some(1);
        let max13 = raw.get(WT_MAX_SESSIONS).unwrap_or(0);
        let max07 = raw.get(WT_MAX_SESSIONS_DRAFT07).unwrap_or(0);
        let draft02 = raw.get(ENABLE_WEBTRANSPORT_DRAFT02) == Some(1);
        let dialect = if latest {
            Some(Dialect::Latest)
        } else if draft02 || max13 > 0 || max07 > 0 {
            Some(Dialect::Draft02)
        } else {
            None
        };
        let max_sessions = max13.max(max07).max(u64::from(dialect.is_some()));
        let fc_ids = [
            WT_INITIAL_MAX_DATA,
            WT_INITIAL_MAX_STREAMS_BIDI,
            WT_INITIAL_MAX_STREAMS_UNI,
        ];
        let flow_control = fc_ids
            .iter()
            .any(|id| raw.get(*id).is_some())
            .then(|| FlowLimits {
                max_data: raw.get(WT_INITIAL_MAX_DATA).unwrap_or(0),
                max_streams_bidi: raw.get(WT_INITIAL_MAX_STREAMS_BIDI).unwrap_or(0),
                max_streams_uni: raw.get(WT_INITIAL_MAX_STREAMS_UNI).unwrap_or(0),
            });
        Self {
            datagrams: raw.get(H3_DATAGRAM) == Some(1) || raw.get(H3_DATAGRAM_DRAFT) == Some(1),
            max_field_section_size: raw.get(MAX_FIELD_SECTION_SIZE).unwrap_or(u64::MAX),
            dialect,
            max_sessions,
            flow_control,
            raw,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_rejects_duplicates_and_h2_ids() {
        let mut s = Settings::new();
        s.set(0x6, 100).set(0x21, 7);
        let mut wire = Vec::new();
        s.encode(&mut wire);
        assert_eq!(Settings::decode(&wire).unwrap(), s);
        let mut dup = wire.clone();
        dup.extend_from_slice(&[0x06, 0x01]);
        assert_eq!(
            Settings::decode(&dup).unwrap_err().code,
            code::H3_SETTINGS_ERROR
        );
        assert_eq!(
            Settings::decode(&[0x02, 0x00]).unwrap_err().code,
            code::H3_SETTINGS_ERROR
        );
        assert_eq!(
            Settings::decode(&[0x06]).unwrap_err().code,
            code::H3_FRAME_ERROR
        );
        assert_eq!(
            Settings::decode(&[0x06, 0x40]).unwrap_err().code,
            code::H3_FRAME_ERROR
        );
    }

    #[test]
    fn dialect_from_each_generation() {
        let mut chromium = Settings::new();
        chromium
            .set(H3_DATAGRAM, 1)
            .set(H3_DATAGRAM_DRAFT, 1)
            .set(ENABLE_WEBTRANSPORT_DRAFT02, 1);
        let p = PeerSettings::from_settings(chromium);
        assert_eq!(p.dialect, Some(Dialect::Draft02));
        assert!(p.datagrams);
        assert_eq!(p.max_sessions, 1);
        assert_eq!(p.flow_control, None);

        let mut latest = Settings::new();
        latest
            .set(WT_ENABLED, 1)
            .set(H3_DATAGRAM, 1)
            .set(WT_INITIAL_MAX_STREAMS_BIDI, 10);
        let p = PeerSettings::from_settings(latest);
        assert_eq!(p.dialect, Some(Dialect::Latest));
        assert_eq!(p.flow_control.unwrap().max_streams_bidi, 10);

        let p = PeerSettings::from_settings(Settings::new());
        assert_eq!(p.dialect, None);
        assert!(!p.datagrams);
    }
}
