//! The drain: set once, on SIGTERM or `POST /drain`. Every listener stops accepting when it
//! is set and gives open connections `limits.drainTimeout` to finish their requests.

use tokio::sync::watch;

/// Set once, on SIGTERM or `POST /drain`; every listener watches it.
pub struct Drain {
    tx: watch::Sender<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            tx: watch::channel(false).0,
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
