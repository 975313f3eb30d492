//! `trellis-control --kubernetes` against a mock API server serving real API JSON (lists from
//! tests/fixtures/cluster, watch events from the tests): the cluster becomes the same config
//! as file mode, and adds, updates, deletes, watch restarts and relists flow into it.

#[path = "../discovery/fake_proxy.rs"]
mod fake_proxy;
#[path = "../k8s/mod.rs"]
mod k8s;

mod gateways;
mod refusals;
mod replicas;
mod shift;
mod status;
mod translation;
mod trust;
mod watch;

use k8s::mock_api::{MockApi, client};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use testkit::eventually;
use trellis_config::compile::NodeIdentity;
use trellis_control::world::World;

const SERVICES: &str = "/api/v1/services";
const PODS: &str = "/api/v1/pods";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const ROUTES: &str = "/apis/gateway.networking.k8s.io/v1/httproutes";
const GRPC_ROUTES: &str = "/apis/gateway.networking.k8s.io/v1/grpcroutes";
const GATEWAYS: &str = "/apis/gateway.networking.k8s.io/v1/gateways";
const POLICIES: &str = "/apis/trellis.dev/v1alpha1/resiliencepolicies";
const AUTHZ: &str = "/apis/trellis.dev/v1alpha1/authorizationpolicies";
const SCOPES: &str = "/apis/trellis.dev/v1alpha1/scopes";
const CLASSES: &str = "/apis/gateway.networking.k8s.io/v1/gatewayclasses";
const SECRETS: &str = "/api/v1/secrets";
const GRANTS: &str = "/apis/gateway.networking.k8s.io/v1beta1/referencegrants";
const WAIT: Duration = Duration::from_secs(10);

fn fixture(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(k8s::fixture(&format!("cluster/{name}"))).unwrap())
        .unwrap()
}

fn item(list: &str, name: &str) -> Value {
    let list = fixture(list);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["metadata"]["name"] == name)
        .unwrap()
        .clone()
}

struct Cluster {
    api: MockApi,
    running: trellis_control::Running,
    state: tempfile::TempDir,
}

async fn cluster() -> Cluster {
    cluster_with(|_| {}).await
}

async fn cluster_with(tweak: impl FnOnce(&mut trellis_control::Options)) -> Cluster {
    let api = MockApi::default();
    api.serve(SERVICES, fixture("services.json"));
    api.serve(PODS, fixture("pods.json"));
    api.serve(SLICES, fixture("endpointslices.json"));
    api.serve(ROUTES, fixture("httproutes.json"));
    api.serve(GRPC_ROUTES, fixture("grpcroutes.json"));
    api.serve(GATEWAYS, fixture("gateways.json"));
    api.serve(POLICIES, fixture("resiliencepolicies.json"));
    api.serve("/apis/trellis.dev/v1alpha1/meshes", fixture("meshes.json"));
    api.serve(
        "/apis/trellis.dev/v1alpha1/workloads",
        fixture("workloads.json"),
    );
    api.serve(AUTHZ, fixture("authorizationpolicies.json"));
    api.serve(SCOPES, fixture("scopes.json"));
    api.serve(
        "/apis/trellis.dev/v1alpha1/clientratelimits",
        json!({"apiVersion": "trellis.dev/v1alpha1", "kind": "ClientRateLimitList", "metadata": {"resourceVersion": "1"}, "items": []}),
    );
    api.serve(
        SECRETS,
        json!({"apiVersion": "v1", "kind": "SecretList", "metadata": {"resourceVersion": "1"}, "items": []}),
    );
    api.serve(
        GRANTS,
        json!({"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrantList", "metadata": {"resourceVersion": "1"}, "items": []}),
    );
    // Not watched: the status writer reads the `trellis` class once to mark it Accepted.
    api.serve(
        CLASSES,
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClassList", "metadata": {}, "items": [
            {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
             "metadata": {"name": "trellis", "resourceVersion": "4400", "generation": 2},
             "spec": {"controllerName": "trellis.dev/gateway"}},
            {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
             "metadata": {"name": "istio", "resourceVersion": "4401", "generation": 1},
             "spec": {"controllerName": "istio.io/gateway-controller"}}]}),
    );
    let state = tempfile::tempdir().unwrap();
    let running = start(&api, state.path(), tweak).await;
    Cluster {
        api,
        running,
        state,
    }
}

