//! `trellis-proxy --kubernetes`: the bootstrap made from what the injector puts into the pod
//! (control-plane/src/inject/sidecar.rs) instead of a file.

// That is: downward-API environment variables, the pod's labels and annotations as
// downward-API files, the projected service-account token (audience `trellis`) and the mesh CA
// inline. The trellis gateway's Deployment (k8s/gateway/) sets the same variables by hand,
// plus `TRELLIS_GATEWAY`.

use crate::config::bootstrap::{
    App, AppProbe, Bootstrap, ControlPlane, GatewayMode, Limits, Listeners, ProtocolDetection,
    UpstreamSettings, WorkloadInfo,
};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// The annotation the injector stores kubelet's original probes in.
pub const APP_PROBES_ANNOTATION: &str = "trellis.dev/app-probes";

/// Why the pod's environment does not make a bootstrap. The message names the variable.
#[derive(Debug, thiserror::Error)]
#[error("--kubernetes: {0}")]
pub struct EnvError(String);

/// Builds the bootstrap from the pod's environment, read through `env` (the process
/// environment in production, a map in tests).
pub fn bootstrap_from_env(env: impl Fn(&str) -> Option<String>) -> Result<Bootstrap, EnvError> {
    let required = |name: &str| {
        env(name).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
            EnvError(format!(
                "{name} is not set; it is set by the trellis injector (was this pod injected by \
                 this version? compare its trellis.dev/injected annotation)"
            ))
        })
    };
    let addr = |name: &str, default: SocketAddr| -> Result<SocketAddr, EnvError> {
        match env(name) {
            Some(v) => v.parse().map_err(|e| {
                EnvError(format!(
                    "{name}={v:?} is not an address like 0.0.0.0:15006: {e}"
                ))
            }),
            None => Ok(default),
        }
    };

    let address = required("TRELLIS_CONTROL_PLANE")?;
    trellis_proto::connect::normalize(&address)
        .map_err(|e| EnvError(format!("TRELLIS_CONTROL_PLANE: {e}")))?;
    let ca_bundle_pem = match (env("TRELLIS_CA_BUNDLE"), env("TRELLIS_CA_BUNDLE_FILE")) {
        (Some(pem), _) if pem.contains("-----BEGIN CERTIFICATE-----") => pem,
        (Some(_), _) => {
            return Err(EnvError(
                "TRELLIS_CA_BUNDLE holds no PEM certificate; it must be the mesh CA (tls.crt of \
                 the trellis-system/trellis-ca Secret)"
                    .into(),
            ));
        }
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map_err(|e| EnvError(format!("TRELLIS_CA_BUNDLE_FILE {path}: {e}")))?,
        (None, None) => {
            return Err(EnvError(
                "TRELLIS_CA_BUNDLE is not set: the injector sets it to the mesh CA; with `trellis \
                 inject`, pass --ca-bundle"
                    .into(),
            ));
        }
    };

    let pod_ip = required("TRELLIS_POD_IP")?;
    let pod_ip: IpAddr = pod_ip
        .parse()
        .map_err(|e| EnvError(format!("TRELLIS_POD_IP={pod_ip:?}: {e}")))?;
    let info_dir = env("TRELLIS_POD_INFO_DIR").map(PathBuf::from);
    let labels = match &info_dir {
        Some(d) => read_downward(&d.join("labels"))?,
        None => BTreeMap::new(),
    };
    let annotations = match &info_dir {
        Some(d) => read_downward(&d.join("annotations"))?,
        None => BTreeMap::new(),
    };
    let app_probes = match annotations.get(APP_PROBES_ANNOTATION) {
        Some(json) => serde_json::from_str::<BTreeMap<String, AppProbe>>(json).map_err(|e| {
            EnvError(format!(
                "annotation {APP_PROBES_ANNOTATION} is not the injector's probe JSON: {e}; \
                 remove it and the rewritten probes, or re-inject the pod"
            ))
        })?,
        None => BTreeMap::new(),
    };

    let mut protocol_detection = ProtocolDetection::default();
    if let Some(list) = env("TRELLIS_OPAQUE_PORTS") {
        // The annotation adds to the defaults, as Linkerd's opaque-ports does for its own.
        for p in ports_list("TRELLIS_OPAQUE_PORTS", &list)? {
            if !protocol_detection.opaque_ports.contains(&p) {
                protocol_detection.opaque_ports.push(p);
            }
        }
    }

    let gateway = match env("TRELLIS_GATEWAY").filter(|g| !g.is_empty()) {
        None => None,
        Some(name) => {
            let list = required("TRELLIS_GATEWAY_LISTEN")?;
            let mut listen = BTreeMap::new();
            for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let parsed = item
                    .split_once('=')
                    .and_then(|(l, a)| Some((l.to_string(), a.parse::<SocketAddr>().ok()?)));
                let Some((listener, addr)) = parsed else {
                    return Err(EnvError(format!(
                        "TRELLIS_GATEWAY_LISTEN: {item:?} is not LISTENER=ADDRESS, e.g. http=0.0.0.0:8080"
                    )));
                };
                listen.insert(listener, addr);
            }
            let trusted_proxies = match env("TRELLIS_GATEWAY_TRUSTED_PROXIES") {
                None => 0,
                Some(v) => v.trim().parse().map_err(|_| {
                    EnvError(format!(
                        "TRELLIS_GATEWAY_TRUSTED_PROXIES={v:?} is not a number of proxies from 0 to 255"
                    ))
                })?,
            };
            Some(GatewayMode {
                name,
                listen,
                trusted_proxies,
            })
        }
    };

    let defaults = Listeners::default();
    Ok(Bootstrap {
        workload: WorkloadInfo {
            name: required("TRELLIS_POD_NAME")?,
            namespace: required("TRELLIS_POD_NAMESPACE")?,
            service_account: Some(required("TRELLIS_SERVICE_ACCOUNT")?),
            labels,
        },
        listeners: Listeners {
            outbound: addr("TRELLIS_OUTBOUND_ADDRESS", defaults.outbound)?,
            inbound: addr("TRELLIS_INBOUND_ADDRESS", defaults.inbound)?,
            // kubelet probes the pod IP, so the admin port listens on every address; what a
            // peer outside the pod may ask of it is limited (admin.rs).
            admin: addr(
                "TRELLIS_ADMIN_ADDRESS",
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 15000),
            )?,
        },
        app: App {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ports: named_ports(&env("TRELLIS_APP_PORTS").unwrap_or_default())?,
        },
        mesh_file: None,
        control_plane: Some(ControlPlane {
            address,
            ca_bundle: None,
            ca_bundle_pem: Some(ca_bundle_pem),
            token_file: Some(PathBuf::from(required("TRELLIS_TOKEN_FILE")?)),
        }),
        limits: Limits::default(),
        upstream: UpstreamSettings {
            multiplex: env("TRELLIS_MULTIPLEX").is_none_or(|v| v != "false"),
        },
        tcp: Vec::new(),
        access_log: env("TRELLIS_ACCESS_LOG").is_some_and(|v| v == "true"),
        protocol_detection,
        gateway,
        advertise_address: Some(pod_ip),
        app_probes,
    })
}

