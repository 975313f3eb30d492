//! `trellis-control --kubernetes`: kube runtime reflectors over Services, EndpointSlices,
//! Pods, HTTPRoutes, GRPCRoutes, Gateways and the trellis.dev kinds, translated into the same
//! `MeshConfig` as file mode and applied through the same path.

pub mod ca;
pub(crate) mod cluster;
pub mod in_cluster;
pub(crate) mod kinds;
pub(crate) mod shift;
pub mod status;
pub mod token_review;
pub mod translate;
pub(crate) mod watch;

use crate::state::ControlPlane;
use kube::Client;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use watch::Watches;

/// Events closer together than this are applied as one change.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Applies the cluster to the control plane now and after every change, until dropped, and
/// keeps the Gateway API objects' status up to date with what was applied.
pub(crate) async fn run(cp: Arc<ControlPlane>, watches: Watches, client: Client) {
    watches.first_sync().await;
    let (wanted, rx) = tokio::sync::watch::channel(Vec::new());
    let _writer = AbortOnDrop(tokio::spawn(status::write(client, rx)));
    let mut translator = translate::Translator::default();
    // What the last status pass was computed from: most changes are EndpointSlices and
    // Pods, which no status depends on.
    let mut status_inputs = None;
    loop {
        let state = watches.state();
        let t = translator.translate(&state, cp.loader());
        match t.config {
            Ok(cfg) => {
                // A listener certificate that cannot serve is that listener's condition,
                // and a refused object in `trellis status`; the rest applies.
                let now = trellis_identity::cert::unix_now();
                let certs = trellis_config::gateway_tls::resolve(&cfg, now).problems;
                let refused = (t.held_back.values().flat_map(|h| h.errors.clone()))
                    .chain(certs.iter().map(|p| p.error.clone()));
                cp.apply_partial(
                    "kubernetes",
                    cfg,
                    trellis_config::ConfigErrors(refused.collect()),
                );
                let inputs = status::Inputs::of(&state, &t.held_back, &certs);
                if status_inputs.as_ref() != Some(&inputs) {
                    let patches = status::patches(&state, &t.held_back, &certs, &status::now());
                    wanted.send_if_modified(|w| {
                        let changed = *w != patches;
                        *w = patches;
                        changed
                    });
                    status_inputs = Some(inputs);
                }
            }
            // The whole change is refused; the previous config and statuses stand.
            Err(e) => {
                let _ = cp.apply("kubernetes", Err(e));
            }
        }
        watches.changed.notified().await;
        tokio::time::sleep(DEBOUNCE).await;
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
