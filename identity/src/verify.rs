//! The two rustls verifiers of a mesh hop. Both check the chain against the mesh's trust
//! bundle and insist on a SPIFFE ID.

// The bundle is swappable, so a new bundle needs no new rustls config. The client checks that
// the server is exactly the identity the control plane said the endpoint runs as; the server
// requires a client certificate.

use crate::cert::{self, CertError};
use crate::spiffe::SpiffeId;
use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use std::sync::{Arc, OnceLock};

/// The handshake-signature half of a rustls verifier, the same for every verifier here:
/// checked with the mesh's provider's algorithms (`algorithms()`).
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms())
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms())
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            algorithms().supported_schemes()
        }
    };
}

/// The one crypto provider of the mesh (aws-lc-rs). Configs name it explicitly so that another
/// provider compiled into the process by some dependency can never be picked by accident.
pub fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// The roots a mesh trusts, and the trust domain its identities live in.
#[derive(Debug)]
pub struct TrustBundle {
    pub trust_domain: String,
    pub roots: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
}

impl TrustBundle {
    pub fn new(
        trust_domain: &str,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<TrustBundle, CertError> {
        let anchors = roots
            .iter()
            .map(|r| {
                webpki::anchor_from_trusted_cert(r)
                    .map(|a| a.to_owned())
                    .map_err(|e| CertError::X509(format!("trust anchor: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(TrustBundle {
            trust_domain: trust_domain.into(),
            roots,
            anchors,
        })
    }

    /// Checks `end_entity`'s chain for `usage` and returns its SPIFFE ID.
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: webpki::KeyUsage,
    ) -> Result<SpiffeId, Error> {
        let ee = webpki::EndEntityCert::try_from(end_entity).map_err(pki_error)?;
        ee.verify_for_usage(
            algorithms().all,
            &self.anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(pki_error)?;
        let id = cert::inspect(end_entity)
            .map_err(|e| {
                Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(e))))
            })?
            .id;
        if id.trust_domain != self.trust_domain {
            return Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(id)
    }
}

fn algorithms() -> &'static WebPkiSupportedAlgorithms {
    static A: OnceLock<WebPkiSupportedAlgorithms> = OnceLock::new();
    A.get_or_init(|| provider().signature_verification_algorithms)
}

fn pki_error(e: webpki::Error) -> Error {
    use webpki::Error as E;
    Error::InvalidCertificate(match e {
        E::BadDer | E::BadDerTime => CertificateError::BadEncoding,
        E::CertExpired { .. } => CertificateError::Expired,
        E::CertNotValidYet { .. } => CertificateError::NotValidYet,
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        other => CertificateError::Other(rustls::OtherError(Arc::new(other))),
    })
}

/// A bundle that can be replaced while connections use it.
pub type SharedBundle = Arc<ArcSwap<TrustBundle>>;

/// Client side: the server must chain to the bundle and carry a SPIFFE ID of the bundle's
/// trust domain whose [`SpiffeId::server_name`] is the server name the client asked for.
/// That name is one-to-one with the ID (readable, or a SHA-256), so this is exactly the
/// identity the client expected.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    pub bundle: SharedBundle,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        // The server name is only compared, never decoded: a hashed name cannot be turned
        // back into an ID, and the certificate, once it chains to the bundle and is in its
        // trust domain, is the only authority on who the server is.
        let got = self.bundle.load().verify(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )?;
        // `got` came out of `SpiffeId::parse`, so it has a server name; a failure here is
        // still a refusal, never a panic.
        let presented = got
            .server_name()
            .map_err(|_| Error::InvalidCertificate(CertificateError::NotValidForName))?;
        if presented != *server_name {
            return Err(Error::InvalidCertificate(
                CertificateError::NotValidForNameContext {
                    expected: server_name.to_owned(),
                    presented: vec![got.to_string()],
                },
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

/// Accepts any server certificate, checking only the handshake signatures: what kubelet does
/// for an HTTPS probe, and so what the proxy does when it replays one to its app. Never for
/// mesh traffic.
#[derive(Debug)]
pub struct AnyServerCertificate;

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

/// Server side: every TLS client must present a certificate chaining to the bundle with a
/// SPIFFE ID of the mesh's trust domain. (Plaintext clients, where the mode allows them,
/// never reach TLS.)
#[derive(Debug)]
pub struct PeerVerifier {
    pub bundle: SharedBundle,
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.bundle.load().verify(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
        )?;
        Ok(ClientCertVerified::assertion())
    }

    handshake_signatures!();
}