/// A control plane in Kubernetes mode over `api`, its CA generated into (or read from)
/// `state`.
async fn start(
    api: &MockApi,
    state: &std::path::Path,
    tweak: impl FnOnce(&mut trellis_control::Options),
) -> trellis_control::Running {
    let mut opts = trellis_control::Options {
        registration_grace: Duration::from_millis(20),
        ..trellis_control::Options::local(Default::default(), state.to_path_buf())
    };
    tweak(&mut opts);
    trellis_control::start_with(opts, trellis_control::Source::Kubernetes(client(api)))
        .await
        .unwrap()
}

impl Cluster {
    fn state_dir(&self) -> &std::path::Path {
        self.state.path()
    }

    /// Another replica over the same API server, sharing the CA as replicas share the
    /// `trellis-ca` Secret.
    async fn replica(&self) -> trellis_control::Running {
        start(&self.api, self.state_dir(), |_| {}).await
    }

    /// Waits until the route's status, as the API server holds it, satisfies `check`.
    async fn route_status(&self, path: &str, name: &str, check: impl Fn(&str) -> bool) -> Value {
        eventually(WAIT, &format!("the status of {name}"), || {
            let r = self.api.object(path, "rides", name);
            let s = r
                .map(|r| r["status"].clone())
                .filter(|s| check(&s.to_string()));
            async move { s }
        })
        .await
    }

    /// Shifts `route` to `wanted`, checks it came from `source`, and returns the one spec
    /// patch the API server received: (path, content type, body). The status writer's
    /// patches of the status subresource are not shift's.
    async fn shift(
        &self,
        route: &str,
        wanted: &HashMap<String, u32>,
        source: &str,
    ) -> (String, String, Value) {
        let resp = trellis_control::shift::shift(&self.running.cp, route, wanted, WAIT)
            .await
            .unwrap();
        assert!(resp.failures.is_empty(), "{resp:?}");
        assert_eq!(resp.file, source);
        let mut patches: Vec<_> = self.api.patches.lock().unwrap().clone();
        patches.retain(|(path, ..)| !path.ends_with("/status"));
        assert_eq!(patches.len(), 1, "{patches:?}");
        patches.remove(0)
    }

    /// The number of status writes once no new one has come for 300 ms.
    async fn quiet_status_writes(&self) -> usize {
        eventually(WAIT, "status writes to settle", || async move {
            let n = self.status_writes();
            tokio::time::sleep(Duration::from_millis(300)).await;
            (self.status_writes() == n).then_some(n)
        })
        .await
    }

    fn status_writes(&self) -> usize {
        let patches = self.api.patches.lock().unwrap();
        patches
            .iter()
            .filter(|(p, ..)| p.ends_with("/status"))
            .count()
    }

    /// Waits until the served config satisfies `check`.
    async fn until(&self, what: &str, check: impl Fn(&World) -> bool) -> Arc<World> {
        let cp = self.running.cp.clone();
        eventually(WAIT, what, || {
            let w = cp.world().filter(|w| check(w));
            async move { w }
        })
        .await
    }
}

fn services(w: &World) -> Vec<String> {
    w.config.services.iter().map(|s| s.key()).collect()
}

fn workloads(w: &World) -> BTreeMap<String, String> {
    w.config
        .workloads
        .iter()
        .map(|d| (d.key(), d.object.spec.address.value.clone()))
        .collect()
}

fn weights(w: &World, route: &str) -> Vec<(String, Option<u32>)> {
    w.config
        .http_routes
        .iter()
        .filter(|r| r.key() == route)
        .flat_map(|r| r.object.spec.rules.iter().flat_map(|r| &r.backend_refs))
        .map(|b| (b.name.value.clone(), b.weight))
        .collect()
}

fn node(name: &str, app: &str, sa: &str) -> NodeIdentity {
    NodeIdentity {
        name: name.into(),
        namespace: "rides".into(),
        labels: BTreeMap::from([("app".into(), app.into()), ("version".into(), "v1".into())]),
        service_account: Some(sa.into()),
    }
}

/// Trellis' entry in a route's `status.parents`.
fn ours(status: &Value) -> &Value {
    let mine: Vec<&Value> = status["parents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["controllerName"] == "trellis.dev/gateway")
        .collect();
    assert_eq!(mine.len(), 1, "one entry of Trellis' in {status}");
    mine[0]
}

fn condition<'a>(parent: &'a Value, kind: &str) -> &'a Value {
    parent["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} condition in {parent}"))
}
