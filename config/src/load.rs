//! Loading mesh YAML: files or a directory of them, into typed documents with their origin.

use crate::error::{ConfigError, ConfigErrors};
pub use crate::mesh_config::{Doc, MeshConfig};
use crate::model::*;
use crate::yaml::{RawDoc, parse_document, split_documents};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The kinds Trellis reads, as `(apiVersion, kind)`.
const KINDS: &[(&str, &str)] = &[
    ("trellis.dev/v1alpha1", "Mesh"),
    ("v1", "Service"),
    ("trellis.dev/v1alpha1", "Workload"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("gateway.networking.k8s.io/v1", "GRPCRoute"),
    ("trellis.dev/v1alpha1", "ResiliencePolicy"),
    ("trellis.dev/v1alpha1", "AuthorizationPolicy"),
    ("gateway.networking.k8s.io/v1", "Gateway"),
    ("trellis.dev/v1alpha1", "Scope"),
    ("v1", "Secret"),
    ("gateway.networking.k8s.io/v1beta1", "ReferenceGrant"),
    ("trellis.dev/v1alpha1", "ClientRateLimit"),
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
    Loader::default().load_dir_or_file(path)
}

/// Loads and validates one YAML stream held in memory.
pub fn load_str(file: &str, text: &str) -> Result<MeshConfig, ConfigErrors> {
    Loader::default().load_sources(std::iter::once((file, text)))
}

/// A loader that remembers the documents it parsed, keyed by their text. Reloading a large
/// mesh after a one-document change parses one document, not all of them.
#[derive(Default)]
pub struct Loader {
    cache: Mutex<HashMap<u64, Parsed>>,
}

/// One parsed document of any kind. Its spans are relative to its own text, so it stays
/// valid when edits above it move it to another line.
#[derive(Clone)]
enum Parsed {
    Mesh(Arc<Object<MeshSpec>>),
    Service(Arc<Object<ServiceSpec>>),
    Workload(Arc<Object<WorkloadSpec>>),
    HttpRoute(Arc<Object<HttpRouteSpec>>),
    Resilience(Arc<Object<ResiliencePolicySpec>>),
    Authorization(Arc<Object<AuthorizationPolicySpec>>),
    Gateway(Arc<Object<GatewaySpec>>),
    Scope(Arc<Object<ScopeSpec>>),
    Secret(Arc<Object<SecretSpec>>),
    ReferenceGrant(Arc<Object<ReferenceGrantSpec>>),
    ClientRateLimit(Arc<Object<ClientRateLimitSpec>>),
}

impl Loader {
    /// Like [`load_dir_or_file`], reusing every document whose text is unchanged.
    pub fn load_dir_or_file(&self, path: &Path) -> Result<MeshConfig, ConfigErrors> {
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
        self.load_sources(sources.iter().map(|(f, t)| (f.as_str(), t.as_str())))
    }

    /// Loads and validates named YAML texts, as if each were a file: the Kubernetes source
    /// feeds every object it watches through here, so both sources share one path.
    pub fn load_texts<'a>(
        &self,
        sources: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Result<MeshConfig, ConfigErrors> {
        self.load_sources(sources)
    }

    fn load_sources<'a>(
        &self,
        sources: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Result<MeshConfig, ConfigErrors> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let mut seen: HashMap<u64, Parsed> = HashMap::with_capacity(cache.len());
        let mut cfg = MeshConfig::default();
        let mut errors = ConfigErrors::default();
        for (file, text) in sources {
            let file: Arc<str> = Arc::from(file);
            for raw in split_documents(text) {
                let mut h = DefaultHasher::new();
                raw.text.hash(&mut h);
                let key = h.finish();
                let parsed = match cache.remove(&key).or_else(|| seen.get(&key).cloned()) {
                    Some(p) => Ok(p),
                    None => parse(&file, &raw),
                };
                match parsed
                    .and_then(|p| add(&mut cfg, &file, raw.first_line, p.clone()).map(|()| p))
                {
                    Ok(p) => {
                        seen.insert(key, p);
                    }
                    Err(e) => errors.0.push(e),
                }
            }
        }
        // Keep only what this load saw, so the cache never outgrows the config.
        *cache = seen;
        drop(cache);
        errors.into_result()?;
        crate::validate::validate(&cfg)?;
        Ok(cfg)
    }
}

