//! A stand-in for the Kubernetes API server, as a tower service under a real `kube::Client`
//! (the way kube's docs test controllers): it answers lists from JSON fixtures, streams watch
//! events the test sends, can end or expire (410 Gone) a watch, applies JSON patches, and
//! merge patches of the status subresource.
//! No API server can run on the test machines; this is the one thing the tests mock.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

type Body = BoxBody<Bytes, Infallible>;

#[derive(Default)]
struct Collection {
    list: Value,
    watches: Vec<mpsc::UnboundedSender<Bytes>>,
    watches_opened: usize,
}

#[derive(Clone, Default)]
pub struct MockApi {
    collections: Arc<Mutex<HashMap<String, Collection>>>,
    /// Every PATCH: (path, content type, body).
    pub patches: Arc<Mutex<Vec<(String, String, Value)>>>,
    version: Arc<Mutex<u64>>,
}

impl MockApi {
    /// Serves `list` (a `...List` object) at the collection path, e.g. `/api/v1/services`.
    pub fn serve(&self, path: &str, list: Value) {
        self.collections
            .lock()
            .unwrap()
            .entry(path.into())
            .or_default()
            .list = list;
    }

    /// Sends a watch event to every open watch of the collection, and keeps the list in step.
    pub fn event(&self, path: &str, kind: &str, object: Value) {
        let mut object = object;
        object["metadata"]["resourceVersion"] = json!(self.next_version().to_string());
        let mut all = self.collections.lock().unwrap();
        let c = all.get_mut(path).expect("a served collection");
        let items = c.list["items"].as_array_mut().unwrap();
        let same = |o: &Value| {
            o["metadata"]["name"] == object["metadata"]["name"]
                && o["metadata"]["namespace"] == object["metadata"]["namespace"]
        };
        items.retain(|o| !same(o));
        if kind != "DELETED" {
            items.push(object.clone());
        }
        let line = format!("{}\n", json!({"type": kind, "object": object}));
        c.watches
            .retain(|w| w.send(Bytes::from(line.clone())).is_ok());
    }

    /// Ends every open watch of the collection, as the API server does at its timeout.
    pub fn end_watches(&self, path: &str) {
        self.collections
            .lock()
            .unwrap()
            .get_mut(path)
            .unwrap()
            .watches
            .clear();
    }

    /// Answers open watches with 410 Gone and serves `list` from now on: the client must
    /// list again, and whatever is not in `list` is gone.
    pub fn expire(&self, path: &str, list: Value) {
        let mut all = self.collections.lock().unwrap();
        let c = all.get_mut(path).unwrap();
        c.list = list;
        let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": "too old resource version: 1 (9000)", "reason": "Expired", "code": 410}});
        for w in c.watches.drain(..) {
            let _ = w.send(Bytes::from(format!("{gone}\n")));
        }
    }

    /// The object as the API server holds it now.
    /// `namespace`: "" for a cluster-scoped object.
    pub fn object(&self, path: &str, namespace: &str, name: &str) -> Option<Value> {
        let all = self.collections.lock().unwrap();
        all.get(path)?.list["items"]
            .as_array()?
            .iter()
            .find(|o| {
                o["metadata"]["name"] == name
                    && o["metadata"]["namespace"].as_str().unwrap_or("") == namespace
            })
            .cloned()
    }

    pub fn watches_opened(&self, path: &str) -> usize {
        self.collections
            .lock()
            .unwrap()
            .get(path)
            .map_or(0, |c| c.watches_opened)
    }

    fn next_version(&self) -> u64 {
        let mut v = self.version.lock().unwrap();
        *v += 1;
        10_000 + *v
    }

