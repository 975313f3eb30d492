//! The CA in the cluster: one Secret (`trellis-system/trellis-ca`) that every replica shares,
//! the injector's serving certificate issued from it, and the CA certificate published as the
//! webhook's caBundle and in the ConfigMap `trellis-ca-root` (for the gateway).

// The first replica to start creates the Secret; the others, and any that lose the race to
// create it, read it, so that every replica signs with one CA.

use crate::identity::ca::{CaError, CaSource};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rcgen::{CertificateParams, DnType, Issuer, KeyPair};
use serde_json::json;
use std::collections::BTreeMap;

pub const CA_SECRET: &str = "trellis-ca";
/// The CA certificate (public) for pods that are not injected but need to trust the control
/// plane, such as the trellis gateway: a ConfigMap in the control plane's namespace.
pub const CA_ROOT_CONFIGMAP: &str = "trellis-ca-root";
pub const WEBHOOK_CONFIGURATION: &str = "trellis-injector";

/// Why the cluster CA could not be read, made, published or written to disk. Each names the
/// object or file and, where there is one, what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClusterCaError {
    #[error("secret {namespace}/{CA_SECRET} has no {field}; delete it to have a new CA made")]
    MissingField {
        namespace: String,
        field: &'static str,
    },
    #[error("cannot read secret {namespace}/{CA_SECRET}: {source}")]
    ReadSecret {
        namespace: String,
        source: kube::Error,
    },
    #[error("cannot generate the CA: {0}")]
    Generate(#[from] CaError),
    #[error("cannot create secret {namespace}/{CA_SECRET}: {source}")]
    CreateSecret {
        namespace: String,
        source: kube::Error,
    },
    #[error("cannot read MutatingWebhookConfiguration {WEBHOOK_CONFIGURATION}: {0}")]
    ReadWebhook(kube::Error),
    #[error("caBundle patch: {0}")]
    BundlePatch(serde_json::Error),
    #[error("cannot set the caBundle of {WEBHOOK_CONFIGURATION}: {0}")]
    SetBundle(kube::Error),
    /// `what`: `ConfigMap <namespace>/trellis-ca-root`.
    #[error("cannot {action} {what}: {source}")]
    Root {
        action: &'static str,
        what: String,
        source: kube::Error,
    },
    #[error("cannot write {}: {source}; set TRELLIS_STATE_DIR to a writable directory", path.display())]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// A CA certificate and its private key, PEM.
#[derive(Clone)]
pub struct CaPem {
    pub cert: String,
    pub key: String,
}

/// A new CA for the mesh: the same root the identity module generates in file mode.
pub fn generate_ca() -> Result<CaPem, CaError> {
    let (cert, key) = crate::identity::ca::new_root()?;
    Ok(CaPem { cert, key })
}

/// A serving certificate for `dns_names`, signed by `ca`: `(chain PEM, key PEM)`.
pub fn issue_serving_cert(
    ca: &CaPem,
    dns_names: &[String],
) -> Result<(String, String), rcgen::Error> {
    let ca_key = KeyPair::from_pem(&ca.key)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(dns_names.to_vec())?;
    params.distinguished_name.push(
        DnType::CommonName,
        dns_names.first().cloned().unwrap_or_default(),
    );
    params.not_after = time_from_now(365);
    let cert = params.signed_by(&key, &issuer)?;
    Ok((format!("{}{}", cert.pem(), ca.cert), key.serialize_pem()))
}

fn time_from_now(days: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + std::time::Duration::from_secs(days * 86_400)
}

/// Reads the CA Secret, creating it if no replica has yet.
pub async fn load_or_create(client: Client, namespace: &str) -> Result<CaPem, ClusterCaError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let read = |s: Secret| -> Result<CaPem, ClusterCaError> {
        let data = s.data.unwrap_or_default();
        let field = |k: &'static str| {
            data.get(k)
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
                .ok_or_else(|| ClusterCaError::MissingField {
                    namespace: namespace.into(),
                    field: k,
                })
        };
        Ok(CaPem {
            cert: field("tls.crt")?,
            key: field("tls.key")?,
        })
    };
    let read_failed = |source| ClusterCaError::ReadSecret {
        namespace: namespace.into(),
        source,
    };
    match api.get_opt(CA_SECRET).await {
        Ok(Some(s)) => return read(s),
        Ok(None) => {}
        Err(e) => return Err(read_failed(e)),
    }
    let ca = generate_ca()?;
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(CA_SECRET.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            (
                "tls.crt".to_string(),
                ByteString(ca.cert.clone().into_bytes()),
            ),
            (
                "tls.key".to_string(),
                ByteString(ca.key.clone().into_bytes()),
            ),
        ])),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(ca),
        // Another replica won the race: use its CA, so that every replica shares one.
        Err(kube::Error::Api(s)) if s.code == 409 => match api.get(CA_SECRET).await {
            Ok(s) => read(s),
            Err(e) => Err(read_failed(e)),
        },
        Err(source) => Err(ClusterCaError::CreateSecret {
            namespace: namespace.into(),
            source,
        }),
    }
}

