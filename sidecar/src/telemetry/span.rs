//! One request's span: what is known when it starts (ids, method, target, peer) and what is
//! learnt by its end (route, cluster, endpoint, status, the stack's events), as the SDK's
//! `SpanData` for the OTLP exporter. Attribute names follow the OpenTelemetry HTTP semantic
//! conventions; the mesh's own are under `trellis.`.

use crate::http::exchange::Notes;
use crate::telemetry::trace::SpanIds;
use http::{Method, Request, Version};
use opentelemetry::trace::{
    Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

/// A span in progress. Boxed in the observation, so an untraced request carries one pointer.
pub struct SpanRecord {
    ids: SpanIds,
    kind: SpanKind,
    start: SystemTime,
    method: Method,
    target: String,
    authority: Option<String>,
    user_agent: Option<String>,
    version: Version,
    peer: SocketAddr,
    /// This proxy's SPIFFE ID, and the caller's on inbound.
    own_identity: Option<String>,
    pub peer_identity: Option<String>,
    /// Outbound: the SPIFFE ID the chosen endpoint had to prove.
    pub endpoint_identity: Option<Arc<str>>,
    pub notes: Notes,
}

/// What the span ends with, from the observation.
pub struct Outcome<'a> {
    pub direction: &'static str,
    pub status: u16,
    pub trellis_error: Option<&'a str>,
    pub error: Option<&'a str>,
    pub destination: &'a str,
    pub route: &'a str,
    /// The matched rule's path prefix: `http.route`.
    pub http_route: Option<&'a str>,
    pub cluster: Option<&'a str>,
    pub endpoint: Option<SocketAddr>,
    pub source_workload: &'a str,
    pub source_namespace: &'a str,
}

