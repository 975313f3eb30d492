//! Span export: a bounded queue that the request path never waits on, and one background task
//! that batches the queue and hands each batch to the OpenTelemetry SDK's OTLP exporter (gRPC
//! over tonic, or HTTP/protobuf over hyper). A collector that is down or slow costs dropped
//! spans, counted, and never a slow request.
//!
//! The collector comes from the Mesh's `tracing.collector`; `control/collector.rs` calls
//! `configure` after each config change. When the collector changes, the task for the old one
//! stops once it has sent what it holds (within the export timeout), and a new one starts.

use arc_swap::ArcSwapOption;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use trellis_config::model::{Collector, OtlpProtocol};

/// Spans waiting for export; past this, new spans are dropped (the SDK's default queue size).
const QUEUE: usize = 2048;
/// Spans per export call (the SDK's default batch size).
const BATCH: usize = 512;
/// How long a span waits for its batch to fill before the batch goes anyway.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// One export call, retries included, gives up after this.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// `trellis_trace_*`: what became of the spans this proxy recorded.
#[derive(Clone, Default)]
pub struct TraceMetrics {
    pub exported: Counter,
    pub dropped: Counter,
    pub errors: Counter,
}

impl TraceMetrics {
    pub fn register(registry: &mut Registry) -> TraceMetrics {
        let m = TraceMetrics::default();
        registry.register(
            "trellis_trace_spans_exported",
            "Spans the collector accepted",
            m.exported.clone(),
        );
        registry.register(
            "trellis_trace_spans_dropped",
            "Spans recorded but never delivered: the export queue was full, or the export that held them failed",
            m.dropped.clone(),
        );
        registry.register(
            "trellis_trace_export_errors",
            "Export calls to the collector that failed (each drops its whole batch)",
            m.errors.clone(),
        );
        m
    }
}

/// The queue to the current collector's export task, if the config names a collector.
#[derive(Default)]
pub struct Spans {
    sink: ArcSwapOption<Sink>,
}

struct Sink {
    collector: Collector,
    queue: mpsc::Sender<SpanData>,
    /// The export task; `flush` waits for it.
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Spans {
    /// Queues a finished span; never waits. A full queue, or no collector, drops it.
    pub fn send(&self, span: SpanData, metrics: &TraceMetrics) {
        let sink = self.sink.load();
        let sent = match sink.as_deref() {
            Some(s) => s.queue.try_send(span).is_ok(),
            None => false,
        };
        if !sent {
            metrics.dropped.inc();
        }
    }

    /// Points export at `collector` (or stops it), when that differs from the current one.
    pub fn configure(
        &self,
        collector: Option<&Collector>,
        resource: &Resource,
        metrics: &TraceMetrics,
    ) {
        let current = self.sink.load();
        if current.as_ref().map(|s| &s.collector) == collector {
            return;
        }
        let Some(collector) = collector else {
            tracing::info!("tracing: no collector configured; span export stopped");
            self.sink.store(None);
            return;
        };
        let exporter = match exporter(collector, resource) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(address = %collector.address, error = %e, "tracing: cannot build the OTLP exporter; spans are dropped");
                self.sink.store(None);
                return;
            }
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(
            exporter,
            rx,
            metrics.clone(),
            collector.address.clone(),
        ));
        tracing::info!(address = %collector.address, protocol = ?collector.protocol, "tracing: exporting spans over OTLP");
        // Dropping the old sender ends the old task once it has sent what it holds.
        self.sink.store(Some(Arc::new(Sink {
            collector: collector.clone(),
            queue: tx,
            task: std::sync::Mutex::new(Some(task)),
        })));
    }

    /// Sends what is queued and stops export, waiting at most `within`: the proxy's last
    /// requests, served while it drained, are not lost when it exits.
    pub async fn flush(&self, within: Duration) {
        let Some(sink) = self.sink.swap(None) else {
            return;
        };
        let task = (sink.task.lock().unwrap_or_else(|e| e.into_inner())).take();
        // The queue's sender goes with the sink: the task exports what is left and ends.
        drop(sink);
        if let Some(task) = task
            && tokio::time::timeout(within, task).await.is_err()
        {
            tracing::warn!(
                "tracing: the collector did not take the last spans in time; they are dropped"
            );
        }
    }
}

fn exporter(
    c: &Collector,
    resource: &Resource,
) -> Result<opentelemetry_otlp::SpanExporter, opentelemetry_otlp::ExporterBuildError> {
    let mut e = match c.protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(format!("http://{}", c.address))
            .with_timeout(EXPORT_TIMEOUT)
            .build()?,
        OtlpProtocol::Http => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("http://{}/v1/traces", c.address))
            .with_timeout(EXPORT_TIMEOUT)
            .build()?,
    };
    e.set_resource(resource);
    Ok(e)
}

/// Batches the queue into export calls until the queue's sender is gone.
async fn run(
    exporter: opentelemetry_otlp::SpanExporter,
    mut rx: mpsc::Receiver<SpanData>,
    metrics: TraceMetrics,
    address: String,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut failing = false;
    loop {
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            break;
        }
        // Wait for the batch to fill, but never hold a span longer than `FLUSH_EVERY`.
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        while batch.len() < BATCH {
            let room = BATCH - batch.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let n = batch.len() as u64;
        let spans = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
        match exporter.export(spans).await {
            Ok(()) => {
                metrics.exported.inc_by(n);
                if failing {
                    tracing::info!(%address, "tracing: the collector accepts spans again");
                    failing = false;
                }
            }
            Err(e) => {
                metrics.errors.inc();
                metrics.dropped.inc_by(n);
                // Once per outage, not once per batch; the counters keep the tally.
                if !failing {
                    tracing::warn!(%address, error = %e, spans = n, "tracing: span export failed; spans are dropped until the collector answers");
                    failing = true;
                }
            }
        }
    }
    let _ = exporter.shutdown();
}
