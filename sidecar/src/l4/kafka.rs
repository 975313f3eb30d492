//! Kafka's requests, seen as they pass through an opaque connection to a port whose Service
//! says `appProtocol: kafka`: per API key, requests, errors and latency, as Envoy's Kafka
//! broker filter counts them. Nothing is buffered or changed: the decoder (`kafka/decode.rs`)
//! only reads the bytes the copy forwards anyway.

pub(crate) mod decode;

use crate::telemetry::metrics::{KafkaMetrics, KafkaSeries, TcpLabels};
use decode::{Event, KafkaTap};

/// API keys with a slot in a connection's cache; higher ones share the `unknown` series.
const CACHED_KEYS: usize = 96;

/// One connection's decoder and the series it writes.
pub struct KafkaWatch<'a> {
    tap: KafkaTap,
    rec: Recorder<'a>,
}

/// The series of one connection, fetched once per API key so that a request costs no
/// lookup in the metric families.
struct Recorder<'a> {
    metrics: &'a KafkaMetrics,
    labels: &'a TcpLabels,
    series: Box<[Option<KafkaSeries>; CACHED_KEYS]>,
    unknown: Option<KafkaSeries>,
    /// The decoder gave up on this connection (it stopped looking like Kafka).
    lost: bool,
}

impl<'a> KafkaWatch<'a> {
    pub fn new(metrics: &'a KafkaMetrics, labels: &'a TcpLabels) -> KafkaWatch<'a> {
        KafkaWatch {
            tap: KafkaTap::new(),
            rec: Recorder {
                metrics,
                labels,
                series: Box::new([const { None }; CACHED_KEYS]),
                unknown: None,
                lost: false,
            },
        }
    }

    /// Bytes from the client toward the broker.
    pub fn client_bytes(&mut self, bytes: &[u8], now_nanos: u64) {
        if !self.rec.lost {
            (self.tap).client_bytes(bytes, now_nanos, &mut |e| self.rec.event(e, now_nanos));
        }
    }

    /// Bytes from the broker back to the client.
    pub fn broker_bytes(&mut self, bytes: &[u8], now_nanos: u64) {
        if !self.rec.lost {
            (self.tap).broker_bytes(bytes, now_nanos, &mut |e| self.rec.event(e, now_nanos));
        }
    }

    /// The connection closed: requests still unanswered count as errors, except Produce,
    /// which gets no answer at all under `acks=0` (the decoder does not read the body that
    /// says so).
    pub fn closed(mut self) {
        for head in self.tap.drain_in_flight() {
            if head.api_key != decode::PRODUCE {
                self.rec.series(head.api_key).errors.inc();
            }
        }
    }
}

impl Recorder<'_> {
    fn event(&mut self, e: Event, now_nanos: u64) {
        match e {
            Event::Request(head) => {
                self.series(head.api_key).requests.inc();
            }
            Event::Response(a) => {
                let s = self.series(a.request.api_key);
                let took = now_nanos.saturating_sub(a.sent_at);
                s.duration.observe(took as f64 / 1e9);
                if a.error_code.is_some_and(|c| c != 0) {
                    s.errors.inc();
                }
            }
            Event::Unmatched => {}
            Event::Lost => {
                self.lost = true;
                tracing::debug!(destination = %self.labels.destination_service, "stopped decoding Kafka on a connection: its bytes are not Kafka's framing");
            }
        }
    }

    fn series(&mut self, api_key: i16) -> &KafkaSeries {
        let (metrics, labels) = (self.metrics, self.labels);
        let name = decode::api_name(api_key);
        let slot = match usize::try_from(api_key) {
            Ok(i) if i < CACHED_KEYS && name != "unknown" => &mut self.series[i],
            _ => &mut self.unknown,
        };
        slot.get_or_insert_with(|| metrics.series(labels, name))
    }
}