    /// Answers one request: from a `kube::Client` in process, or over HTTP (`serve_http`).
    pub async fn handle<B: http_body::Body<Data = Bytes>>(
        &self,
        req: Request<B>,
    ) -> Result<Response<Body>, Infallible> {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let method = req.method().clone();
        let content_type = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if query
            .split('&')
            .any(|q| q == "watch=true" || q == "watch=1")
        {
            return Ok(self.watch(&path));
        }
        if let Some(list) = self
            .collections
            .lock()
            .unwrap()
            .get(&path)
            .map(|c| c.list.clone())
        {
            return Ok(json_response(StatusCode::OK, &list));
        }
        // A single object: `<collection>/namespaces/<ns>/<plural>/<name>` maps onto the
        // cluster-wide collection the watches use.
        let mut all = self.collections.lock().unwrap();
        let Some((collection, ns, name, subresource)) =
            split_object_path(&path, |c| all.contains_key(c))
        else {
            return Ok(not_found(&path));
        };
        let Some(c) = all.get_mut(&collection) else {
            return Ok(not_found(&path));
        };
        let items = c.list["items"].as_array_mut().unwrap();
        let Some(obj) = items.iter_mut().find(|o| {
            o["metadata"]["name"] == name && o["metadata"]["namespace"].as_str() == ns.as_deref()
        }) else {
            return Ok(not_found(&path));
        };
        if method == http::Method::PATCH {
            let patch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            self.patches
                .lock()
                .unwrap()
                .push((path.clone(), content_type.clone(), patch.clone()));
            if subresource.as_deref() == Some("status") {
                // As the API server: a merge patch of the status subresource changes only
                // `status`, and a resourceVersion in it is a precondition.
                if content_type != "application/merge-patch+json" {
                    return Ok(json_response(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        &json!({"kind": "Status", "code": 415}),
                    ));
                }
                let wanted = &patch["metadata"]["resourceVersion"];
                if !wanted.is_null() && *wanted != obj["metadata"]["resourceVersion"] {
                    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 409, "reason": "Conflict",
                        "message": "the object has been modified; please apply your changes to the latest version and try again"});
                    return Ok(json_response(StatusCode::CONFLICT, &status));
                }
                let mut updated = obj.clone();
                let mut status = updated["status"].take();
                json_patch::merge(&mut status, &patch["status"]);
                updated["status"] = status;
                drop(all);
                self.event(&collection, "MODIFIED", updated.clone());
                return Ok(json_response(StatusCode::OK, &updated));
            }
            let Ok(p) = serde_json::from_value::<json_patch::Patch>(patch) else {
                return Ok(json_response(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    &json!({"kind": "Status", "code": 415}),
                ));
            };
            let mut updated = obj.clone();
            if let Err(e) = json_patch::patch(&mut updated, &p) {
                let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 422, "reason": "Invalid", "message": e.to_string()});
                return Ok(json_response(StatusCode::UNPROCESSABLE_ENTITY, &status));
            }
            drop(all);
            self.event(&collection, "MODIFIED", updated.clone());
            return Ok(json_response(StatusCode::OK, &updated));
        }
        Ok(json_response(StatusCode::OK, obj))
    }

    fn watch(&self, path: &str) -> Response<Body> {
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        let mut all = self.collections.lock().unwrap();
        let Some(c) = all.get_mut(path) else {
            return not_found(path);
        };
        c.watches.push(tx);
        c.watches_opened += 1;
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
        });
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        r
    }
}

/// `<prefix>/namespaces/<ns>/<plural>/<name>[/<subresource>]`, or a cluster-scoped
/// `<collection>/<name>[/<subresource>]` of a served collection → (collection, namespace,
/// name, subresource).
type ObjectPath = (String, Option<String>, String, Option<String>);

fn split_object_path(path: &str, served: impl Fn(&str) -> bool) -> Option<ObjectPath> {
    if let Some((prefix, rest)) = path.split_once("/namespaces/") {
        let mut parts = rest.split('/');
        let (ns, plural, name) = (parts.next()?, parts.next()?, parts.next()?);
        return Some((
            format!("{prefix}/{plural}"),
            Some(ns.to_string()),
            name.to_string(),
            parts.next().map(str::to_string),
        ));
    }
    let (base, subresource) = match path.strip_suffix("/status") {
        Some(base) => (base, Some("status".to_string())),
        None => (path, None),
    };
    let (collection, name) = base.rsplit_once('/')?;
    served(collection).then(|| (collection.to_string(), None, name.to_string(), subresource))
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(BodyExt::boxed(Full::new(Bytes::from(v.to_string()))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn not_found(path: &str) -> Response<Body> {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("the server could not find the requested resource ({path})"), "reason": "NotFound", "code": 404}),
    )
}

/// Serves `api` over plain HTTP/1.1 on `listener`, for `trellis-control` processes that
/// reach it through a kubeconfig (`kubeconfig`). Runs until the task is dropped.
pub async fn serve_http(api: MockApi, listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let api = api.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let api = api.clone();
                async move { api.handle(req).await }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// A kubeconfig whose one context is the mock API server at `addr`, without credentials.
pub fn kubeconfig(addr: std::net::SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: mock\n\
         clusters: [{{name: mock, cluster: {{server: \"http://{addr}\"}}}}]\n\
         users: [{{name: mock, user: {{}}}}]\n\
         contexts: [{{name: mock, context: {{cluster: mock, user: mock, namespace: default}}}}]\n"
    )
}

/// A kube client whose requests all go to `api`.
pub fn client(api: &MockApi) -> kube::Client {
    let api = api.clone();
    let svc = tower::service_fn(move |req| {
        let api = api.clone();
        async move { api.handle(req).await }
    });
    kube::Client::new(svc, "default")
}
