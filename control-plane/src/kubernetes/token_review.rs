//! The second identity proof: a projected service-account token (audience `trellis`), proven
//! through the TokenReview API.

// The API server checks the signature, the audience, the expiry and that the pod and service
// account still exist; the expiry is also read locally, so an expired token is refused with
// its time and without an API call.

use crate::identity::proof::{IdentityProof, ProofError, ServiceAccount};
use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};
use std::time::{SystemTime, UNIX_EPOCH};

const KIND: &str = "Kubernetes service-account token";
/// The audience the injector asks the kubelet to put into the projected token.
pub(crate) const AUDIENCE: &str = crate::inject::TOKEN_AUDIENCE;

pub struct TokenReviewProof {
    client: Client,
}

impl TokenReviewProof {
    pub fn new(client: Client) -> TokenReviewProof {
        TokenReviewProof { client }
    }
}

/// The claims read locally; the API server checks them all again, with the signature.
#[derive(serde::Deserialize)]
struct Claims {
    exp: Option<i64>,
}

fn malformed(message: impl Into<String>) -> ProofError {
    ProofError::Malformed {
        kind: KIND,
        message: message.into(),
    }
}

#[tonic::async_trait]
impl IdentityProof for TokenReviewProof {
    fn kind(&self) -> &'static str {
        KIND
    }

    /// A JWT: three base64url segments, the first a JSON header.
    fn accepts(&self, token: &str) -> bool {
        let parts: Vec<&str> = token.trim().split('.').collect();
        parts.len() == 3
            && parts[0].starts_with("eyJ")
            && parts.iter().all(|p| {
                !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
    }

    async fn prove(&self, token: &str) -> Result<ServiceAccount, ProofError> {
        let token = token.trim();
        let payload = token
            .split('.')
            .nth(1)
            .ok_or_else(|| malformed("not a JWT"))?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|e| malformed(format!("the payload is not base64url: {e}")))?;
        let claims: Claims = serde_json::from_slice(&bytes)
            .map_err(|e| malformed(format!("the payload is not JSON claims: {e}")))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        match claims.exp {
            Some(exp) if exp <= now => {
                return Err(ProofError::Expired {
                    kind: KIND,
                    expired_at: exp,
                });
            }
            Some(_) => {}
            None => {
                return Err(malformed(
                    "no exp claim; mount a projected token, not a legacy Secret token",
                ));
            }
        }

        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![AUDIENCE.to_string()]),
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| ProofError::Unavailable {
                kind: KIND,
                message: format!("TokenReview failed: {e}; does trellis-control's ClusterRole allow create on tokenreviews?"),
            })?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(ProofError::Refused {
                kind: KIND,
                message: status
                    .error
                    .unwrap_or_else(|| "the API server did not authenticate it".into()),
            });
        }
        // An API server that ignores spec.audiences answers with its own; insist on ours.
        if !status
            .audiences
            .unwrap_or_default()
            .iter()
            .any(|a| a == AUDIENCE)
        {
            return Err(ProofError::Refused {
                kind: KIND,
                message: format!(
                    "the token is not for audience {AUDIENCE:?}; mount a projected token with audience {AUDIENCE}"
                ),
            });
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        let sa = username
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
            .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
            .ok_or_else(|| ProofError::Refused {
                kind: KIND,
                message: format!("{username:?} is not a service account"),
            })?;
        Ok(ServiceAccount {
            namespace: sa.0.to_string(),
            name: sa.1.to_string(),
        })
    }
}