/// Sets every webhook's `clientConfig.caBundle` of the injector's configuration to the CA.
pub async fn publish_ca_bundle(client: Client, ca_pem: &str) -> Result<(), ClusterCaError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    let current = api
        .get(WEBHOOK_CONFIGURATION)
        .await
        .map_err(ClusterCaError::ReadWebhook)?;
    let bundle = serde_json::to_value(ByteString(ca_pem.as_bytes().to_vec())).unwrap_or_default();
    let ops: Vec<serde_json::Value> = (0..current.webhooks.map_or(0, |w| w.len()))
        .map(|i| json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": bundle}))
        .collect();
    let patch: json_patch::Patch =
        serde_json::from_value(json!(ops)).map_err(ClusterCaError::BundlePatch)?;
    api.patch(
        WEBHOOK_CONFIGURATION,
        &PatchParams::default(),
        &Patch::Json::<()>(patch),
    )
    .await
    .map(|_| ())
    .map_err(ClusterCaError::SetBundle)
}

/// Creates or updates the ConfigMap `CA_ROOT_CONFIGMAP` (key `ca.crt`) in `namespace`.
pub async fn publish_ca_root(
    client: Client,
    namespace: &str,
    ca_pem: &str,
) -> Result<(), ClusterCaError> {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let failed = |action, source| ClusterCaError::Root {
        action,
        what: format!("ConfigMap {namespace}/{CA_ROOT_CONFIGMAP}"),
        source,
    };
    let current = api
        .get_opt(CA_ROOT_CONFIGMAP)
        .await
        .map_err(|e| failed("read", e))?;
    match current {
        Some(cm)
            if cm
                .data
                .as_ref()
                .and_then(|d| d.get("ca.crt"))
                .map(String::as_str)
                == Some(ca_pem) =>
        {
            Ok(())
        }
        Some(_) => api
            .patch(
                CA_ROOT_CONFIGMAP,
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"ca.crt": ca_pem}})),
            )
            .await
            .map(|_| ())
            .map_err(|e| failed("update", e)),
        None => {
            let cm = ConfigMap {
                metadata: kube::api::ObjectMeta {
                    name: Some(CA_ROOT_CONFIGMAP.into()),
                    namespace: Some(namespace.into()),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([("ca.crt".to_string(), ca_pem.to_string())])),
                ..Default::default()
            };
            match api.create(&PostParams::default(), &cm).await {
                // Another replica made it at the same moment, from the same CA.
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                Err(e) => Err(failed("create", e)),
            }
        }
    }
}

/// Writes the CA where the identity module loads it from (`DIR/cluster-ca.{crt,key}`, the key
/// 0600), so that the mesh CA and the webhook's CA are the one from the Secret.
pub fn write_files(ca: &CaPem, dir: &std::path::Path) -> Result<CaSource, ClusterCaError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |p: &std::path::Path, source: std::io::Error| ClusterCaError::Write {
        path: p.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
    let cert = dir.join("cluster-ca.crt");
    let key = dir.join("cluster-ca.key");
    std::fs::write(&cert, &ca.cert).map_err(|e| fail(&cert, e))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&key)
        .map_err(|e| fail(&key, e))?;
    f.write_all(ca.key.as_bytes()).map_err(|e| fail(&key, e))?;
    Ok(CaSource::Files { cert, key })
}
