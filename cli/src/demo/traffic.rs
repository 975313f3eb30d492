//! Steady traffic through the gateway, as the passengers' phones would send it: ride
//! requests and driver lookups at a fixed rate, each answer counted by status.

use super::client::Http;
use http::Method;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the clients saw, cumulative.
#[derive(Debug, Clone, Default)]
pub struct ClientStats {
    pub sent: u64,
    pub ok: u64,
    /// By HTTP status; 0 means no answer within the client's timeout.
    pub by_status: BTreeMap<u16, u64>,
}

impl ClientStats {
    pub fn errors(&self) -> u64 {
        self.sent - self.ok
    }

    pub fn since(&self, earlier: &ClientStats) -> ClientStats {
        ClientStats {
            sent: self.sent - earlier.sent,
            ok: self.ok - earlier.ok,
            by_status: self
                .by_status
                .iter()
                .map(|(s, n)| (*s, n - earlier.by_status.get(s).copied().unwrap_or(0)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

/// The `n`th request of the passengers' mix (from 1): four ride bookings
/// (`POST /api/rides`) to one driver lookup (`GET /api/drivers`). The soak sends the same.
pub fn nth_request(n: u64) -> (Method, &'static str) {
    if n.is_multiple_of(5) {
        (Method::GET, "/api/drivers")
    } else {
        (Method::POST, "/api/rides")
    }
}

#[derive(Clone, Default)]
pub struct Traffic {
    stats: Arc<Mutex<ClientStats>>,
}

impl Traffic {
    pub fn snapshot(&self) -> ClientStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends `rps` requests a second to `gateway` until the task is dropped: four ride
    /// bookings (`POST /api/rides`) to one driver lookup (`GET /api/drivers`).
    pub async fn run(self, http: Http, gateway: SocketAddr, rps: u32) {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rps.max(1))));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            n += 1;
            let (method, path) = nth_request(n);
            let (http, stats) = (http.clone(), self.stats.clone());
            tokio::spawn(async move {
                let status = http
                    .send(
                        method,
                        gateway,
                        "rides.example.com",
                        path,
                        Duration::from_secs(5),
                    )
                    .await
                    .map_or(0, |a| a.status.as_u16());
                let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
                s.sent += 1;
                if (200..400).contains(&status) {
                    s.ok += 1;
                }
                *s.by_status.entry(status).or_default() += 1;
            });
        }
    }
}
