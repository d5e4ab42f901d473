//! The trace of a simulation and its hash.

use std::fmt::Write;
use std::time::Duration;

use crate::net::PacketRecord;

/// An app-visible event in the trace: an endpoint event (its `Debug` form) or an application's own
/// record ([`Sim::record`](crate::Sim::record)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    /// Virtual time of the event.
    pub at: Duration,
    /// Index of the host ([`HostId`](crate::HostId)`.0`).
    pub host: usize,
    /// What happened.
    pub what: String,
}

/// Events recorded by a simulation (packets are kept by the [`Network`](crate::Network)).
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// App-visible events in order.
    pub events: Vec<TraceEvent>,
}

impl Trace {
    /// One line per packet and per event, the text the hash is computed over.
    pub fn canonical(&self, packets: &[PacketRecord]) -> String {
        let mut out = String::new();
        for p in packets {
            let _ = writeln!(
                out,
                "p {} {:?} {} {} {} {} {} {}",
                p.id,
                p.copy_of,
                p.sent.as_micros(),
                p.delivered.map_or(-1, |d| d.as_micros() as i128),
                p.src,
                p.dst,
                p.size,
                p.fate
            );
        }
        for e in &self.events {
            let _ = writeln!(out, "e {} {} {}", e.at.as_micros(), e.host, e.what);
        }
        out
    }

    /// A hex digest (the first 8 bytes of SHA-256) of [`canonical`](Self::canonical).
    pub fn hash(&self, packets: &[PacketRecord]) -> String {
        let d = ring::digest::digest(&ring::digest::SHA256, self.canonical(packets).as_bytes());
        d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}
