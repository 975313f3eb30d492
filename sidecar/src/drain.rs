//! The drain: set once, on SIGTERM or `POST /drain`. Every listener stops accepting when it
//! is set and gives open connections `limits.drainTimeout` to finish their requests. Opaque
//! connections (a broker's consumer, a database session) are counted here, so that the drain
//! waits for them too.

use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{Notify, watch};

/// Set once, on SIGTERM or `POST /drain`; every listener watches it.
pub struct Drain {
    tx: watch::Sender<bool>,
    /// Opaque connections open now, on every listener.
    opaque: AtomicUsize,
    /// Notified when `opaque` falls to zero.
    opaque_gone: Notify,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            tx: watch::channel(false).0,
            opaque: AtomicUsize::new(0),
            opaque_gone: Notify::new(),
        }
    }
}

/// One open opaque connection, counted until it is dropped.
pub struct OpaqueOpen<'a>(&'a Drain);

impl Drop for OpaqueOpen<'_> {
    fn drop(&mut self) {
        if self.0.opaque.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.opaque_gone.notify_waiters();
        }
    }
}

impl Drain {
    /// Counts an opaque connection as open until the guard is dropped.
    pub fn opaque_open(&self) -> OpaqueOpen<'_> {
        self.opaque.fetch_add(1, Ordering::AcqRel);
        OpaqueOpen(self)
    }

    /// Resolves once no opaque connection is open.
    pub async fn opaque_closed(&self) {
        loop {
            let gone = self.opaque_gone.notified();
            tokio::pin!(gone);
            gone.as_mut().enable();
            if self.opaque.load(Ordering::Acquire) == 0 {
                return;
            }
            gone.await;
        }
    }
}

impl Drain {
    pub fn start(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once draining has begun.
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }
}
