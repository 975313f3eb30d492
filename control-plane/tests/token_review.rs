//! Certify's Kubernetes proof against a mock API server that answers TokenReviews with the
//! JSON a real one sends: the audience is asked for and checked, the expiry is checked before
//! any call, and the service account comes from the reviewed username.

use base64::Engine;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use trellis_control::identity::proof::{IdentityProof, ProofError};
use trellis_control::kubernetes::token_review::TokenReviewProof;

/// A JWT-shaped token with these claims (the signature is the API server's business).
fn token(exp: i64) -> String {
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b64(json!({"alg": "RS256", "kid": "k1"})),
        b64(
            json!({"aud": ["trellis"], "exp": exp, "iss": "https://kubernetes.default.svc.cluster.local",
                   "kubernetes.io": {"namespace": "rides", "serviceaccount": {"name": "trip"}}, "sub": "system:serviceaccount:rides:trip"})
        )
    )
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Answers POST /apis/authentication.k8s.io/v1/tokenreviews with `status`, recording requests.
/// Every request the mock saw: (path, body).
type Seen = Arc<Mutex<Vec<(String, Value)>>>;

fn api(status: StatusCode, answer: Value) -> (kube::Client, Seen) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let svc = tower::service_fn(move |req: Request<kube::client::Body>| {
        let (log, answer) = (log.clone(), answer.clone());
        async move {
            let path = req.uri().path().to_string();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let mut review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            log.lock().unwrap().push((path, review.clone()));
            let out = if status.is_success() {
                review["status"] = answer;
                review
            } else {
                answer
            };
            let mut r = Response::new(Full::new(Bytes::from(out.to_string())));
            *r.status_mut() = status;
            Ok::<_, Infallible>(r)
        }
    });
    (kube::Client::new(svc, "default"), seen)
}

fn authenticated(username: &str, audiences: &[&str]) -> Value {
    json!({"authenticated": true, "audiences": audiences,
           "user": {"username": username, "uid": "c1a2b3c4-0000-4000-8000-000000000001",
                    "groups": ["system:serviceaccounts", "system:serviceaccounts:rides", "system:authenticated"],
                    "extra": {"authentication.kubernetes.io/pod-name": ["trip-7d9f8-klmno"]}}})
}

#[tokio::test]
async fn a_projected_token_for_trellis_proves_its_service_account() {
    let (client, seen) = api(
        StatusCode::CREATED,
        authenticated("system:serviceaccount:rides:trip", &["trellis"]),
    );
    let proof = TokenReviewProof::new(client);
    let t = token(now() + 600);
    assert!(proof.accepts(&t));
    let sa = proof.prove(&t).await.unwrap();
    assert_eq!((sa.namespace.as_str(), sa.name.as_str()), ("rides", "trip"));
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let (path, review) = &requests[0];
    assert_eq!(path, "/apis/authentication.k8s.io/v1/tokenreviews");
    assert_eq!(review["kind"], "TokenReview");
    assert_eq!(review["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(
        review["spec"],
        json!({"token": t, "audiences": ["trellis"]})
    );
}

#[tokio::test]
async fn a_token_the_api_server_refuses_is_refused_with_its_reason() {
    // What the API server says for a token minted for another audience.
    let (client, _) = api(
        StatusCode::OK,
        json!({"authenticated": false, "user": {},
        "error": "[invalid bearer token, token audiences [\"https://kubernetes.default.svc\"] is invalid for the target audiences [\"trellis\"]]"}),
    );
    let err = TokenReviewProof::new(client)
        .prove(&token(now() + 600))
        .await
        .unwrap_err();
    assert!(matches!(err, ProofError::Refused { .. }), "{err:?}");
    assert!(
        err.to_string().contains("invalid for the target audiences"),
        "{err}"
    );
}

#[tokio::test]
async fn an_answer_for_another_audience_is_refused() {
    // An API server that ignores spec.audiences and authenticates for its own.
    let (client, _) = api(
        StatusCode::OK,
        authenticated(
            "system:serviceaccount:rides:trip",
            &["https://kubernetes.default.svc"],
        ),
    );
    let err = TokenReviewProof::new(client)
        .prove(&token(now() + 600))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("audience \"trellis\""), "{err}");
}

#[tokio::test]
async fn an_expired_token_is_refused_without_asking_the_api_server() {
    let (client, seen) = api(
        StatusCode::OK,
        authenticated("system:serviceaccount:rides:trip", &["trellis"]),
    );
    let exp = now() - 5;
    let err = TokenReviewProof::new(client)
        .prove(&token(exp))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProofError::Expired { expired_at, .. } if expired_at == exp),
        "{err:?}"
    );
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_user_that_is_not_a_service_account_is_refused() {
    let (client, _) = api(
        StatusCode::OK,
        authenticated("alice@example.com", &["trellis"]),
    );
    let err = TokenReviewProof::new(client)
        .prove(&token(now() + 600))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("\"alice@example.com\" is not a service account"),
        "{err}"
    );
}

#[tokio::test]
async fn the_api_server_being_unreachable_or_forbidding_is_unavailable_not_refused() {
    let (client, _) = api(
        StatusCode::FORBIDDEN,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "tokenreviews.authentication.k8s.io is forbidden: User \"system:serviceaccount:trellis-system:trellis-control\" cannot create resource \"tokenreviews\"",
        "reason": "Forbidden", "details": {"group": "authentication.k8s.io", "kind": "tokenreviews"}, "code": 403}),
    );
    let err = TokenReviewProof::new(client)
        .prove(&token(now() + 600))
        .await
        .unwrap_err();
    assert!(matches!(err, ProofError::Unavailable { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("ClusterRole allow create on tokenreviews"),
        "{err}"
    );
}

#[test]
fn only_jwts_are_taken_for_this_proof() {
    let (client, _) = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _g = rt.enter();
        api(StatusCode::OK, Value::Null)
    };
    let proof = TokenReviewProof::new(client);
    assert!(proof.accepts(&token(1)));
    assert!(!proof.accepts("trellis1.eyJhYmMiOjF9.dGFn"), "a join token");
    assert!(!proof.accepts("not a token"));
    assert!(!proof.accepts("eyJ.."));
}
