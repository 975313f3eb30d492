//! One endpoint's idle HTTP/1.1 connections, and the lease that puts a connection back among
//! them once the response it carried has been read to its end.
//!
//! The list has a lock of its own, per endpoint: no two endpoints (and no two clusters)
//! ever wait on each other. The lease lives in the response body (`Body::Leased`), because
//! an HTTP/1.1 connection is free again only when its response body has been read.

use hyper::client::conn::http1::SendRequest;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

/// Idle connections kept per endpoint; a connection returned beyond this is closed. Far
/// above what one caller keeps busy against one endpoint, and a bound on descriptors.
const MAX_IDLE: usize = 512;

/// One endpoint's idle HTTP/1.1 connections, the most recently used last. `B` is the
/// request body type (`Body`; generic only so that `body.rs` can hold a `Lease`).
pub struct IdleConns<B> {
    conns: Mutex<Vec<Idle<B>>>,
}

/// An idle connection, and since when.
pub struct Idle<B> {
    pub tx: SendRequest<B>,
    pub since: Instant,
}

impl<B> Default for IdleConns<B> {
    fn default() -> Self {
        IdleConns {
            conns: Mutex::new(Vec::new()),
        }
    }
}

impl<B> IdleConns<B> {
    /// The most recently returned connection that is still open. Closed ones found on the
    /// way are dropped.
    pub fn take(&self) -> Option<Idle<B>> {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(c) = conns.pop() {
            if !c.tx.is_closed() {
                return Some(c);
            }
        }
        None
    }

    /// Returns a connection whose response has ended.
    pub fn put(&self, tx: SendRequest<B>) {
        if tx.is_closed() {
            return;
        }
        let idle = Idle {
            tx,
            since: Instant::now(),
        };
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        if conns.len() < MAX_IDLE {
            conns.push(idle);
        }
    }

    /// Closes the connections idle for `idle_for` or longer, and those the upstream closed.
    /// Returns how many stay open.
    pub fn expire(&self, idle_for: Duration) -> usize {
        let now = Instant::now();
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        conns.retain(|c| !c.tx.is_closed() && now.duration_since(c.since) < idle_for);
        conns.len()
    }

    /// How many idle connections are held.
    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// A connection on loan to one response. Dropped after the response's body ended, it goes
/// back to its endpoint's idle list; dropped before (the client went away mid-body), it is
/// closed, since the rest of that body would still be on the wire. An endpoint that left
/// the config meanwhile takes nothing back: its list is gone, and the connection closes.
pub struct Lease<B> {
    tx: Option<SendRequest<B>>,
    home: Weak<IdleConns<B>>,
    ended: bool,
}

impl<B> Lease<B> {
    pub fn new(tx: SendRequest<B>, home: &Arc<IdleConns<B>>, ended: bool) -> Lease<B> {
        Lease {
            tx: Some(tx),
            home: Arc::downgrade(home),
            ended,
        }
    }

    /// The response body has been read to its end.
    pub fn end(&mut self) {
        self.ended = true;
    }
}

impl<B> Drop for Lease<B> {
    fn drop(&mut self) {
        if self.ended
            && let Some(tx) = self.tx.take()
            && let Some(home) = self.home.upgrade()
        {
            home.put(tx);
        }
    }
}
