//! Keeps span export pointed at the collector that the current config names
//! (`telemetry/export.rs`), for the proxy's life.

use crate::shared::Shared;
use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;
use std::sync::Arc;

/// Reconfigures export after each config change. The spans' resource names this workload:
/// `service.name` is its `app` label (else its name), as the Services that select it use.
pub async fn run(shared: Arc<Shared>) {
    let w = &shared.bootstrap.workload;
    let service = w.labels.get("app").unwrap_or(&w.name).clone();
    let resource = Resource::builder_empty()
        .with_service_name(service)
        .with_attributes([
            KeyValue::new("service.namespace", w.namespace.clone()),
            KeyValue::new("service.instance.id", w.name.clone()),
        ])
        .build();
    let mut changed = shared.config.subscribe();
    loop {
        let rt = shared.config.current_full();
        let collector = rt
            .as_ref()
            .and_then(|rt| rt.snapshot.mesh.tracing.collector.as_ref());
        shared
            .spans
            .configure(collector, &resource, &shared.metrics.trace);
        drop(rt);
        if changed.changed().await.is_err() {
            return;
        }
    }
}
