//! Self-signed JWT bearer tokens (`auth = { kind = "jwt", … }`): a fresh token
//! per request, `iat` now and `exp` after the configured lifetime, signed with
//! HS256 or RS256 and sent as `Authorization: Bearer`.
//!
//! The key is parsed at start ([`JwtSigner::build`]), so an unreadable RSA key
//! stops the worker with its field named. A `jti` (a ULID) makes every token
//! unique, for receivers that refuse replays.

use std::time::{Duration, SystemTime};

use crate::config::{JwtAlgorithm, JwtAuth};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

/// A configured signer.
pub struct JwtSigner {
    header: Header,
    key: EncodingKey,
    /// The configured claims plus `iss`, `aud`, `sub`; `iat`, `exp`, `jti` are
    /// added per token.
    claims: Map<String, Value>,
    lifetime: Duration,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSigner")
            .field("algorithm", &self.header.alg)
            .finish_non_exhaustive()
    }
}

/// The key of a `jwt` auth cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: `{field}.key`: not a usable {algorithm} key")]
pub struct JwtKeyError {
    /// The auth's field (`worker.pipelines[0].sinks[1].auth`).
    pub field: String,
    /// `HS256` or `RS256`.
    pub algorithm: &'static str,
    /// The parser's complaint (never the key).
    #[source]
    pub source: jsonwebtoken::errors::Error,
}

impl JwtSigner {
    /// Parses the key of the `jwt` auth configured at `field`.
    pub fn build(field: &str, config: &JwtAuth) -> Result<Self, JwtKeyError> {
        let (algorithm, key, name) = match config.algorithm {
            JwtAlgorithm::HS256 => (
                Algorithm::HS256,
                Ok(EncodingKey::from_secret(config.key.expose().as_bytes())),
                "HS256",
            ),
            JwtAlgorithm::RS256 => (
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(config.key.expose().as_bytes()),
                "RS256",
            ),
        };
        let key = key.map_err(|source| JwtKeyError {
            field: field.to_owned(),
            algorithm: name,
            source,
        })?;
        let mut header = Header::new(algorithm);
        header.kid = config.key_id.clone();
        let mut claims: Map<String, Value> = config.claims.clone().into_iter().collect();
        for (name, value) in [
            ("iss", &config.issuer),
            ("aud", &config.audience),
            ("sub", &config.subject),
        ] {
            if let Some(value) = value {
                claims.insert(name.to_owned(), Value::String(value.clone()));
            }
        }
        Ok(Self {
            header,
            key,
            claims,
            lifetime: config.lifetime,
        })
    }

    /// A token issued at `now`.
    pub fn sign(&self, now: SystemTime) -> Result<String, jsonwebtoken::errors::Error> {
        let iat = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut claims = self.claims.clone();
        claims.insert("iat".into(), iat.into());
        claims.insert("exp".into(), (iat + self.lifetime.as_secs()).into());
        claims.insert("jti".into(), ulid::Ulid::new().to_string().into());
        jsonwebtoken::encode(&self.header, &claims, &self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookfleet_common::config::Secret;
    use jsonwebtoken::{DecodingKey, Validation};

    fn config() -> JwtAuth {
        JwtAuth {
            algorithm: JwtAlgorithm::HS256,
            key: Secret::new("a-shared-secret-of-enough-length"),
            issuer: Some("hookfleet".into()),
            audience: Some("https://api.example.com".into()),
            subject: Some("svc-1".into()),
            lifetime: Duration::from_secs(120),
            key_id: Some("k1".into()),
            claims: [("tenant".to_owned(), Value::from("acme"))].into(),
        }
    }

    #[test]
    fn an_hs256_token_verifies_with_its_claims_and_lifetime() {
        let signer = JwtSigner::build("auth", &config()).unwrap();
        let now = SystemTime::now();
        let token = signer.sign(now).unwrap();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&["https://api.example.com"]);
        validation.set_issuer(&["hookfleet"]);
        let decoded = jsonwebtoken::decode::<Map<String, Value>>(
            &token,
            &DecodingKey::from_secret(b"a-shared-secret-of-enough-length"),
            &validation,
        )
        .unwrap();
        let claims = decoded.claims;
        assert_eq!(decoded.header.kid.as_deref(), Some("k1"));
        assert_eq!(claims["sub"], "svc-1");
        assert_eq!(claims["tenant"], "acme");
        let iat = claims["iat"].as_u64().unwrap();
        assert_eq!(claims["exp"].as_u64().unwrap() - iat, 120);
        assert_ne!(signer.sign(now).unwrap(), token, "a fresh jti per token");
    }

    #[test]
    fn an_unreadable_rsa_key_names_its_field() {
        let mut config = config();
        config.algorithm = JwtAlgorithm::RS256;
        let error = JwtSigner::build("worker.providers.x.auth", &config).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid configuration: `worker.providers.x.auth.key`: not a usable RS256 key"
        );
    }
}
