//! What the fuzz targets (the `fuzz/` crate, on nightly) and this crate's corpus replay
//! (`cargo test`, on stable) run on one input. Built only for tests and with the `fuzzing`
//! feature.

use crate::NodeIdentity;
use crate::resources;
use prost::Message;
use trellis_proto::v1::{
    CertifyRequest, CertifyResponse, DiscoveryRequest, DiscoveryResponse, StatResponse,
};

/// The mesh YAML loader on `text`: an error or a validated config, never a panic; and a
/// config that loads compiles, for a proxy of no labels and for each Workload it names.
pub fn mesh_yaml(text: &str) {
    let Ok(cfg) = crate::load_str("fuzz.yaml", text) else {
        return;
    };
    let _ = crate::compile(&cfg, &NodeIdentity::default());
    for w in cfg.workloads.iter().take(4) {
        let node = NodeIdentity {
            name: w.object.metadata.name.clone(),
            namespace: w.object.metadata.namespace.clone(),
            labels: (w.object.metadata.labels.iter())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            service_account: None,
        };
        let _ = crate::compile(&cfg, &node);
    }
}

/// The messages of the discovery and identity streams on `data`, decoded as each side
/// does: a request as the control plane reads it; a response, and each resource in it
/// checked and decoded, as a proxy does; a CSR exchange; the dashboard's `/golden`.
pub fn discovery(data: &[u8]) {
    let _ = DiscoveryRequest::decode(data);
    if let Ok(res) = DiscoveryResponse::decode(data) {
        for r in &res.upserted {
            if let Ok((key, body)) = resources::from_wire(r) {
                let _ = resources::decode(&key, &body);
            }
        }
    }
    let _ = CertifyRequest::decode(data);
    let _ = CertifyResponse::decode(data);
    let _ = StatResponse::decode(data);
}

#[cfg(test)]
mod tests {
    /// The inputs of a fuzz target's corpus and its regressions.
    fn corpus(target: &str) -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        assert!(
            inputs.len() >= 3,
            "only {} inputs in {}",
            inputs.len(),
            dir.display()
        );
        inputs
    }

    #[test]
    fn the_mesh_yaml_corpus_replays() {
        for input in corpus("mesh_yaml") {
            if let Ok(text) = std::str::from_utf8(&input) {
                super::mesh_yaml(text);
            }
        }
    }

    #[test]
    fn the_discovery_corpus_replays() {
        for input in corpus("discovery") {
            super::discovery(&input);
        }
    }

    #[test]
    fn the_duration_corpus_replays() {
        for input in corpus("spiffe_duration") {
            if let Ok(text) = std::str::from_utf8(&input) {
                let _ = crate::duration::parse(text);
            }
        }
    }
}
