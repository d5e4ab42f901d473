//! A registry of live sessions in named groups, with broadcast.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tern_async::{Session, SessionId};

use crate::util::lock;

/// Sessions in named groups (chat rooms, topics), shared by handlers. Cheap to clone; every clone is the
/// same registry.
///
/// Sessions leave every group automatically: [`ServerApp`](crate::ServerApp) removes a session from its
/// registry when its handler returns, and closed sessions are dropped from a group whenever the group is
/// read or broadcast to. The registry holds a clone of each session, so a member stays open until it is
/// removed (or closed by either side).
#[derive(Clone, Default)]
pub struct Registry {
    groups: Arc<Mutex<HashMap<String, HashMap<SessionId, Session>>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let groups = lock(&self.groups);
        f.debug_map()
            .entries(groups.iter().map(|(k, v)| (k, v.len())))
            .finish()
    }
}

/// What a broadcast did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BroadcastReport {
    /// Sessions the message was handed to (datagrams: queued; streams: written and finished).
    pub delivered: usize,
    /// Sessions it could not be given to (closed, full datagram queue, stream error).
    pub failed: usize,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `session` to `group` (adding twice does nothing).
    pub fn join(&self, group: &str, session: &Session) {
        lock(&self.groups)
            .entry(group.to_string())
            .or_default()
            .insert(session.id(), session.clone());
    }

    /// Removes `session` from `group`.
    pub fn leave(&self, group: &str, session: &Session) {
        self.remove_from(group, session.id());
    }

    fn remove_from(&self, group: &str, id: SessionId) {
        let mut groups = lock(&self.groups);
        if let Some(g) = groups.get_mut(group) {
            g.remove(&id);
            if g.is_empty() {
                groups.remove(group);
            }
        }
    }

    /// Removes the session from every group.
    pub fn remove(&self, id: SessionId) {
        let mut groups = lock(&self.groups);
        groups.retain(|_, g| {
            g.remove(&id);
            !g.is_empty()
        });
    }

    /// The open sessions of `group` (closed ones are removed on the way).
    pub fn members(&self, group: &str) -> Vec<Session> {
        let mut groups = lock(&self.groups);
        let Some(g) = groups.get_mut(group) else {
            return Vec::new();
        };
        g.retain(|_, s| s.close_reason().is_none());
        let members: Vec<Session> = g.values().cloned().collect();
        if g.is_empty() {
            groups.remove(group);
        }
        members
    }

    /// How many open sessions `group` has.
    pub fn len(&self, group: &str) -> usize {
        self.members(group).len()
    }

    /// The names of the groups with members.
    pub fn groups(&self) -> Vec<String> {
        lock(&self.groups).keys().cloned().collect()
    }

    /// Sends `data` as a datagram to every member of `group`. Never waits: a session that closed or whose
    /// queue is full counts as failed.
    pub fn broadcast_datagram(&self, group: &str, data: &[u8]) -> BroadcastReport {
        let mut report = BroadcastReport::default();
        for s in self.members(group) {
            match s.send_datagram(data) {
                Ok(()) => report.delivered += 1,
                Err(e) => {
                    log::debug!("broadcast datagram to {:?} failed: {e}", s.id());
                    report.failed += 1;
                }
            }
        }
        report
    }

    /// Sends `data` on a new unidirectional stream (opened, written, finished) to every member of `group`,
    /// all at once. A member that dies on the way counts as failed; the others are not affected. Each write
    /// waits for that peer's flow control, so a peer that never reads delays the report (bound it with your
    /// runtime's timeout).
    pub async fn broadcast_stream(&self, group: &str, data: Bytes) -> BroadcastReport {
        let sends = self.members(group).into_iter().map(|s| {
            let data = data.clone();
            async move {
                let result = async {
                    let mut send = s.open_uni().await.map_err(|e| e.to_string())?;
                    send.write_chunk(data).await.map_err(|e| e.to_string())?;
                    send.finish().map_err(|e| e.to_string())
                }
                .await;
                if let Err(e) = &result {
                    log::debug!("broadcast stream to {:?} failed: {e}", s.id());
                }
                result.is_ok()
            }
        });
        let results = futures_util::future::join_all(sends).await;
        let delivered = results.iter().filter(|ok| **ok).count();
        BroadcastReport {
            delivered,
            failed: results.len() - delivered,
        }
    }
}
