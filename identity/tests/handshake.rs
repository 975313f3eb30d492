//! Real TLS handshakes on loopback through the verifiers the proxies use: a server must prove
//! exactly the SPIFFE ID the client expects, and chain to the mesh's roots.

use arc_swap::ArcSwap;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use testkit::pki::{Leaf, TestCa};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trellis_identity::{PeerVerifier, SpiffeId, SpiffeServerVerifier, TrustBundle, provider};

const TD: &str = "trellis.local";

fn parts(leaf: &Leaf) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .map(Result::unwrap)
        .collect();
    (
        chain,
        PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
    )
}

fn bundle(ca: &TestCa) -> Arc<ArcSwap<TrustBundle>> {
    let root = CertificateDer::from_pem_slice(ca.root_pem.as_bytes()).unwrap();
    Arc::new(ArcSwap::from_pointee(
        TrustBundle::new(TD, vec![root]).unwrap(),
    ))
}

fn leaf(ca: &TestCa, sa: &str) -> Leaf {
    let id = format!("spiffe://{TD}/ns/rides/sa/{sa}");
    ca.spiffe(
        &id,
        SystemTime::now() - Duration::from_secs(60),
        Duration::from_secs(3600),
    )
}

/// Serves one mTLS connection as `server_sa` and connects to it expecting `expected_sa`.
async fn handshake(server_sa: &str, expected_sa: &str) -> Result<(), String> {
    let ca = TestCa::new("mesh");
    let (chain, key) = parts(&leaf(&ca, server_sa));
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(Arc::new(PeerVerifier {
            bundle: bundle(&ca),
        }))
        .with_single_cert(chain, key)
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        if let Ok(mut s) = tokio_rustls::TlsAcceptor::from(Arc::new(server))
            .accept(tcp)
            .await
        {
            let _ = s.write_all(b"hello").await;
            let _ = s.shutdown().await;
        }
    });
    let (chain, key) = parts(&leaf(&ca, "trip"));
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier {
            bundle: bundle(&ca),
        }))
        .with_client_auth_cert(chain, key)
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = SpiffeId::new(TD, "rides", expected_sa)
        .unwrap()
        .server_name()
        .expect("every service account Kubernetes accepts has a server name");
    let mut s = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
    assert_eq!(buf, b"hello");
    Ok(())
}

#[tokio::test]
async fn the_expected_identity_is_accepted() {
    handshake("billing", "billing").await.unwrap();
}

#[tokio::test]
async fn a_server_with_another_spiffe_id_is_refused_by_the_client() {
    let err = handshake("impostor", "billing").await.unwrap_err();
    assert!(
        err.contains("spiffe://trellis.local/ns/rides/sa/impostor"),
        "the error names what the server presented: {err}"
    );
}

/// A service account Kubernetes accepts whose first label is 64 characters: one more than a
/// DNS label may hold, so its server name cannot be the readable `<sa>.<ns>.identity.trellis`.
fn long_label(last: char) -> String {
    let mut sa = "a".repeat(63);
    sa.push(last);
    sa
}

/// A 253-character service account (the Kubernetes maximum): labels of 62 'b's and a tail.
fn max_length(last: char) -> String {
    let mut sa = vec!["b".repeat(62); 4].join(".");
    sa.push('.');
    sa.push(last);
    assert_eq!(sa.len(), 253);
    sa
}

#[tokio::test]
async fn a_service_account_with_a_64_character_label_is_accepted() {
    let sa = long_label('x');
    handshake(&sa, &sa).await.unwrap();
}

#[tokio::test]
async fn another_long_label_identity_is_refused_by_the_client() {
    let err = handshake(&long_label('y'), &long_label('x'))
        .await
        .unwrap_err();
    assert!(
        err.contains(&format!(
            "spiffe://trellis.local/ns/rides/sa/{}",
            long_label('y')
        )),
        "the error names what the server presented: {err}"
    );
}

#[tokio::test]
async fn a_253_character_service_account_is_accepted() {
    let sa = max_length('x');
    handshake(&sa, &sa).await.unwrap();
}

#[tokio::test]
async fn another_253_character_identity_is_refused_by_the_client() {
    let err = handshake(&max_length('y'), &max_length('x'))
        .await
        .unwrap_err();
    assert!(
        err.contains(&format!(
            "spiffe://trellis.local/ns/rides/sa/{}",
            max_length('y')
        )),
        "the error names what the server presented: {err}"
    );
}

#[tokio::test]
async fn a_readable_identity_cannot_stand_in_for_a_hashed_one() {
    // Both directions: a short-named server for a long-named expectation, and back.
    let err = handshake("billing", &long_label('x')).await.unwrap_err();
    assert!(
        err.contains("spiffe://trellis.local/ns/rides/sa/billing"),
        "{err}"
    );
    let err = handshake(&long_label('x'), "billing").await.unwrap_err();
    assert!(err.contains(&long_label('x')), "{err}");
}
