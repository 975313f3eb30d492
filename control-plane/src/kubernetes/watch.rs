//! One kube reflector per watched kind, cluster-wide: the stores the translator reads, and
//! one `Notify` that every settled change wakes.

use super::cluster::ClusterState;
use super::kinds::{
    TRELLIS_KINDS, gateway_resource, grpc_route_resource, http_route_resource,
    reference_grant_resource, trellis_resource,
};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How long the first sync waits for one watch before it goes on without it (a missing
/// CRD, or RBAC that forbids the list); the watch keeps retrying and fills in later.
const FIRST_SYNC: Duration = Duration::from_secs(10);

/// The readers of every watch; the watch tasks stop when this is dropped.
pub struct Watches {
    services: Store<Service>,
    endpoint_slices: Store<EndpointSlice>,
    pods: Store<Pod>,
    http_routes: Store<DynamicObject>,
    grpc_routes: Store<DynamicObject>,
    gateways: Store<DynamicObject>,
    reference_grants: Store<DynamicObject>,
    /// `kubernetes.io/tls` Secrets: one store per watched namespace, or one for all.
    secrets: Vec<Store<Secret>>,
    trellis: Vec<(&'static str, Store<DynamicObject>)>,
    pub changed: Arc<Notify>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts one reflector per kind, cluster-wide; TLS Secrets only in `secret_namespaces`
/// (`None`: all of them).
pub fn watch_all(client: &Client, secret_namespaces: Option<&[String]>) -> Watches {
    let changed = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    let services = spawn_typed(Api::all(client.clone()), trim, &changed, &mut tasks);
    let endpoint_slices = spawn_typed(Api::all(client.clone()), trim, &changed, &mut tasks);
    let pods = spawn_typed(Api::all(client.clone()), trim_pod, &changed, &mut tasks);
    let routes_ar = http_route_resource();
    let http_routes = spawn_dynamic(client, routes_ar, &changed, &mut tasks);
    let grpc_routes = spawn_dynamic(client, grpc_route_resource(), &changed, &mut tasks);
    let gateways = spawn_dynamic(client, gateway_resource(), &changed, &mut tasks);
    let reference_grants = spawn_dynamic(client, reference_grant_resource(), &changed, &mut tasks);
    // Only TLS Secrets, and only where Gateways may take them from: the field selector keeps
    // every other Secret (service-account tokens, app credentials) out of this process.
    let tls_only = || watcher::Config::default().fields("type=kubernetes.io/tls");
    let secrets = match secret_namespaces {
        None => vec![spawn_with(
            Api::all(client.clone()),
            tls_only(),
            trim_secret,
            &changed,
            &mut tasks,
        )],
        Some(list) => (list.iter())
            .map(|ns| {
                let api = Api::namespaced(client.clone(), ns);
                spawn_with(api, tls_only(), trim_secret, &changed, &mut tasks)
            })
            .collect(),
    };
    let trellis = TRELLIS_KINDS
        .iter()
        .map(|(kind, plural)| {
            let ar = trellis_resource(kind, plural);
            (*kind, spawn_dynamic(client, ar, &changed, &mut tasks))
        })
        .collect();
    Watches {
        services,
        endpoint_slices,
        pods,
        http_routes,
        grpc_routes,
        gateways,
        reference_grants,
        secrets,
        trellis,
        changed,
        tasks,
    }
}

/// A TLS Secret keeps its name, namespace, version, type and data: its annotations go too,
/// since `kubectl apply` copies the whole object, key included, into one of them.
fn trim_secret(s: &mut Secret) {
    trim(s);
    s.metadata.annotations = None;
    s.metadata.labels = None;
    s.string_data = None;
}

/// Drops what no part of Trellis reads from any object: its managed fields, which the API
/// server keeps per field manager and which are often the larger part of a small object.
fn trim<K: Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

/// Keeps of a Pod only what Trellis reads: its metadata (labels, annotations, version), its
/// service account, and its containers' names and ports (which a named `targetPort` needs).
/// The status, volumes, environment and the rest are dropped before the watch cache stores
/// them: 10,000 Pods were about 50 MB of each replica's memory (heaptrack, 2026-12-06), and
/// real Pods are larger than the benchmark's.
fn trim_pod(pod: &mut Pod) {
    trim(pod);
    pod.status = None;
    if let Some(spec) = &mut pod.spec {
        let containers = std::mem::take(&mut spec.containers)
            .into_iter()
            .map(|c| Container {
                name: c.name,
                ports: c.ports,
                ..Default::default()
            })
            .collect();
        *spec = PodSpec {
            containers,
            service_account_name: spec.service_account_name.take(),
            ..Default::default()
        };
    }
}

fn spawn_typed<K>(
    api: Api<K>,
    keep: fn(&mut K),
    changed: &Arc<Notify>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    spawn_with(api, watcher::Config::default(), keep, changed, tasks)
}

fn spawn_with<K>(
    api: Api<K>,
    config: watcher::Config,
    keep: fn(&mut K),
    changed: &Arc<Notify>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    tasks.push(tokio::spawn(drive(
        reflector::reflector(writer, watcher(api, config).modify(keep)),
        K::kind(&K::DynamicType::default()).to_string(),
        changed.clone(),
    )));
    reader
}

fn spawn_dynamic(
    client: &Client,
    ar: ApiResource,
    changed: &Arc<Notify>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Store<DynamicObject> {
    let writer = reflector::store::Writer::new(ar.clone());
    let reader = writer.as_reader();
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    tasks.push(tokio::spawn(drive(
        reflector::reflector(
            writer,
            watcher(api, watcher::Config::default()).modify(trim),
        ),
        ar.kind.clone(),
        changed.clone(),
    )));
    reader
}

/// Polls one reflector forever. Every settled change (not the objects of a relist still in
/// progress) wakes the translator; watch errors back off and retry, as kube's watcher does.
async fn drive<K>(
    stream: impl futures_util::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
    kind: String,
    changed: Arc<Notify>,
) {
    let mut stream = std::pin::pin!(stream.default_backoff());
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Ok(_) => changed.notify_one(),
            Err(e) => tracing::warn!(%kind, "watch failed, retrying: {e}"),
        }
    }
}

impl Watches {
    /// Waits until each watch has listed once, or `FIRST_SYNC` has passed for it.
    pub async fn first_sync(&self) {
        macro_rules! wait {
            ($store:expr, $what:expr) => {
                if tokio::time::timeout(FIRST_SYNC, $store.wait_until_ready()).await.is_err() {
                    tracing::warn!(
                        kind = $what,
                        "not listed yet; going on without it (is its CRD installed? see docs/kubernetes.md)"
                    );
                }
            };
        }
        wait!(self.services, "Service");
        wait!(self.endpoint_slices, "EndpointSlice");
        wait!(self.pods, "Pod");
        wait!(self.http_routes, "HTTPRoute");
        wait!(self.grpc_routes, "GRPCRoute");
        wait!(self.gateways, "Gateway");
        wait!(self.reference_grants, "ReferenceGrant");
        for s in &self.secrets {
            wait!(s, "Secret");
        }
        for (kind, store) in &self.trellis {
            wait!(store, *kind);
        }
    }

    /// A reader of the Pod watch.
    pub fn pods(&self) -> Store<Pod> {
        self.pods.clone()
    }

    /// Everything the reflectors hold now.
    pub fn state(&self) -> ClusterState {
        ClusterState {
            services: self.services.state(),
            endpoint_slices: self.endpoint_slices.state(),
            pods: self.pods.state(),
            http_routes: self.http_routes.state(),
            grpc_routes: self.grpc_routes.state(),
            gateways: self.gateways.state(),
            reference_grants: self.reference_grants.state(),
            secrets: self.secrets.iter().flat_map(|s| s.state()).collect(),
            trellis: self
                .trellis
                .iter()
                .map(|(k, s)| (*k, s.state()))
                .collect::<BTreeMap<_, _>>(),
        }
    }
}
