//! The pod annotations that tune injection, parsed and checked before anything is changed.

use super::error::InjectError;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// `enabled` or `disabled`, on a namespace label, or on a pod as label or annotation.
pub const INJECT: &str = "trellis.dev/inject";
/// Written by the injector: the version of the injector that changed the pod.
pub const INJECTED: &str = "trellis.dev/injected";
/// Written by the injector: the app's original HTTP and gRPC probes, which the proxy's admin port
/// serves under `/app-health/<container>/<kind>` (see docs/kubernetes.md).
pub const APP_PROBES: &str = "trellis.dev/app-probes";

pub const PROXY_CPU_REQUEST: &str = "trellis.dev/proxy-cpu-request";
pub const PROXY_MEMORY_REQUEST: &str = "trellis.dev/proxy-memory-request";
pub const PROXY_CPU_LIMIT: &str = "trellis.dev/proxy-cpu-limit";
pub const PROXY_MEMORY_LIMIT: &str = "trellis.dev/proxy-memory-limit";
pub const EXCLUDE_INBOUND_PORTS: &str = "trellis.dev/exclude-inbound-ports";
pub const EXCLUDE_OUTBOUND_PORTS: &str = "trellis.dev/exclude-outbound-ports";
pub const EXCLUDE_OUTBOUND_CIDRS: &str = "trellis.dev/exclude-outbound-cidrs";
pub const OPAQUE_PORTS: &str = "trellis.dev/opaque-ports";
pub const LOG_LEVEL: &str = "trellis.dev/log-level";

const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

/// What the pod's annotations ask for; `None` means the injector's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub cpu_request: Option<String>,
    pub memory_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_limit: Option<String>,
    /// Comma-separated lists, kept in the form the init command takes.
    pub exclude_inbound_ports: Option<String>,
    pub exclude_outbound_ports: Option<String>,
    pub exclude_outbound_cidrs: Option<String>,
    pub opaque_ports: Option<String>,
    pub log_level: Option<String>,
}

/// Whether the pod itself opts out, by label or annotation.
pub fn opted_out(
    labels: Option<&BTreeMap<String, String>>,
    annotations: Option<&BTreeMap<String, String>>,
) -> bool {
    [labels, annotations]
        .into_iter()
        .flatten()
        .any(|m| m.get(INJECT).is_some_and(|v| v == "disabled"))
}

/// Parses and checks every override. The first bad value is a denial that names the
/// annotation, the value and what is allowed.
pub fn parse(annotations: Option<&BTreeMap<String, String>>) -> Result<Overrides, InjectError> {
    let empty = BTreeMap::new();
    let a = annotations.unwrap_or(&empty);
    let get = |k: &str| a.get(k).map(|v| v.trim().to_string());
    let quantity = |k: &str| -> Result<Option<String>, InjectError> {
        get(k)
            .map(|v| {
                if is_quantity(&v) {
                    Ok(v)
                } else {
                    Err(bad(
                        k,
                        &v,
                        "a Kubernetes quantity such as 100m, 0.5, 64Mi or 1Gi",
                    ))
                }
            })
            .transpose()
    };
    let ports = |k: &str| -> Result<Option<String>, InjectError> {
        get(k)
            .map(|v| {
                // `trellis-proxy init` takes single ports (a comma list), not ranges.
                let ok = v.split(',').all(|p| is_port(p.trim()));
                if ok {
                    Ok(strip_spaces(&v))
                } else {
                    Err(bad(
                        k,
                        &v,
                        "comma-separated port numbers 1-65535, e.g. 5432,6379",
                    ))
                }
            })
            .transpose()
    };
    let cidrs = get(EXCLUDE_OUTBOUND_CIDRS)
        .map(|v| {
            if v.split(',').all(|c| is_cidr(c.trim())) {
                Ok(strip_spaces(&v))
            } else {
                Err(bad(
                    EXCLUDE_OUTBOUND_CIDRS,
                    &v,
                    "comma-separated CIDRs such as 10.0.0.0/8,fd00::/8",
                ))
            }
        })
        .transpose()?;
    let log_level = get(LOG_LEVEL)
        .map(|v| {
            if LOG_LEVELS.contains(&v.as_str()) {
                Ok(v)
            } else {
                Err(bad(LOG_LEVEL, &v, &LOG_LEVELS.join(", ")))
            }
        })
        .transpose()?;
    Ok(Overrides {
        cpu_request: quantity(PROXY_CPU_REQUEST)?,
        memory_request: quantity(PROXY_MEMORY_REQUEST)?,
        cpu_limit: quantity(PROXY_CPU_LIMIT)?,
        memory_limit: quantity(PROXY_MEMORY_LIMIT)?,
        exclude_inbound_ports: ports(EXCLUDE_INBOUND_PORTS)?,
        exclude_outbound_ports: ports(EXCLUDE_OUTBOUND_PORTS)?,
        exclude_outbound_cidrs: cidrs,
        opaque_ports: ports(OPAQUE_PORTS)?,
        log_level,
    })
}

