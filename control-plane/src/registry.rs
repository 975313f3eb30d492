//! The proxies that are connected (or were, within the grace period): who they are, what
//! they were sent, and what they ACKed or NACKed. This is what `trellis status` shows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime};
use trellis_config::NodeIdentity;
use trellis_proto::v1::Node;

#[derive(Clone)]
pub struct ProxyEntry {
    pub node: Node,
    pub identity: NodeIdentity,
    /// The Gateway (`namespace/name`) whose certificates the proxy proved it may hold.
    pub gateway: Option<String>,
    /// The discovery protocol it speaks, which decides what it is sent.
    pub protocol: u32,
    pub connected: bool,
    pub connected_since: SystemTime,
    pub disconnected_at: Option<Instant>,
    pub latest_version: String,
    pub acked_version: String,
    pub last_nack: Option<(String, String)>,
}

#[derive(Default)]
pub struct Registry {
    next_id: AtomicU64,
    entries: Mutex<HashMap<u64, ProxyEntry>>,
}

impl Registry {
    pub fn lock(&self) -> MutexGuard<'_, HashMap<u64, ProxyEntry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a connected proxy; an earlier entry of the same workload (a reconnect within the
    /// grace period) is replaced. Returns the new entry's id.
    pub fn connect(
        &self,
        node: Node,
        identity: NodeIdentity,
        gateway: Option<String>,
        protocol: u32,
    ) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.lock();
        entries.retain(|_, e| {
            !(e.node.workload == node.workload
                && e.node.namespace == node.namespace
                && !e.connected)
        });
        entries.insert(
            id,
            ProxyEntry {
                node,
                identity,
                gateway,
                protocol,
                connected: true,
                connected_since: SystemTime::now(),
                disconnected_at: None,
                latest_version: String::new(),
                acked_version: String::new(),
                last_nack: None,
            },
        );
        id
    }

    pub fn disconnect(&self, id: u64) {
        if let Some(e) = self.lock().get_mut(&id) {
            e.connected = false;
            e.disconnected_at = Some(Instant::now());
        }
    }

    /// Forgets the proxies disconnected for longer than `grace`, and returns who they were.
    pub fn expire(&self, grace: std::time::Duration) -> Vec<NodeIdentity> {
        let mut gone = Vec::new();
        self.lock().retain(|_, e| {
            let keep = e.disconnected_at.is_none_or(|t| t.elapsed() < grace);
            if !keep {
                gone.push(e.identity.clone());
            }
            keep
        });
        gone
    }

    pub fn update(&self, id: u64, f: impl FnOnce(&mut ProxyEntry)) {
        if let Some(e) = self.lock().get_mut(&id) {
            f(e);
        }
    }

    pub fn snapshot_with_ids(&self) -> Vec<(u64, ProxyEntry)> {
        self.lock().iter().map(|(id, e)| (*id, e.clone())).collect()
    }

    pub fn snapshot(&self) -> Vec<ProxyEntry> {
        let mut v: Vec<ProxyEntry> = self.lock().values().cloned().collect();
        v.sort_by(|a, b| {
            (&a.node.namespace, &a.node.workload).cmp(&(&b.node.namespace, &b.node.workload))
        });
        v
    }
}