impl SpanRecord {
    pub fn start<B>(
        ids: SpanIds,
        direction: &'static str,
        started: SystemTime,
        req: &Request<B>,
        peer: SocketAddr,
        own_identity: Option<String>,
    ) -> SpanRecord {
        let h = req.headers();
        let text = |name| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        SpanRecord {
            ids,
            kind: match direction {
                "outbound" => SpanKind::Client,
                _ => SpanKind::Server,
            },
            start: started,
            method: req.method().clone(),
            target: (req.uri().path_and_query())
                .map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string()),
            authority: (req.uri().authority().map(|a| a.to_string()))
                .or_else(|| text(http::header::HOST)),
            user_agent: text(http::header::USER_AGENT),
            version: req.version(),
            peer,
            own_identity,
            peer_identity: None,
            endpoint_identity: None,
            notes: Notes::default(),
        }
    }

    pub fn finish(self, o: &Outcome<'_>) -> SpanData {
        let mut a = Vec::with_capacity(24);
        // Values that are `&'static str` are not copied (OpenTelemetry keeps them by reference).
        let mut kv = |k: &'static str, v: opentelemetry::Value| a.push(KeyValue::new(k, v));
        let st = |v: &'static str| opentelemetry::Value::from(v);
        let owned = |v: String| opentelemetry::Value::from(v);
        let (host, port) = split_authority(self.authority.as_deref());
        kv("http.request.method", method_value(&self.method));
        if self.kind == SpanKind::Client {
            let authority = self.authority.as_deref().unwrap_or("");
            kv(
                "url.full",
                owned(format!("http://{authority}{}", self.target)),
            );
        } else {
            match self.target.split_once('?') {
                Some((p, q)) => {
                    kv("url.path", owned(p.to_string()));
                    kv("url.query", owned(q.to_string()));
                }
                None => kv("url.path", owned(self.target.clone())),
            }
            kv("url.scheme", st("http"));
            kv("client.address", owned(self.peer.ip().to_string()));
        }
        if let Some(h) = host {
            kv("server.address", owned(h));
        }
        if let Some(route) = o.http_route {
            kv("http.route", owned(route.to_string()));
        }
        kv(
            "network.protocol.version",
            st(protocol_version(self.version)),
        );
        if let Some(ua) = self.user_agent {
            kv("user_agent.original", owned(ua));
        }
        // The other end of this hop: the caller on a server span, the endpoint on a client
        // span.
        let other = if self.kind == SpanKind::Client {
            o.endpoint
        } else {
            Some(self.peer)
        };
        if let Some(p) = other {
            kv("network.peer.address", owned(p.ip().to_string()));
        }
        kv("trellis.direction", st(o.direction));
        // A label the metrics must fill ("unknown") says nothing on a span: left out.
        for (k, v) in [
            ("trellis.source.workload", o.source_workload),
            ("trellis.source.namespace", o.source_namespace),
            ("trellis.destination.service", o.destination),
            ("trellis.route", o.route),
        ] {
            if v != "unknown" {
                kv(k, owned(v.to_string()));
            }
        }
        if let Some(c) = o.cluster {
            kv("trellis.cluster", owned(c.to_string()));
        }
        if let Some(e) = o.endpoint {
            kv("trellis.endpoint", owned(e.to_string()));
        }
        let (source_id, dest_id) = match self.kind {
            SpanKind::Client => (
                self.own_identity,
                self.endpoint_identity.map(opentelemetry::Value::from),
            ),
            _ => (self.peer_identity, self.own_identity.map(owned)),
        };
        if let Some(id) = source_id {
            kv("trellis.source.identity", owned(id));
        }
        if let Some(id) = dest_id {
            kv("trellis.destination.identity", id);
        }
        if let Some(code) = o.trellis_error {
            kv("trellis.error", owned(code.to_string()));
        }
        let notes = self.notes.take();
        let retries = notes.iter().filter(|n| n.name == "retry").count();
        let mut attributes = a;
        attributes.push(KeyValue::new(
            "http.response.status_code",
            i64::from(o.status),
        ));
        if let Some(p) = port {
            attributes.push(KeyValue::new("server.port", i64::from(p)));
        }
        if self.kind == SpanKind::Client {
            attributes.push(KeyValue::new("trellis.retry.attempts", retries as i64));
        }
        let mut span_events = SpanEvents::default();
        span_events.events = notes
            .into_iter()
            .map(|n| {
                Event::new(
                    n.name,
                    n.at,
                    n.attrs
                        .into_iter()
                        .map(|(k, v)| KeyValue::new(k, v))
                        .collect(),
                    0,
                )
            })
            .collect();
        // Server spans fail on 5xx only; client spans on 4xx too (HTTP semantic conventions).
        // A proxy's own answer always fails the span, with its code.
        let failed = o.trellis_error.is_some()
            || o.status >= 500
            || (self.kind == SpanKind::Client && o.status >= 400);
        let status = if failed {
            let why = match (o.trellis_error, o.error) {
                (Some(code), Some(e)) => format!("{code}: {e}"),
                (Some(code), None) => code.to_string(),
                (None, _) => format!("HTTP {}", o.status),
            };
            Status::error(why)
        } else {
            Status::Unset
        };
        let name = match o.http_route {
            Some(r) => format!("{} {r}", self.method),
            None => self.method.to_string(),
        };
        SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(self.ids.trace_id.to_be_bytes()),
                SpanId::from_bytes(self.ids.span_id.to_be_bytes()),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: self
                .ids
                .parent
                .map_or(SpanId::INVALID, |p| SpanId::from_bytes(p.to_be_bytes())),
            parent_span_is_remote: self.ids.parent.is_some(),
            span_kind: self.kind,
            name: Cow::Owned(name),
            start_time: self.start,
            end_time: SystemTime::now(),
            attributes,
            dropped_attributes_count: 0,
            events: span_events,
            links: SpanLinks::default(),
            status,
            instrumentation_scope: scope(),
        }
    }
}

fn scope() -> InstrumentationScope {
    static SCOPE: OnceLock<Arc<InstrumentationScope>> = OnceLock::new();
    let s = SCOPE.get_or_init(|| {
        Arc::new(
            InstrumentationScope::builder("trellis-proxy")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        )
    });
    (**s).clone()
}

/// The method as a value; the standard ones are not copied.
fn method_value(m: &Method) -> opentelemetry::Value {
    let s: &'static str = match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => return opentelemetry::Value::from(m.as_str().to_string()),
    };
    opentelemetry::Value::from(s)
}

fn protocol_version(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// `host[:port]`, with IPv6 brackets removed from the host.
fn split_authority(a: Option<&str>) -> (Option<String>, Option<u16>) {
    let Some(a) = a else {
        return (None, None);
    };
    let (host, port) = match a.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !p.contains(']') => (h, p.parse().ok()),
        _ => (a, None),
    };
    (Some(host.trim_matches(['[', ']']).to_string()), port)
}