fn bad(annotation: &str, value: &str, allowed: &str) -> InjectError {
    InjectError::BadAnnotation {
        annotation: annotation.to_string(),
        value: value.to_string(),
        allowed: allowed.to_string(),
    }
}

fn strip_spaces(v: &str) -> String {
    v.split(',').map(str::trim).collect::<Vec<_>>().join(",")
}

fn is_port(s: &str) -> bool {
    s.parse::<u16>().is_ok_and(|p| p > 0)
}

fn is_cidr(s: &str) -> bool {
    let Some((ip, len)) = s.split_once('/') else {
        return false;
    };
    match (ip.parse::<IpAddr>(), len.parse::<u8>()) {
        (Ok(IpAddr::V4(_)), Ok(l)) => l <= 32,
        (Ok(IpAddr::V6(_)), Ok(l)) => l <= 128,
        _ => false,
    }
}

/// The quantity grammar of Kubernetes' `resource.Quantity`: a signed decimal number, then an
/// optional binary (Ki..Ei), decimal (m, k, M..E) or exponent (e3) suffix.
fn is_quantity(s: &str) -> bool {
    let digits_end = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.' || *c == '+' || *c == '-'))
        .map_or(s.len(), |(i, _)| i);
    let (number, suffix) = s.split_at(digits_end);
    let number = number.strip_prefix(['+', '-']).unwrap_or(number);
    if number.is_empty() || number.contains(['+', '-']) || number.matches('.').count() > 1 {
        return false;
    }
    if number == "." {
        return false;
    }
    const SUFFIXES: &[&str] = &[
        "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E",
    ];
    SUFFIXES.contains(&suffix)
        || (suffix.len() > 1
            && matches!(suffix.as_bytes()[0], b'e' | b'E')
            && suffix[1..]
                .strip_prefix(['+', '-'])
                .unwrap_or(&suffix[1..])
                .bytes()
                .all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn quantities_follow_the_kubernetes_grammar() {
        for ok in ["100m", "0.5", "64Mi", "1Gi", "2", "1e3", "1.5G"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for no in ["", "abc", "10 Mi", "1.2.3", "Mi", "10mb", "-"] {
            assert!(!is_quantity(no), "{no}");
        }
    }

    #[test]
    fn overrides_are_parsed_and_normalised() {
        let a = ann(&[
            (PROXY_CPU_REQUEST, "50m"),
            (EXCLUDE_OUTBOUND_PORTS, "5432, 6379"),
            (EXCLUDE_OUTBOUND_CIDRS, "10.0.0.0/8,fd00::/8"),
            (OPAQUE_PORTS, "9000, 9001"),
            (LOG_LEVEL, "debug"),
        ]);
        let o = parse(Some(&a)).unwrap();
        assert_eq!(o.cpu_request.as_deref(), Some("50m"));
        assert_eq!(o.exclude_outbound_ports.as_deref(), Some("5432,6379"));
        assert_eq!(o.opaque_ports.as_deref(), Some("9000,9001"));
        assert_eq!(o.log_level.as_deref(), Some("debug"));
    }

    #[test]
    fn a_bad_override_names_the_annotation_and_what_is_allowed() {
        let a = ann(&[(EXCLUDE_INBOUND_PORTS, "80,http")]);
        let msg = parse(Some(&a)).unwrap_err().to_string();
        assert!(msg.contains("trellis.dev/exclude-inbound-ports"), "{msg}");
        assert!(msg.contains("\"80,http\""), "{msg}");
        assert!(msg.contains("port numbers 1-65535"), "{msg}");
        let a = ann(&[(OPAQUE_PORTS, "9000-9010")]);
        assert!(
            parse(Some(&a)).is_err(),
            "trellis-proxy init takes no ranges"
        );
        let a = ann(&[(EXCLUDE_OUTBOUND_CIDRS, "10.0.0.0/33")]);
        assert!(parse(Some(&a)).is_err());
        let a = ann(&[(LOG_LEVEL, "loud")]);
        assert!(parse(Some(&a)).unwrap_err().to_string().contains("debug"));
    }
}
