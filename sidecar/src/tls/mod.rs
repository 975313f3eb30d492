//! The proxy's mesh identity and the rustls configs built on it: one server config and one
//! client config per ALPN for the whole process.

// The certificate and the trust bundle behind the configs are swapped in place at each
// rotation, so rotation never rebuilds a config and never touches an open connection.

pub mod accept;
pub mod gateway;
pub mod metrics;

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::{ClientConfig, ServerConfig};
use std::sync::Arc;
use trellis_identity::verify::SharedBundle;
use trellis_identity::{
    CertInfo, CurrentCert, PeerVerifier, SpiffeServerVerifier, TrustBundle, provider,
};

/// ALPN of opaque TCP carried between two sidecars.
pub const ALPN_TCP: &[u8] = b"trellis-tcp";
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// This proxy's certificate and the configs that present it.
pub struct MeshTls {
    pub cert: Arc<CurrentCert>,
    pub bundle: SharedBundle,
    /// What the current certificate says, for `/config_dump`, metrics and rotation.
    pub info: ArcSwapOption<CertInfo>,
    pub server: Arc<ServerConfig>,
    pub client_http1: Arc<ClientConfig>,
    pub client_http2: Arc<ClientConfig>,
    pub client_tcp: Arc<ClientConfig>,
    /// The current certificate chain and key as PEM, for a client that takes PEM: a gateway
    /// proxy proves its identity with them on its discovery stream, to be sent its keys.
    pub pem: ArcSwapOption<(String, String)>,
    /// Signalled whenever a certificate is installed.
    pub installed: tokio::sync::Notify,
    /// Set once the proxy has told the control plane it accepts mTLS; until then callers
    /// would still send it plaintext, so it is not ready.
    pub registered: std::sync::atomic::AtomicBool,
}

impl MeshTls {
    pub fn new() -> Arc<MeshTls> {
        let cert = Arc::new(CurrentCert::default());
        let empty = TrustBundle::new("", Vec::new()).expect("an empty bundle is valid");
        let bundle: SharedBundle = Arc::new(ArcSwap::from_pointee(empty));
        // TLS 1.3 preferred, 1.2 the floor (both sides are Trellis, so 1.3 is what runs).
        let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&versions)
            .expect("aws-lc-rs supports TLS 1.2 and 1.3")
            .with_client_cert_verifier(Arc::new(PeerVerifier {
                bundle: bundle.clone(),
            }))
            .with_cert_resolver(cert.clone());
        server.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec(), ALPN_TCP.to_vec()];
        let client = |alpn: &[u8]| {
            let mut c = ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&versions)
                .expect("aws-lc-rs supports TLS 1.2 and 1.3")
                .dangerous() // the verifier below checks the chain and the SPIFFE ID
                .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier {
                    bundle: bundle.clone(),
                }))
                .with_client_cert_resolver(cert.clone());
            c.alpn_protocols = vec![alpn.to_vec()];
            Arc::new(c)
        };
        Arc::new(MeshTls {
            client_http1: client(ALPN_HTTP1),
            client_http2: client(ALPN_H2),
            client_tcp: client(ALPN_TCP),
            server: Arc::new(server),
            cert,
            bundle,
            info: ArcSwapOption::empty(),
            pem: ArcSwapOption::empty(),
            installed: tokio::sync::Notify::new(),
            registered: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// True once a certificate is installed.
    pub fn is_ready(&self) -> bool {
        self.cert.is_set()
    }

    /// True once certified and registered with the control plane as an mTLS endpoint.
    pub fn is_serving(&self) -> bool {
        self.is_ready() && self.registered.load(std::sync::atomic::Ordering::Acquire)
    }
}
