//! Connection slots (SPEC §5, §8): the process-wide `max_connections`, taken when a client is
//! accepted, and `max_connections_per_session`, taken when a connection first proves a session.
//!
//! A session at its limit gets `429 too-many-connections` on its new connection, which then
//! closes: the refused client holds no slot for long, and one sandbox opening connections without
//! end never takes the slots another needs. The implicit session (no `[[sessions]]`) is the whole
//! proxy: only `max_connections` bounds it.

use std::sync::{Arc, Mutex, PoisonError};

use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ProxyError;

/// The per-session limits, shared by all connections.
#[derive(Debug)]
pub struct SessionSlots {
    limit: usize,
    by_session: DashMap<Box<str>, Arc<Semaphore>>,
}

impl SessionSlots {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            by_session: DashMap::new(),
        }
    }

    fn semaphore(&self, session: &str) -> Arc<Semaphore> {
        if let Some(s) = self.by_session.get(session) {
            return s.clone();
        }
        self.by_session
            .entry(session.into())
            .or_insert_with(|| Arc::new(Semaphore::new(self.limit)))
            .clone()
    }
}

/// The slots one client connection (and the tunnel it may become) holds until it closes.
#[derive(Debug)]
pub struct Slots {
    _global: OwnedSemaphorePermit,
    sessions: Mutex<Vec<(Box<str>, OwnedSemaphorePermit)>>,
}

impl Slots {
    pub fn new(global: OwnedSemaphorePermit) -> Self {
        Self {
            _global: global,
            sessions: Mutex::new(Vec::new()),
        }
    }

    /// Counts this connection against `session` (once, however many requests it carries).
    pub fn admit(&self, session: &str, all: &SessionSlots) -> Result<(), ProxyError> {
        if session == crate::session::IMPLICIT {
            return Ok(());
        }
        let mut held = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if held.iter().any(|(id, _)| **id == *session) {
            return Ok(());
        }
        let permit = all.semaphore(session).try_acquire_owned().map_err(|_| {
            ProxyError::TooManyConnections {
                session: session.to_string(),
            }
        })?;
        held.push((session.into(), permit));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(global: &Arc<Semaphore>) -> Slots {
        Slots::new(global.clone().try_acquire_owned().unwrap())
    }

    #[test]
    fn a_session_at_its_limit_is_refused_and_others_are_not() {
        let global = Arc::new(Semaphore::new(10));
        let all = SessionSlots::new(2);
        let (a, b, c) = (
            connection(&global),
            connection(&global),
            connection(&global),
        );
        a.admit("sesn_a", &all).unwrap();
        a.admit("sesn_a", &all).unwrap();
        b.admit("sesn_a", &all).unwrap();
        assert!(matches!(
            c.admit("sesn_a", &all),
            Err(ProxyError::TooManyConnections { .. })
        ));
        c.admit("sesn_b", &all).unwrap();
        drop(a);
        connection(&global).admit("sesn_a", &all).unwrap();
    }
}
