//! Why a pod cannot be injected. The message is what `kubectl` shows the user.

/// Why a pod cannot be injected. The message is what `kubectl` shows the user.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InjectError {
    #[error(
        "annotation {annotation}: {value:?} is not valid; use {allowed}, or remove the annotation"
    )]
    BadAnnotation {
        annotation: String,
        value: String,
        allowed: String,
    },
    #[error(
        "pods with hostNetwork: true cannot get a sidecar (its iptables rules would redirect the node's traffic); label the pod trellis.dev/inject: disabled"
    )]
    HostNetwork,
    #[error(
        "the pod already has a container named {0:?} but no trellis.dev/injected annotation; rename that container or label the pod trellis.dev/inject: disabled"
    )]
    NameTaken(String),
    #[error(
        "the pod uses port {port} in container {container:?}, which the proxy needs (15000, 15001, 15006); move the app to another port"
    )]
    PortTaken { container: String, port: i32 },
}
