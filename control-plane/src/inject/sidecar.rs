//! The containers and volumes the injector adds: `trellis-init` (iptables, NET_ADMIN and
//! NET_RAW only) and `trellis-proxy` as a native sidecar (Kubernetes 1.29+).

use super::config::InjectConfig;
use super::overrides::Overrides;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, DownwardAPIVolumeFile, DownwardAPIVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, ObjectFieldSelector, PodSpec, Probe, ProjectedVolumeSource,
    ResourceRequirements, SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount,
    VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// The container names the injector adds; a pod that already has one is already injected.
pub const INIT_CONTAINER: &str = "trellis-init";
pub const PROXY_CONTAINER: &str = "trellis-proxy";

/// Ports from DESIGN.md: outbound, inbound, admin. An app must not use them.
pub const OUTBOUND_PORT: i32 = 15001;
pub const INBOUND_PORT: i32 = 15006;
pub const ADMIN_PORT: i32 = 15000;
pub const PROXY_PORTS: [i32; 3] = [ADMIN_PORT, OUTBOUND_PORT, INBOUND_PORT];

const TOKEN_VOLUME: &str = "trellis-token";
const TOKEN_DIR: &str = "/var/run/secrets/trellis";
const PODINFO_VOLUME: &str = "trellis-podinfo";
const PODINFO_DIR: &str = "/etc/trellis/podinfo";
/// The audience `Certify` checks through TokenReview; a token for the API server is refused.
pub const TOKEN_AUDIENCE: &str = "trellis";
/// One hour, renewed by the kubelet at 80%; the proxy re-reads the file on each Certify.
const TOKEN_SECONDS: i64 = 3600;