fn parse(file: &Arc<str>, raw: &RawDoc<'_>) -> Result<Parsed, ConfigError> {
    let head: Head = parse_document(file, raw.text, raw.first_line)?;
    let api = head.api_version.as_deref().unwrap_or("");
    let kind = head.kind.as_deref().unwrap_or("");
    macro_rules! typed {
        () => {
            Arc::new(parse_document(file, raw.text, raw.first_line)?)
        };
    }
    Ok(match (api, kind) {
        ("trellis.dev/v1alpha1", "Mesh") => Parsed::Mesh(typed!()),
        ("v1", "Service") => Parsed::Service(typed!()),
        ("trellis.dev/v1alpha1", "Workload") => Parsed::Workload(typed!()),
        ("gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1", "HTTPRoute") => {
            Parsed::HttpRoute(typed!())
        }
        // Read as a GRPCRoute, so that what it cannot mean is named in its own fields; kept
        // as the HTTPRoute it means, which validates and compiles as every route does.
        ("gateway.networking.k8s.io/v1", "GRPCRoute") => {
            let grpc: Object<GrpcRouteSpec> = parse_document(file, raw.text, raw.first_line)?;
            let spec = grpc.spec.to_http().map_err(|e| ConfigError {
                file: file.to_string(),
                line: (e.at.as_ref())
                    .map_or(raw.first_line, |l| crate::yaml::abs_line(raw.first_line, l)),
                field: e.field,
                message: e.message,
            })?;
            Parsed::HttpRoute(Arc::new(Object {
                api_version: grpc.api_version,
                kind: grpc.kind,
                metadata: grpc.metadata,
                spec,
            }))
        }
        ("trellis.dev/v1alpha1", "ResiliencePolicy") => Parsed::Resilience(typed!()),
        ("trellis.dev/v1alpha1", "AuthorizationPolicy") => Parsed::Authorization(typed!()),
        ("trellis.dev/v1alpha1", "Scope") => Parsed::Scope(typed!()),
        ("trellis.dev/v1alpha1", "ClientRateLimit") => Parsed::ClientRateLimit(typed!()),
        ("v1", "Secret") => Parsed::Secret(Arc::new(secret(file, raw)?)),
        (
            "gateway.networking.k8s.io/v1beta1" | "gateway.networking.k8s.io/v1",
            "ReferenceGrant",
        ) => Parsed::ReferenceGrant(typed!()),
        ("gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1", "Gateway") => {
            Parsed::Gateway(typed!())
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
    })
}

fn add(
    cfg: &mut MeshConfig,
    file: &Arc<str>,
    line: u64,
    parsed: Parsed,
) -> Result<(), ConfigError> {
    fn doc<S>(file: &Arc<str>, line: u64, object: Arc<Object<S>>) -> Doc<S> {
        Doc {
            file: file.clone(),
            line,
            object,
        }
    }
    match parsed {
        Parsed::Mesh(o) => {
            if let Some(prev) = &cfg.mesh {
                return Err(ConfigError {
                    file: file.to_string(),
                    line,
                    field: "kind".into(),
                    message: format!(
                        "a second Mesh document; the first is at {}:{}, keep one",
                        prev.file, prev.line
                    ),
                });
            }
            cfg.mesh = Some(doc(file, line, o));
        }
        Parsed::Service(o) => cfg.services.push(doc(file, line, o)),
        Parsed::Workload(o) => cfg.workloads.push(doc(file, line, o)),
        Parsed::Scope(o) => cfg.scopes.push(doc(file, line, o)),
        Parsed::HttpRoute(o) => cfg.http_routes.push(doc(file, line, o)),
        Parsed::Resilience(o) => cfg.resilience_policies.push(doc(file, line, o)),
        Parsed::Authorization(o) => cfg.authorization_policies.push(doc(file, line, o)),
        Parsed::Gateway(o) => cfg.gateways.push(doc(file, line, o)),
        Parsed::Secret(o) => cfg.secrets.push(doc(file, line, o)),
        Parsed::ReferenceGrant(o) => cfg.reference_grants.push(doc(file, line, o)),
        Parsed::ClientRateLimit(o) => cfg.client_rate_limits.push(doc(file, line, o)),
    }
    Ok(())
}

/// A Secret as written: base64 `data` and plain `stringData`, as Kubernetes takes them.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretDocument {
    pub api_version: Read,
    pub kind: Read,
    pub metadata: Metadata,
    #[serde(rename = "type", default)]
    pub type_: Option<Spanned<String>>,
    #[serde(default)]
    pub data: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub string_data: BTreeMap<String, String>,
    #[serde(default)]
    pub immutable: Option<bool>,
}

/// A Secret with its `data` decoded from base64 and `stringData` merged over it, as the API
/// server does. A value that is not base64 is named with its line.
fn secret(file: &str, raw: &RawDoc<'_>) -> Result<Object<SecretSpec>, ConfigError> {
    use base64::Engine;
    let d: SecretDocument = parse_document(file, raw.text, raw.first_line)?;
    let mut data = BTreeMap::new();
    for (k, v) in d.data {
        let bytes = (base64::engine::general_purpose::STANDARD)
            .decode(v.value.trim().replace(['\n', '\r', ' '], ""))
            .map_err(|e| ConfigError {
                file: file.to_string(),
                line: crate::yaml::abs_line(raw.first_line, &v.referenced),
                field: format!("data.{k}"),
                message: format!(
                    "not base64 ({e}); put PEM text under stringData instead, or encode it with `base64 -w0`"
                ),
            })?;
        data.insert(k, bytes);
    }
    for (k, v) in d.string_data {
        data.insert(k, v.into_bytes());
    }
    Ok(Object {
        api_version: d.api_version,
        kind: d.kind,
        metadata: d.metadata,
        spec: SecretSpec {
            type_: d.type_.map(|t| t.value),
            data,
        },
    })
}