/// `http=8080,9090,admin=9901`: every container port, so that inbound can deliver to it.
/// A named one is keyed by its name (a Service's named targetPort resolves through it); an
/// unnamed one by its number, which no port name can be (a Kubernetes port name has a letter).
fn named_ports(list: &str) -> Result<BTreeMap<String, u16>, EnvError> {
    let mut out = BTreeMap::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, port) = match item.split_once('=') {
            Some((n, p)) => (Some(n), p),
            None => (None, item),
        };
        let port: u16 = port.parse().map_err(|_| {
            EnvError(format!(
                "TRELLIS_APP_PORTS: {item:?} is not NAME=PORT or PORT"
            ))
        })?;
        out.insert(name.map_or_else(|| port.to_string(), str::to_string), port);
    }
    Ok(out)
}

fn ports_list(var: &str, list: &str) -> Result<Vec<u16>, EnvError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|p| {
            p.parse()
                .map_err(|_| EnvError(format!("{var}: {p:?} is not a port number")))
        })
        .collect()
}

fn read_downward(path: &Path) -> Result<BTreeMap<String, String>, EnvError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EnvError(format!("cannot read {}: {e}", path.display())))?;
    parse_downward(&text).map_err(|e| EnvError(format!("{}: {e}", path.display())))
}