/// `trellis-proxy init`: installs the redirect rules, then exits.
pub fn init_container(cfg: &InjectConfig, over: &Overrides, _spec: &PodSpec) -> Container {
    // The admin port is never redirected, so kubelet's probes (rewritten onto it) and
    // Prometheus reach the proxy directly.
    let mut inbound_excluded = ADMIN_PORT.to_string();
    if let Some(p) = &over.exclude_inbound_ports {
        inbound_excluded = format!("{inbound_excluded},{p}");
    }
    let mut args = vec![
        "init".to_string(),
        "--proxy-uid".into(),
        cfg.proxy_uid.to_string(),
        "--inbound-port".into(),
        INBOUND_PORT.to_string(),
        "--outbound-port".into(),
        OUTBOUND_PORT.to_string(),
        "--exclude-inbound-ports".into(),
        inbound_excluded,
    ];
    if let Some(p) = &over.exclude_outbound_ports {
        args.extend(["--exclude-outbound-ports".into(), p.clone()]);
    }
    if let Some(c) = &over.exclude_outbound_cidrs {
        args.extend(["--exclude-outbound-cidrs".into(), c.clone()]);
    }
    Container {
        name: INIT_CONTAINER.into(),
        image: Some(cfg.proxy_image.clone()),
        command: Some(vec!["trellis-proxy".into()]),
        args: Some(args),
        resources: Some(resources(("10m", "16Mi"), (None, Some("64Mi")))),
        security_context: Some(SecurityContext {
            // iptables needs root in the pod's network namespace, and nothing else.
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The proxy, as an init container with `restartPolicy: Always`: kubelet starts it before
/// the app and waits for its startup probe, and stops it after the app, so Jobs complete.
pub fn proxy_container(cfg: &InjectConfig, over: &Overrides, spec: &PodSpec) -> Container {
    let field = |name: &str, path: &str| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let value = |name: &str, v: String| EnvVar {
        name: name.into(),
        value: Some(v),
        ..Default::default()
    };
    // The app's named ports, so a Service's named targetPort resolves on this endpoint.
    let app_ports: Vec<String> = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| match &p.name {
            Some(n) => format!("{n}={}", p.container_port),
            None => p.container_port.to_string(),
        })
        .collect();
    let mut env = vec![
        field("TRELLIS_POD_NAME", "metadata.name"),
        field("TRELLIS_POD_NAMESPACE", "metadata.namespace"),
        field("TRELLIS_POD_IP", "status.podIP"),
        field("TRELLIS_SERVICE_ACCOUNT", "spec.serviceAccountName"),
        field("TRELLIS_NODE_NAME", "spec.nodeName"),
        value("TRELLIS_CONTROL_PLANE", cfg.control_plane.clone()),
        value("TRELLIS_TOKEN_FILE", format!("{TOKEN_DIR}/token")),
        value("TRELLIS_POD_INFO_DIR", PODINFO_DIR.into()),
        value("TRELLIS_APP_PORTS", app_ports.join(",")),
        value(
            "TRELLIS_LOG",
            over.log_level
                .clone()
                .unwrap_or_else(|| cfg.log_level.clone()),
        ),
    ];
    if let Some(p) = &over.opaque_ports {
        env.push(value("TRELLIS_OPAQUE_PORTS", p.clone()));
    }
    if let Some(pem) = &cfg.ca_bundle {
        env.push(value("TRELLIS_CA_BUNDLE", pem.clone()));
    }
    let admin_probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(ADMIN_PORT),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Default::default()
    };
    let cpu_request = over.cpu_request.as_deref().unwrap_or(&cfg.cpu_request);
    let memory_request = over
        .memory_request
        .as_deref()
        .unwrap_or(&cfg.memory_request);
    let memory_limit = over.memory_limit.as_deref().unwrap_or(&cfg.memory_limit);
    Container {
        name: PROXY_CONTAINER.into(),
        image: Some(cfg.proxy_image.clone()),
        command: Some(vec!["trellis-proxy".into()]),
        // Two worker threads, not one per node core: the sidecar shares the pod's CPU with
        // the app, and its request is 50m.
        args: Some(vec!["--kubernetes".into(), "--workers".into(), "2".into()]),
        restart_policy: Some("Always".into()),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("trellis-admin".into()),
            container_port: ADMIN_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        // The app starts only once this passes: the proxy has its first config.
        startup_probe: Some(admin_probe("/ready", 1, 120)),
        readiness_probe: Some(admin_probe("/ready", 5, 3)),
        liveness_probe: Some(admin_probe("/live", 10, 3)),
        resources: Some(resources(
            (cpu_request, memory_request),
            (over.cpu_limit.as_deref(), Some(memory_limit)),
        )),
        security_context: Some(SecurityContext {
            run_as_user: Some(cfg.proxy_uid),
            run_as_group: Some(cfg.proxy_uid),
            run_as_non_root: Some(true),
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: TOKEN_VOLUME.into(),
                mount_path: TOKEN_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: PODINFO_VOLUME.into(),
                mount_path: PODINFO_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
        ]),
        ..Default::default()
    }
}

/// The projected token (audience `trellis`) and the pod's labels and annotations.
pub fn volumes() -> Vec<Volume> {
    let item = |path: &str, field: &str| DownwardAPIVolumeFile {
        path: path.into(),
        field_ref: Some(ObjectFieldSelector {
            field_path: field.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    vec![
        Volume {
            name: TOKEN_VOLUME.into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(TOKEN_AUDIENCE.into()),
                        expiration_seconds: Some(TOKEN_SECONDS),
                        path: "token".into(),
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: PODINFO_VOLUME.into(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![
                    item("labels", "metadata.labels"),
                    item("annotations", "metadata.annotations"),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        },
    ]
}

fn resources(requests: (&str, &str), limits: (Option<&str>, Option<&str>)) -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_string());
    let mut lim = BTreeMap::new();
    if let Some(c) = limits.0 {
        lim.insert("cpu".to_string(), q(c));
    }
    if let Some(m) = limits.1 {
        lim.insert("memory".to_string(), q(m));
    }
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), q(requests.0)),
            ("memory".to_string(), q(requests.1)),
        ])),
        limits: Some(lim).filter(|l| !l.is_empty()),
        ..Default::default()
    }
}
