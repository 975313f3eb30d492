//! Join tokens: `trellis-control token create --service-account rides/trip` mints one, and a
//! proxy in file mode trades it (with a CSR) for its certificate.

// A token is `trellis1.<claims>.<mac>`, both parts unpadded base64url; the MAC is HMAC-SHA256
// under a key derived from the CA's private key, so anyone holding the CA (every replica) can
// check it and nobody else can mint one.

use super::proof::{IdentityProof, ProofError, ServiceAccount};
use aws_lc_rs::{digest, hmac};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use trellis_identity::cert::unix_now;

const PREFIX: &str = "trellis1.";
const KIND: &str = "join token";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// `namespace/name`.
    sa: String,
    /// Issued at, Unix seconds.
    iat: i64,
    /// Expires at, Unix seconds.
    exp: i64,
}

/// Mints and checks join tokens under one CA key.
pub struct JoinTokens {
    key: hmac::Key,
}

impl JoinTokens {
    pub fn new(ca_key_material: &[u8]) -> JoinTokens {
        // Domain-separate the MAC key from the CA key's own use.
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"trellis join token key v1\0");
        ctx.update(ca_key_material);
        JoinTokens {
            key: hmac::Key::new(hmac::HMAC_SHA256, ctx.finish().as_ref()),
        }
    }

    /// A token proving `sa` (`namespace/name`) until `ttl` from now.
    pub fn mint(&self, sa: &ServiceAccount, ttl: Duration) -> String {
        let iat = unix_now();
        let claims = Claims {
            sa: sa.to_string(),
            iat,
            exp: iat.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
        };
        let body = B64.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let tag = hmac::sign(&self.key, body.as_bytes());
        format!("{PREFIX}{body}.{}", B64.encode(tag.as_ref()))
    }

    fn check(&self, token: &str) -> Result<ServiceAccount, ProofError> {
        let malformed = |message: &str| ProofError::Malformed {
            kind: KIND,
            message: message.into(),
        };
        let rest = token
            .trim()
            .strip_prefix(PREFIX)
            .ok_or_else(|| malformed("it does not start with trellis1."))?;
        let (body, tag) = rest
            .split_once('.')
            .ok_or_else(|| malformed("it has no signature part"))?;
        let tag = B64
            .decode(tag)
            .map_err(|_| malformed("the signature is not base64url"))?;
        hmac::verify(&self.key, body.as_bytes(), &tag)
            .map_err(|_| ProofError::BadSignature { kind: KIND })?;
        // Only now, with the MAC checked, is the body trusted enough to parse.
        let claims: Claims = B64
            .decode(body)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| malformed("the claims do not parse"))?;
        if claims.exp <= unix_now() {
            return Err(ProofError::Expired {
                kind: KIND,
                expired_at: claims.exp,
            });
        }
        let (namespace, name) = claims
            .sa
            .split_once('/')
            .ok_or_else(|| malformed("the service account is not namespace/name"))?;
        Ok(ServiceAccount {
            namespace: namespace.into(),
            name: name.into(),
        })
    }
}

#[tonic::async_trait]
impl IdentityProof for JoinTokens {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn accepts(&self, token: &str) -> bool {
        token.trim_start().starts_with(PREFIX)
    }

    async fn prove(&self, token: &str) -> Result<ServiceAccount, ProofError> {
        self.check(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trip() -> ServiceAccount {
        ServiceAccount {
            namespace: "rides".into(),
            name: "trip".into(),
        }
    }

    #[test]
    fn a_minted_token_proves_its_service_account() {
        let t = JoinTokens::new(b"ca key");
        let token = t.mint(&trip(), Duration::from_secs(60));
        assert_eq!(t.check(&token).unwrap(), trip());
    }

    #[test]
    fn another_ca_and_tampering_are_refused() {
        let token = JoinTokens::new(b"ca key").mint(&trip(), Duration::from_secs(60));
        assert!(matches!(
            JoinTokens::new(b"other ca").check(&token),
            Err(ProofError::BadSignature { .. })
        ));
        // Swap in claims for another service account, keeping the old MAC.
        let forged_body = B64.encode(br#"{"sa":"rides/billing","iat":0,"exp":9999999999}"#);
        let tag = token.rsplit_once('.').unwrap().1;
        let forged = format!("{PREFIX}{forged_body}.{tag}");
        assert!(matches!(
            JoinTokens::new(b"ca key").check(&forged),
            Err(ProofError::BadSignature { .. })
        ));
    }

    #[test]
    fn an_expired_token_is_refused() {
        let t = JoinTokens::new(b"ca key");
        let token = t.mint(&trip(), Duration::ZERO);
        assert!(matches!(t.check(&token), Err(ProofError::Expired { .. })));
    }
}
