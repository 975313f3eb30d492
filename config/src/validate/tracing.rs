//! The Mesh's `tracing` settings and the sampling annotations of Services and Gateways.

use super::origin::Origin;
use crate::error::ConfigErrors;
use crate::mesh_config::{Doc, MeshConfig};
use crate::model::{TRACE_SAMPLING_ANNOTATION, parse_sampling_percentage};

pub(super) fn check_tracing(cfg: &MeshConfig, errs: &mut ConfigErrors) {
    if let Some(m) = &cfg.mesh {
        let t = &m.object.spec.tracing;
        let c = Origin::new(m);
        if !(0.0..=100.0).contains(&t.sampling_percentage) {
            c.doc(
                errs,
                "spec.tracing.samplingPercentage",
                format!(
                    "{} is not a percentage; allowed: 0 to 100 (1 records one trace in a hundred)",
                    t.sampling_percentage
                ),
            );
        }
        if let Some(col) = &t.collector
            && let Err(why) = check_address(&col.address)
        {
            c.doc(
                errs,
                "spec.tracing.collector.address",
                format!(
                    "{:?} {why}; use host:port, e.g. otel-collector.observability:4317",
                    col.address
                ),
            );
        }
    }
    for s in &cfg.services {
        check_annotation(s, errs);
    }
    for g in &cfg.gateways {
        check_annotation(g, errs);
    }
}

fn check_annotation<S>(doc: &Doc<S>, errs: &mut ConfigErrors) {
    if let Some(v) = doc
        .object
        .metadata
        .annotations
        .get(TRACE_SAMPLING_ANNOTATION)
        && parse_sampling_percentage(v).is_none()
    {
        Origin::new(doc).doc(
            errs,
            format!("metadata.annotations.{TRACE_SAMPLING_ANNOTATION}"),
            format!("{v:?} is not a percentage; allowed: a number from 0 to 100"),
        );
    }
}

/// `host:port`, or `[v6]:port`: what a proxy can dial.
fn check_address(a: &str) -> Result<(), &'static str> {
    if a.contains("://") || a.contains('/') {
        return Err("is a URL, not an address");
    }
    let (host, port) = a.rsplit_once(':').ok_or("has no port")?;
    if host.is_empty() || host.trim_matches(['[', ']']).is_empty() {
        return Err("has no host");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err("has no valid port (1-65535)"),
    }
}
