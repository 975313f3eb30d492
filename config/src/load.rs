//! Loading mesh YAML: files or a directory of them, into typed documents with their origin.

use crate::error::{ConfigError, ConfigErrors};
use crate::model::*;
use crate::yaml::{RawDoc, parse_document, split_documents};
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;

/// A typed document and where it came from.
#[derive(Debug, Clone)]
pub struct Doc<S> {
    pub file: Arc<str>,
    /// 1-based line where the document starts.
    pub line: u64,
    pub object: Object<S>,
}

impl<S> Doc<S> {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.object.metadata.namespace, self.object.metadata.name
        )
    }
}

/// Every document of a mesh configuration, by kind, in load order.
#[derive(Debug, Clone, Default)]
pub struct MeshConfig {
    pub mesh: Option<Doc<MeshSpec>>,
    pub services: Vec<Doc<ServiceSpec>>,
    pub workloads: Vec<Doc<WorkloadSpec>>,
    pub http_routes: Vec<Doc<HttpRouteSpec>>,
    pub resilience_policies: Vec<Doc<ResiliencePolicySpec>>,
    pub authorization_policies: Vec<Doc<AuthorizationPolicySpec>>,
}

/// The kinds Trellis reads, as `(apiVersion, kind)`.
const KINDS: &[(&str, &str)] = &[
    ("trellis.dev/v1alpha1", "Mesh"),
    ("v1", "Service"),
    ("trellis.dev/v1alpha1", "Workload"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("trellis.dev/v1alpha1", "ResiliencePolicy"),
    ("trellis.dev/v1alpha1", "AuthorizationPolicy"),
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

/// Loads one file, or every `*.yaml`/`*.yml` file of a directory (sorted by name), and validates.
pub fn load_dir_or_file(path: &Path) -> Result<MeshConfig, ConfigErrors> {
    let io_err = |p: &Path, e: std::io::Error| {
        ConfigErrors::from(ConfigError {
            file: p.display().to_string(),
            line: 0,
            field: String::new(),
            message: format!("cannot read: {e}"),
        })
    };
    let mut files = Vec::new();
    if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| io_err(path, e))?;
        for entry in entries {
            let p = entry.map_err(|e| io_err(path, e))?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // Kubernetes ConfigMap volumes keep the real files in `..data/`; skip hidden entries.
            if !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml")) {
                files.push(p);
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut sources = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|e| io_err(f, e))?;
        sources.push((f.display().to_string(), text));
    }
    load_sources(sources.iter().map(|(f, t)| (f.as_str(), t.as_str())))
}

/// Loads and validates one YAML stream held in memory.
pub fn load_str(file: &str, text: &str) -> Result<MeshConfig, ConfigErrors> {
    load_sources(std::iter::once((file, text)))
}

fn load_sources<'a>(
    sources: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<MeshConfig, ConfigErrors> {
    let mut cfg = MeshConfig::default();
    let mut errors = ConfigErrors::default();
    for (file, text) in sources {
        let file: Arc<str> = Arc::from(file);
        for doc in split_documents(text) {
            if let Err(e) = add_document(&mut cfg, &file, &doc) {
                errors.0.push(e);
            }
        }
    }
    errors.into_result()?;
    crate::validate::validate(&cfg)?;
    Ok(cfg)
}

fn typed<S: serde::de::DeserializeOwned>(
    file: &Arc<str>,
    raw: &RawDoc<'_>,
) -> Result<Doc<S>, ConfigError> {
    Ok(Doc {
        object: parse_document(file, raw.text, raw.first_line)?,
        file: file.clone(),
        line: raw.first_line,
    })
}

fn add_document(
    cfg: &mut MeshConfig,
    file: &Arc<str>,
    raw: &RawDoc<'_>,
) -> Result<(), ConfigError> {
    let head: Head = parse_document(file, raw.text, raw.first_line)?;
    let api = head.api_version.as_deref().unwrap_or("");
    let kind = head.kind.as_deref().unwrap_or("");
    match (api, kind) {
        ("trellis.dev/v1alpha1", "Mesh") => {
            if let Some(prev) = &cfg.mesh {
                return Err(ConfigError {
                    file: file.to_string(),
                    line: raw.first_line,
                    field: "kind".into(),
                    message: format!(
                        "a second Mesh document; the first is at {}:{}, keep one",
                        prev.file, prev.line
                    ),
                });
            }
            cfg.mesh = Some(typed(file, raw)?);
        }
        ("v1", "Service") => cfg.services.push(typed(file, raw)?),
        ("trellis.dev/v1alpha1", "Workload") => cfg.workloads.push(typed(file, raw)?),
        ("gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1", "HTTPRoute") => {
            cfg.http_routes.push(typed(file, raw)?)
        }
        ("trellis.dev/v1alpha1", "ResiliencePolicy") => {
            cfg.resilience_policies.push(typed(file, raw)?)
        }
        ("trellis.dev/v1alpha1", "AuthorizationPolicy") => {
            cfg.authorization_policies.push(typed(file, raw)?)
        }
        _ => {
            let allowed: Vec<String> = KINDS.iter().map(|(a, k)| format!("{a} {k}")).collect();
            return Err(ConfigError {
                file: file.to_string(),
                line: raw.first_line,
                field: "kind".into(),
                message: format!(
                    "unknown apiVersion/kind {api:?}/{kind:?}; allowed: {}",
                    allowed.join(", ")
                ),
            });
        }
    }
    Ok(())
}
