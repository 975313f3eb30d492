//! One request's span: what is known when it starts (ids, method, target, peer) and what is
//! learnt by its end (route, cluster, endpoint, status, the stack's events), as the SDK's
//! `SpanData` for the OTLP exporter. Attribute names follow the OpenTelemetry HTTP semantic
//! conventions; the mesh's own are under `trellis.`.

use crate::http::exchange::Notes;
use crate::telemetry::trace::SpanIds;
use http::uri::Authority;
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
    authority: Option<Authority>,
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
        let user_agent = (h.get(http::header::USER_AGENT))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let authority = req.uri().authority().cloned().or_else(|| {
            let host = h.get(http::header::HOST)?;
            Authority::try_from(host.as_bytes()).ok()
        });
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
            authority,
            user_agent,
            version: req.version(),
            peer,
            own_identity,
            peer_identity: None,
            endpoint_identity: None,
            notes: Notes::default(),
        }
    }

    pub fn finish(self, o: &Outcome<'_>) -> SpanData {
        // `KeyValue::new` keeps a `&'static str` value by reference, and takes a `String`.
        let mut a = Vec::with_capacity(24);
        a.push(KeyValue::new(
            "http.request.method",
            method_value(&self.method),
        ));
        let authority = self.authority.as_ref();
        if self.kind == SpanKind::Client {
            let shown = authority.map_or("", Authority::as_str);
            a.push(KeyValue::new(
                "url.full",
                format!("http://{shown}{}", self.target),
            ));
        } else {
            match self.target.split_once('?') {
                Some((p, q)) => {
                    a.push(KeyValue::new("url.path", p.to_string()));
                    a.push(KeyValue::new("url.query", q.to_string()));
                }
                None => a.push(KeyValue::new("url.path", self.target.clone())),
            }
            a.push(KeyValue::new("url.scheme", "http"));
        }
        if let Some(auth) = authority {
            // IPv6 hosts without their brackets.
            let host = auth.host().trim_matches(['[', ']']).to_string();
            a.push(KeyValue::new("server.address", host));
            if let Some(p) = auth.port_u16() {
                a.push(KeyValue::new("server.port", i64::from(p)));
            }
        }
        if let Some(route) = o.http_route {
            a.push(KeyValue::new("http.route", route.to_string()));
        }
        a.push(KeyValue::new(
            "network.protocol.version",
            protocol_version(self.version),
        ));
        if let Some(ua) = self.user_agent {
            a.push(KeyValue::new("user_agent.original", ua));
        }
        // The other end of this hop: the caller on a server span (also its
        // `client.address`), the endpoint on a client span.
        if self.kind == SpanKind::Client {
            if let Some(e) = o.endpoint {
                a.push(KeyValue::new("network.peer.address", e.ip().to_string()));
            }
        } else {
            let caller: opentelemetry::StringValue = self.peer.ip().to_string().into();
            a.push(KeyValue::new("client.address", caller.clone()));
            a.push(KeyValue::new("network.peer.address", caller));
        }
        a.push(KeyValue::new("trellis.direction", o.direction));
        // A label the metrics must fill ("unknown") says nothing on a span: left out.
        for (k, v) in [
            ("trellis.source.workload", o.source_workload),
            ("trellis.source.namespace", o.source_namespace),
            ("trellis.destination.service", o.destination),
            ("trellis.route", o.route),
        ] {
            if v != "unknown" {
                a.push(KeyValue::new(k, v.to_string()));
            }
        }
        if let Some(c) = o.cluster {
            a.push(KeyValue::new("trellis.cluster", c.to_string()));
        }
        if let Some(e) = o.endpoint {
            a.push(KeyValue::new("trellis.endpoint", e.to_string()));
        }
        let (source_id, dest_id) = match self.kind {
            SpanKind::Client => (
                self.own_identity,
                self.endpoint_identity.map(opentelemetry::Value::from),
            ),
            _ => (
                self.peer_identity,
                self.own_identity.map(opentelemetry::Value::from),
            ),
        };
        if let Some(id) = source_id {
            a.push(KeyValue::new("trellis.source.identity", id));
        }
        if let Some(id) = dest_id {
            a.push(KeyValue::new("trellis.destination.identity", id));
        }
        if let Some(code) = o.trellis_error {
            a.push(KeyValue::new("trellis.error", code.to_string()));
        }
        a.push(KeyValue::new(
            "http.response.status_code",
            i64::from(o.status),
        ));
        let notes = self.notes.take();
        if self.kind == SpanKind::Client {
            let retries = notes.iter().filter(|n| n.name == "retry").count();
            a.push(KeyValue::new("trellis.retry.attempts", retries as i64));
        }
        let attributes = a;
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
    static SCOPE: OnceLock<InstrumentationScope> = OnceLock::new();
    (SCOPE.get_or_init(|| {
        InstrumentationScope::builder("trellis-proxy")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build()
    }))
    .clone()
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