/// A line of a downward API file that is not `key="value"`.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {why}: {text:?}")]
pub struct DownwardError {
    line: usize,
    why: &'static str,
    text: String,
}

/// The downward API's file format for labels and annotations: one `key="value"` per line,
/// the value a Go-quoted string (escapes `\"`, `\\`, `\n`, `\t`, `\xNN`, `\uNNNN`, ...).
pub fn parse_downward(text: &str) -> Result<BTreeMap<String, String>, DownwardError> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why| DownwardError {
            line: i + 1,
            why,
            text: line.to_string(),
        };
        let (key, quoted) = line.split_once('=').ok_or_else(|| bad("no ="))?;
        let value = unquote(quoted).ok_or_else(|| bad("the value is not a quoted string"))?;
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

fn unquote(q: &str) -> Option<String> {
    let inner = q.strip_prefix('"')?.strip_suffix('"')?;
    let mut bytes = Vec::with_capacity(inner.len());
    let mut chars = inner.chars();
    let hex = |chars: &mut std::str::Chars, n: usize| -> Option<u32> {
        let s: String = chars.by_ref().take(n).collect();
        if s.len() != n {
            return None;
        }
        u32::from_str_radix(&s, 16).ok()
    };
    let push = |c: char, bytes: &mut Vec<u8>| {
        let mut buf = [0; 4];
        bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    };
    while let Some(c) = chars.next() {
        if c != '\\' {
            push(c, &mut bytes);
            continue;
        }
        match chars.next()? {
            'n' => bytes.push(b'\n'),
            't' => bytes.push(b'\t'),
            'r' => bytes.push(b'\r'),
            'a' => bytes.push(0x07),
            'b' => bytes.push(0x08),
            'f' => bytes.push(0x0c),
            'v' => bytes.push(0x0b),
            '\\' => bytes.push(b'\\'),
            '"' => bytes.push(b'"'),
            '\'' => bytes.push(b'\''),
            // A raw byte: Go escapes invalid UTF-8 this way.
            'x' => bytes.push(u8::try_from(hex(&mut chars, 2)?).ok()?),
            'u' => push(char::from_u32(hex(&mut chars, 4)?)?, &mut bytes),
            'U' => push(char::from_u32(hex(&mut chars, 8)?)?, &mut bytes),
            d @ '0'..='7' => {
                let rest: String = chars.by_ref().take(2).collect();
                let v = u32::from_str_radix(&format!("{d}{rest}"), 8).ok()?;
                bytes.push(u8::try_from(v).ok()?);
            }
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downward_files_unquote_like_go() {
        let text = "app=\"trip\"\nversion=\"v2\"\n\
                    trellis.dev/app-probes=\"{\\\"app/readiness\\\":{\\\"port\\\":8080}}\"\n\
                    note=\"tab\\there \\u00e9 \\\\ end\"\n";
        let m = parse_downward(text).unwrap();
        assert_eq!(m["app"], "trip");
        assert_eq!(m["version"], "v2");
        assert_eq!(
            m["trellis.dev/app-probes"],
            r#"{"app/readiness":{"port":8080}}"#
        );
        assert_eq!(m["note"], "tab\there é \\ end");
        let e = parse_downward("broken\n").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        assert!(parse_downward("k=unquoted").is_err());
    }

    #[test]
    fn app_ports_keep_every_port_named_ones_by_name() {
        let p = named_ports("http=8080, 9090,grpc=9091").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p["http"], 8080);
        assert_eq!(p["grpc"], 9091);
        assert_eq!(p["9090"], 9090);
        let e = named_ports("http=eighty").unwrap_err().to_string();
        assert!(e.contains("TRELLIS_APP_PORTS"), "{e}");
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const FULL: &[(&str, &str)] = &[
        ("TRELLIS_POD_NAME", "trip-7d9f-abcde"),
        ("TRELLIS_POD_NAMESPACE", "rides"),
        ("TRELLIS_POD_IP", "10.1.2.3"),
        ("TRELLIS_SERVICE_ACCOUNT", "trip"),
        (
            "TRELLIS_CONTROL_PLANE",
            "https://trellis-control.trellis-system.svc:15010",
        ),
        ("TRELLIS_TOKEN_FILE", "/var/run/secrets/trellis/token"),
        (
            "TRELLIS_CA_BUNDLE",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        ),
        ("TRELLIS_APP_PORTS", "http=8080"),
        ("TRELLIS_OPAQUE_PORTS", "9000,6379"),
    ];

    #[test]
    fn the_injected_environment_makes_a_bootstrap() {
        let b = bootstrap_from_env(env_of(FULL)).unwrap();
        assert_eq!(b.workload.name, "trip-7d9f-abcde");
        assert_eq!(b.workload.namespace, "rides");
        assert_eq!(b.workload.service_account.as_deref(), Some("trip"));
        assert_eq!(b.advertise_address, Some("10.1.2.3".parse().unwrap()));
        assert_eq!(b.listeners.admin, "0.0.0.0:15000".parse().unwrap());
        assert_eq!(b.listeners.inbound, "0.0.0.0:15006".parse().unwrap());
        assert_eq!(b.listeners.outbound, "127.0.0.1:15001".parse().unwrap());
        assert_eq!(b.app.ports["http"], 8080);
        let opaque = &b.protocol_detection.opaque_ports;
        assert!(opaque.contains(&9000) && opaque.contains(&3306));
        assert_eq!(opaque.iter().filter(|p| **p == 6379).count(), 1);
        let cp = b.control_plane.unwrap();
        assert!(cp.ca_bundle_pem.unwrap().contains("BEGIN CERTIFICATE"));
    }

    #[test]
    fn the_gateway_deployment_makes_a_gateway_bootstrap() {
        let mut pairs = FULL.to_vec();
        pairs.push(("TRELLIS_GATEWAY", "ride-gateway"));
        let e = bootstrap_from_env(env_of(&pairs)).unwrap_err().to_string();
        assert!(e.contains("TRELLIS_GATEWAY_LISTEN"), "{e}");
        pairs.push((
            "TRELLIS_GATEWAY_LISTEN",
            "http=0.0.0.0:8080, admin-http=0.0.0.0:8081",
        ));
        let b = bootstrap_from_env(env_of(&pairs)).unwrap();
        let g = b.gateway.unwrap();
        assert_eq!(g.key("trellis-system"), "trellis-system/ride-gateway");
        assert_eq!(g.listen["http"], "0.0.0.0:8080".parse().unwrap());
        assert_eq!(g.listen.len(), 2);
        assert_eq!(
            g.trusted_proxies, 0,
            "nothing a client says is believed by default"
        );
        let mut lb = pairs.clone();
        lb.push(("TRELLIS_GATEWAY_TRUSTED_PROXIES", "1"));
        let b = bootstrap_from_env(env_of(&lb)).unwrap();
        assert_eq!(b.gateway.unwrap().trusted_proxies, 1);
        lb.push(("TRELLIS_GATEWAY_TRUSTED_PROXIES", "all"));
        let e = bootstrap_from_env(env_of(&lb)).unwrap_err().to_string();
        assert!(e.contains("TRELLIS_GATEWAY_TRUSTED_PROXIES=\"all\""), "{e}");
        pairs.push(("TRELLIS_GATEWAY_LISTEN", "http:8080"));
        let e = bootstrap_from_env(env_of(&pairs)).unwrap_err().to_string();
        assert!(e.contains("LISTENER=ADDRESS"), "{e}");
    }

    #[test]
    fn a_missing_variable_is_named() {
        for missing in [
            "TRELLIS_POD_NAME",
            "TRELLIS_CA_BUNDLE",
            "TRELLIS_TOKEN_FILE",
        ] {
            let pairs: Vec<_> = FULL
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            let e = bootstrap_from_env(env_of(&pairs)).unwrap_err().to_string();
            assert!(e.contains(missing), "{missing}: {e}");
        }
        let mut pairs = FULL.to_vec();
        pairs.push(("TRELLIS_ADMIN_ADDRESS", "nowhere"));
        let e = bootstrap_from_env(env_of(&pairs)).unwrap_err().to_string();
        assert!(e.contains("TRELLIS_ADMIN_ADDRESS"), "{e}");
    }
}
