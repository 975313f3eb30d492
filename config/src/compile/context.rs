//! What one compile looks things up in: the config, a label index over its workloads, and
//! label selection itself.

use crate::mesh_config::{Doc, MeshConfig};
use crate::model::*;
use std::collections::{BTreeMap, HashMap};

/// Indexes built once per compile, so endpoint selection is not services × workloads.
pub(super) struct Ctx<'a> {
    pub(super) cfg: &'a MeshConfig,
    /// `(namespace, label key, label value)` to the workloads carrying that label.
    by_label: HashMap<(&'a str, &'a str, &'a str), Vec<usize>>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(cfg: &'a MeshConfig) -> Ctx<'a> {
        let mut by_label: HashMap<(&str, &str, &str), Vec<usize>> = HashMap::new();
        for (i, w) in cfg.workloads.iter().enumerate() {
            let ns = w.object.metadata.namespace.as_str();
            for (k, v) in &w.object.metadata.labels {
                by_label
                    .entry((ns, k.as_str(), v.as_str()))
                    .or_default()
                    .push(i);
            }
        }
        Ctx { cfg, by_label }
    }

    pub(super) fn trust_domain(&self) -> &'a str {
        self.cfg
            .mesh
            .as_ref()
            .map_or("trellis.local", |m| m.object.spec.trust_domain.as_str())
    }

    /// Workloads in `ns` whose labels satisfy `selector`, found through its rarest label.
    pub(super) fn selected(
        &self,
        ns: &str,
        selector: &SmallMap<String, String>,
    ) -> Vec<&'a Doc<WorkloadSpec>> {
        let rarest = selector
            .iter()
            .map(|(k, v)| {
                self.by_label
                    .get(&(ns, k.as_str(), v.as_str()))
                    .map_or(&[][..], Vec::as_slice)
            })
            .min_by_key(|c| c.len())
            .unwrap_or(&[]);
        let cfg = self.cfg;
        rarest
            .iter()
            .map(|&i| &cfg.workloads[i])
            .filter(|w| selects(selector, &w.object.metadata.labels))
            .collect()
    }
}

/// Whether `labels` satisfy `selector`; an empty selector selects nothing.
pub(super) fn selects(selector: &SmallMap<String, String>, labels: &impl Labels) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.label(k) == Some(v))
}

/// A workload's labels, however they are held: a document's `SmallMap` or a proxy's map.
pub(super) trait Labels {
    fn label(&self, key: &str) -> Option<&String>;
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&String> {
        self.get(key)
    }
}

impl Labels for SmallMap<String, String> {
    fn label(&self, key: &str) -> Option<&String> {
        self.get(key)
    }
}
