//! Security metrics: the certificate's expiry, rotations, refused handshakes and denials.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    pub direction: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenyLabels {
    pub destination_service: Arc<String>,
    /// `namespace/name` of the DENY policy that matched, or `no-allow-match`.
    pub policy: Arc<String>,
}

#[derive(Default)]
pub struct SecurityMetrics {
    pub cert_expiry: Gauge,
    pub renewals: Family<ResultLabel, Counter>,
    pub handshake_errors: Family<HandshakeLabels, Counter>,
    pub denied: Family<DenyLabels, Counter>,
}

impl SecurityMetrics {
    pub fn register(registry: &mut Registry) -> SecurityMetrics {
        let m = SecurityMetrics::default();
        registry.register(
            "trellis_identity_certificate_expiry_timestamp_seconds",
            "When the proxy's mesh certificate expires (Unix seconds); 0 before the first one",
            m.cert_expiry.clone(),
        );
        registry.register(
            "trellis_identity_certificate_renewals",
            "Certify calls, by result (issued or failed)",
            m.renewals.clone(),
        );
        registry.register(
            "trellis_tls_handshake_errors",
            "Connections refused before any request: plaintext under STRICT, failed or timed-out handshakes",
            m.handshake_errors.clone(),
        );
        registry.register(
            "trellis_authorization_denied",
            "Requests and connections refused by an AuthorizationPolicy",
            m.denied.clone(),
        );
        m
    }
}
