//! The CA Secret every replica shares, and the webhook's caBundle, against a stand-in API
//! server (no API server runs here): two replicas starting at once end with one CA; a broken
//! Secret is an error that says what to do; the caBundle goes into every webhook.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use trellis_control::kubernetes::ca::{self, CA_SECRET, WEBHOOK_CONFIGURATION};

type Body = BoxBody<Bytes, Infallible>;

const SECRET_PATH: &str = "/api/v1/namespaces/trellis-system/secrets";
const CONFIGMAPS: &str = "/api/v1/namespaces/trellis-system/configmaps";
const WEBHOOK_PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/trellis-injector";

/// What the stand-in API server holds and saw.
#[derive(Default)]
struct Server {
    secret: Option<Value>,
    /// GETs of the Secret answered 404 before the stored one is served: both replicas look
    /// before either creates, whatever order their requests interleave in.
    misses_left: usize,
    creates: usize,
    conflicts: usize,
    webhook: Option<Value>,
    patches: Vec<(String, Value)>,
    configmap: Option<Value>,
    configmap_writes: Vec<(Method, String)>,
}

fn respond(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(BodyExt::boxed(Full::new(Bytes::from(v.to_string()))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn client(server: Arc<Mutex<Server>>) -> kube::Client {
    let svc = tower::service_fn(move |req: Request<kube::client::Body>| {
        let server = server.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let path = parts.uri.path().to_string();
            let ctype = parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let mut s = server.lock().unwrap();
            let r = match (&parts.method, path.as_str()) {
                (&Method::GET, p) if p == format!("{SECRET_PATH}/{CA_SECRET}") => {
                    match (&s.secret, s.misses_left) {
                        (Some(secret), 0) => respond(StatusCode::OK, secret),
                        _ => {
                            s.misses_left = s.misses_left.saturating_sub(1);
                            respond(
                                StatusCode::NOT_FOUND,
                                &status(404, "NotFound", "secrets \"trellis-ca\" not found"),
                            )
                        }
                    }
                }
                (&Method::POST, SECRET_PATH) => {
                    let mut secret: Value = serde_json::from_slice(&body).unwrap();
                    if s.secret.is_some() {
                        s.conflicts += 1;
                        respond(
                            StatusCode::CONFLICT,
                            &status(
                                409,
                                "AlreadyExists",
                                "secrets \"trellis-ca\" already exists",
                            ),
                        )
                    } else {
                        s.creates += 1;
                        secret["metadata"]["resourceVersion"] = json!("1");
                        s.secret = Some(secret.clone());
                        respond(StatusCode::CREATED, &secret)
                    }
                }
                (&Method::GET, p) if p == format!("{CONFIGMAPS}/trellis-ca-root") => {
                    match &s.configmap {
                        Some(cm) => respond(StatusCode::OK, cm),
                        None => {
                            respond(StatusCode::NOT_FOUND, &status(404, "NotFound", "not found"))
                        }
                    }
                }
                (&Method::POST, CONFIGMAPS) => {
                    let cm: Value = serde_json::from_slice(&body).unwrap();
                    s.configmap_writes.push((Method::POST, ctype));
                    s.configmap = Some(cm.clone());
                    respond(StatusCode::CREATED, &cm)
                }
                (&Method::PATCH, p) if p == format!("{CONFIGMAPS}/trellis-ca-root") => {
                    let patch: Value = serde_json::from_slice(&body).unwrap();
                    s.configmap_writes.push((Method::PATCH, ctype));
                    let mut cm = s.configmap.clone().unwrap();
                    json_patch::merge(&mut cm, &patch);
                    s.configmap = Some(cm.clone());
                    respond(StatusCode::OK, &cm)
                }
                (&Method::GET, WEBHOOK_PATH) => match &s.webhook {
                    Some(w) => respond(StatusCode::OK, w),
                    None => respond(StatusCode::NOT_FOUND, &status(404, "NotFound", "not found")),
                },
                (&Method::PATCH, WEBHOOK_PATH) => {
                    let patch: Value = serde_json::from_slice(&body).unwrap();
                    s.patches.push((ctype, patch.clone()));
                    let mut w = s.webhook.clone().unwrap();
                    let p: json_patch::Patch = serde_json::from_value(patch).unwrap();
                    match json_patch::patch(&mut w, &p) {
                        Ok(()) => {
                            s.webhook = Some(w.clone());
                            respond(StatusCode::OK, &w)
                        }
                        Err(e) => respond(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            &status(422, "Invalid", &e.to_string()),
                        ),
                    }
                }
                _ => respond(
                    StatusCode::NOT_FOUND,
                    &status(404, "NotFound", &format!("no route for {path}")),
                ),
            };
            Ok::<_, Infallible>(r)
        }
    });
    kube::Client::new(svc, "default")
}

#[tokio::test]
async fn two_replicas_starting_at_once_share_one_ca() {
    let server = Arc::new(Mutex::new(Server {
        misses_left: 2,
        ..Default::default()
    }));
    let (a, b) = tokio::join!(
        ca::load_or_create(client(server.clone()), "trellis-system"),
        ca::load_or_create(client(server.clone()), "trellis-system"),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    {
        let s = server.lock().unwrap();
        assert_eq!(
            (s.creates, s.conflicts),
            (1, 1),
            "both tried to create; one lost"
        );
        let secret = s.secret.as_ref().unwrap();
        assert_eq!(secret["type"], "kubernetes.io/tls");
        assert_eq!(secret["metadata"]["name"], CA_SECRET);
    }
    assert_eq!(a.cert, b.cert, "the loser took the winner's CA");
    assert_eq!(a.key, b.key);

    // The shared CA is one the identity module signs with, and a replica that starts later
    // reads it rather than making another.
    let dir = tempfile::tempdir().unwrap();
    let source = ca::write_files(&a, dir.path()).unwrap();
    trellis_control::identity::ca::Ca::load(&source).expect("the identity module loads it");
    let c = ca::load_or_create(client(server.clone()), "trellis-system")
        .await
        .unwrap();
    assert_eq!(c.cert, a.cert);
    assert_eq!(server.lock().unwrap().creates, 1);
}

#[tokio::test]
async fn a_secret_without_its_key_is_an_error_that_says_what_to_do() {
    let server = Arc::new(Mutex::new(Server {
        secret: Some(
            json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": CA_SECRET, "namespace": "trellis-system"},
            "data": {"tls.crt": "LS0tLS1CRUdJTg=="}}),
        ),
        ..Default::default()
    }));
    let e = ca::load_or_create(client(server.clone()), "trellis-system")
        .await
        .err()
        .expect("an error")
        .to_string();
    assert!(e.contains("tls.key"), "{e}");
    assert!(e.contains("delete it"), "{e}");
    assert_eq!(server.lock().unwrap().creates, 0, "never overwritten");
}

#[tokio::test]
async fn the_ca_bundle_goes_into_every_webhook_of_the_configuration() {
    let webhook = |name: &str| {
        json!({"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
               "clientConfig": {"service": {"name": "trellis-control", "namespace": "trellis-system", "port": 15017, "path": "/inject"}}})
    };
    let server = Arc::new(Mutex::new(Server {
        webhook: Some(json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": WEBHOOK_CONFIGURATION},
            "webhooks": [webhook("inject.trellis.dev"), webhook("inject-pods.trellis.dev")],
        })),
        ..Default::default()
    }));
    let pem = ca::generate_ca().unwrap().cert;
    ca::publish_ca_bundle(client(server.clone()), &pem)
        .await
        .unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(pem.as_bytes());
    {
        let s = server.lock().unwrap();
        assert_eq!(s.patches.len(), 1);
        assert_eq!(s.patches[0].0, "application/json-patch+json");
        let w = s.webhook.as_ref().unwrap();
        for i in 0..2 {
            assert_eq!(
                w["webhooks"][i]["clientConfig"]["caBundle"], b64,
                "webhook {i}"
            );
        }
    }
    // Publishing again (a restarted replica) leaves the same result.
    ca::publish_ca_bundle(client(server.clone()), &pem)
        .await
        .unwrap();
    let s = server.lock().unwrap();
    assert_eq!(
        s.webhook.as_ref().unwrap()["webhooks"][1]["clientConfig"]["caBundle"],
        b64
    );
}

