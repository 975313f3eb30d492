//! What the injector puts into pods: image, control-plane address, resources, log level and
//! CA bundle, from the control plane's flags or `trellis inject`'s.

/// What the injector puts into pods, from the control plane's flags.
#[derive(Debug, Clone)]
pub struct InjectConfig {
    /// The image holding `trellis-proxy` (both the init step and the sidecar run it).
    pub proxy_image: String,
    /// Where proxies reach the control plane's discovery and identity gRPC.
    pub control_plane: String,
    /// The UID the proxy runs as; `trellis-proxy init` exempts its traffic from redirection.
    pub proxy_uid: i64,
    pub cpu_request: String,
    pub memory_request: String,
    pub memory_limit: String,
    pub log_level: String,
    /// The mesh CA certificate (PEM), given to the proxy as `TRELLIS_CA_BUNDLE` so it can
    /// verify the control plane. The webhook sets it from the CA Secret; `trellis inject`
    /// from `--ca-bundle`.
    pub ca_bundle: Option<String>,
}

impl Default for InjectConfig {
    fn default() -> Self {
        InjectConfig {
            proxy_image: format!("ghcr.io/trellis-mesh/trellis:{}", env!("CARGO_PKG_VERSION")),
            control_plane: "https://trellis-control.trellis-system.svc:15010".into(),
            proxy_uid: 1337,
            cpu_request: "50m".into(),
            memory_request: "64Mi".into(),
            memory_limit: "256Mi".into(),
            log_level: "info".into(),
            ca_bundle: None,
        }
    }
}