#[tokio::test]
async fn the_ca_certificate_is_published_for_the_gateway_and_kept_current() {
    let server = Arc::new(Mutex::new(Server::default()));
    let first = ca::generate_ca().unwrap().cert;
    let publish = |pem: String| {
        let server = server.clone();
        async move { ca::publish_ca_root(client(server), "trellis-system", &pem).await }
    };
    publish(first.clone()).await.unwrap();
    let cm = |s: &Server| s.configmap.as_ref().unwrap()["data"]["ca.crt"].clone();
    {
        let s = server.lock().unwrap();
        assert_eq!(cm(&s), json!(first));
        assert_eq!(
            s.configmap.as_ref().unwrap()["metadata"]["name"],
            ca::CA_ROOT_CONFIGMAP
        );
        assert_eq!(s.configmap_writes.len(), 1);
    }
    // Unchanged: nothing is written.
    publish(first.clone()).await.unwrap();
    assert_eq!(server.lock().unwrap().configmap_writes.len(), 1);
    // A rotated CA replaces the certificate with a merge patch.
    let second = ca::generate_ca().unwrap().cert;
    publish(second.clone()).await.unwrap();
    let s = server.lock().unwrap();
    assert_eq!(cm(&s), json!(second));
    assert_eq!(
        s.configmap_writes.last().unwrap(),
        &(Method::PATCH, "application/merge-patch+json".to_string())
    );
}
