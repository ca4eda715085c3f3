//! Outbound credentials: how enrichment steps, HTTP sinks and AI providers
//! authenticate (`auth = { kind = … }`) and which TLS identity and roots their
//! client uses (`tls = { … }`).
//!
//! - [`Authenticator`]: one configured `auth`, built at start; per request it
//!   gives a [`Credential`] (a header or a query parameter). Static kinds
//!   (`bearer`, `basic`, `header`, `query`) cost nothing; `jwt` signs a fresh
//!   token ([`jwt`]); `oauth2_client_credentials` takes the fleet's shared token
//!   ([`oauth2`], [`tokens`]).
//! - After a 401, [`Authenticator::rejected`] says whether one retry with a
//!   fresh credential is worth it: only for OAuth 2.0, whose token is then
//!   discarded fleet-wide. A second 401 is the caller's permanent failure.
//! - [`tls`]: client certificates and private CAs, read at start.
//!
//! Invariants: no credential is ever logged or put in an error (header values
//! are marked sensitive; errors name the token endpoint's origin and status
//! only). Errors here say *what* failed ([`AuthError`]); whether to retry is
//! `delivery::outcome::classify`'s call, by the same rules as any request.

pub mod jwt;
pub mod oauth2;
pub mod tls;
pub mod tokens;

use std::time::{Duration, SystemTime};

use crate::config::HttpAuth;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};

use crate::outbound::{DestinationRefused, Policy};

pub use oauth2::OAuth2;
pub use tokens::TokenStore;

/// A credential could not be set up at start.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: `{field}`: {reason}")]
pub struct SetupError {
    /// The offending field (`worker.pipelines[0].sinks[1].tls.ca`).
    pub field: String,
    /// What is wrong with it (never a secret).
    pub reason: String,
}

/// Why no credential could be had for a request.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token endpoint answered with an error status.
    #[error("the token endpoint `{origin}` answered HTTP {status}")]
    TokenStatus {
        /// Its origin (scheme, host, port).
        origin: String,
        /// The status.
        status: u16,
        /// The `Retry-After` it asked for.
        retry_after: Option<Duration>,
    },
    /// The token endpoint's 2xx answer holds no usable token.
    #[error("the token endpoint `{origin}` gave an unusable answer: {reason}")]
    TokenAnswer {
        /// Its origin.
        origin: String,
        /// What is wrong (`not JSON`, `no usable access_token`).
        reason: String,
    },
    /// No answer from the token endpoint in time.
    #[error("no answer from the token endpoint within {0:?}")]
    TokenTimeout(Duration),
    /// The token endpoint could not be reached.
    #[error("cannot connect to the token endpoint")]
    TokenConnect(#[source] reqwest::Error),
    /// The token request broke.
    #[error("the token request failed")]
    TokenTransport(#[source] reqwest::Error),
    /// A JWT could not be signed.
    #[error("cannot sign the JWT")]
    Sign(#[source] jsonwebtoken::errors::Error),
    /// A credential that cannot be sent (not a valid header value).
    #[error("unusable credentials: {reason}")]
    Invalid {
        /// What is wrong (never the value).
        reason: String,
    },
    /// The token endpoint is not allowed by `worker.outbound`.
    #[error(transparent)]
    Refused(DestinationRefused),
}

impl AuthError {
    /// The error of a failed token request, its URL cut to the origin.
    pub(crate) fn transport(e: reqwest::Error, url: &reqwest::Url, timeout: Duration) -> Self {
        if let Some(refused) = crate::outbound::refusal(&e) {
            return Self::Refused(refused);
        }
        let e = crate::outbound::redact(e, url);
        if e.is_timeout() {
            Self::TokenTimeout(timeout)
        } else if e.is_connect() {
            Self::TokenConnect(e)
        } else {
            Self::TokenTransport(e)
        }
    }

    /// `Some(retry_after)` when retrying may help (the token endpoint is busy,
    /// down or slow), `None` when it cannot (refused credentials, a bad key).
    pub fn transient(&self) -> Option<Option<Duration>> {
        match self {
            Self::TokenStatus {
                status: 408 | 425 | 429 | 500..=599,
                retry_after,
                ..
            } => Some(*retry_after),
            Self::TokenAnswer { .. }
            | Self::TokenTimeout(_)
            | Self::TokenConnect(_)
            | Self::TokenTransport(_) => Some(None),
            Self::TokenStatus { .. } | Self::Sign(_) | Self::Invalid { .. } | Self::Refused(_) => {
                None
            }
        }
    }

    /// The dead-letter reason's tail (`token_http_401`, `token_timeout`).
    pub fn reason(&self) -> String {
        match self {
            Self::TokenStatus { status, .. } => format!("token_http_{status}"),
            Self::TokenAnswer { .. } => "token_invalid_answer".into(),
            Self::TokenTimeout(_) => "token_timeout".into(),
            Self::TokenConnect(_) => "token_connect".into(),
            Self::TokenTransport(_) => "token_transport".into(),
            Self::Sign(_) => "jwt_sign".into(),
            Self::Invalid { .. } => "auth_invalid".into(),
            Self::Refused(_) => "token_destination_refused".into(),
        }
    }
}

/// Where one request's credential goes.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A header (sensitive: never printed).
    Header(HeaderName, HeaderValue),
    /// A query parameter appended to the URL.
    Query(String, SecretString),
}

impl Credential {
    /// Puts the credential on a request's headers or URL.
    pub fn apply(&self, headers: &mut HeaderMap, url: &mut reqwest::Url) {
        match self {
            Self::Header(name, value) => {
                headers.insert(name.clone(), value.clone());
            }
            Self::Query(name, value) => {
                url.query_pairs_mut()
                    .append_pair(name, value.expose_secret());
            }
        }
    }
}

/// One configured `auth`.
#[derive(Debug)]
pub enum Authenticator {
    /// `bearer`, `basic`, `header`, `query`: the same credential every time.
    Static(Credential),
    /// A shared OAuth 2.0 token.
    OAuth2(Box<OAuth2>),
    /// A fresh self-signed JWT per request.
    Jwt(Box<jwt::JwtSigner>),
}

impl Authenticator {
    /// Builds the `auth` configured at `field`; OAuth 2.0 token requests go
    /// through `client` (and `policy`, when the destinations are checked).
    pub fn build(
        field: &str,
        auth: &HttpAuth,
        client: &reqwest::Client,
        policy: Option<Policy>,
        tokens: &TokenStore,
    ) -> Result<Self, SetupError> {
        let invalid = |name: &str, reason: String| SetupError {
            field: format!("{field}.{name}"),
            reason,
        };
        Ok(match auth {
            HttpAuth::Bearer { token } => Self::Static(Credential::Header(
                AUTHORIZATION,
                sensitive(&format!("Bearer {}", token.expose()))
                    .map_err(|reason| invalid("token", reason))?,
            )),
            HttpAuth::Basic { username, password } => {
                use base64::Engine as _;
                let pair = format!("{username}:{}", password.expose());
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                Self::Static(Credential::Header(
                    AUTHORIZATION,
                    sensitive(&format!("Basic {encoded}"))
                        .map_err(|reason| invalid("password", reason))?,
                ))
            }
            HttpAuth::Header { name, value } => Self::Static(Credential::Header(
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|e| invalid("name", e.to_string()))?,
                sensitive(value.expose()).map_err(|reason| invalid("value", reason))?,
            )),
            HttpAuth::Query { name, value } => Self::Static(Credential::Query(
                name.clone(),
                SecretString::from(value.expose().to_owned()),
            )),
            HttpAuth::OAuth2ClientCredentials(config) => Self::OAuth2(Box::new(
                OAuth2::new(config, client.clone(), policy, tokens.clone())
                    .map_err(|e| invalid("token_url", e.to_string()))?,
            )),
            HttpAuth::Jwt(config) => Self::Jwt(Box::new(
                jwt::JwtSigner::build(field, config).map_err(|e| SetupError {
                    field: e.field.clone() + ".key",
                    reason: format!("not a usable {} key: {}", e.algorithm, e.source),
                })?,
            )),
        })
    }

    /// The credential for one request.
    pub async fn credential(&self) -> Result<Credential, AuthError> {
        match self {
            Self::Static(credential) => Ok(credential.clone()),
            // Boxed: the token's path (shared store, single flight, Redis pool,
            // token endpoint) is a deep future, and it sits inside a provider
            // call inside a job; unboxed, a debug build overflowed a worker
            // thread's 2 MiB stack.
            Self::OAuth2(grant) => bearer(Box::pin(grant.token()).await?.expose_secret()),
            Self::Jwt(signer) => bearer(&signer.sign(SystemTime::now()).map_err(AuthError::Sign)?),
        }
    }

    /// The API answered 401 to `credential`: whether one retry with a fresh
    /// credential is worth it. For OAuth 2.0 the token is discarded
    /// fleet-wide first (unless already replaced), so the retry fetches anew.
    pub async fn rejected(&self, credential: &Credential) -> bool {
        let Self::OAuth2(grant) = self else {
            return false;
        };
        if let Credential::Header(_, value) = credential
            && let Some(token) = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer "))
        {
            grant.discard(token).await;
        }
        true
    }
}

/// `Authorization: Bearer {token}`, sensitive.
fn bearer(token: &str) -> Result<Credential, AuthError> {
    let value =
        sensitive(&format!("Bearer {token}")).map_err(|reason| AuthError::Invalid { reason })?;
    Ok(Credential::Header(AUTHORIZATION, value))
}

/// A header value marked sensitive; the error never holds the value.
fn sensitive(text: &str) -> Result<HeaderValue, String> {
    let mut value = HeaderValue::from_str(text)
        .map_err(|_| "the secret is not a valid header value".to_owned())?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookfleet_common::config::Secret;

    async fn header_of(auth: &HttpAuth) -> HeaderValue {
        let client = reqwest::Client::new();
        let built =
            Authenticator::build("auth", auth, &client, None, &tokens::tests::store()).unwrap();
        match built.credential().await.unwrap() {
            Credential::Header(name, value) => {
                assert_eq!(name, AUTHORIZATION);
                value
            }
            Credential::Query(..) => panic!("a header"),
        }
    }

    #[tokio::test]
    async fn credentials_are_sensitive_and_never_printed() {
        let auth = HttpAuth::Bearer {
            token: Secret::new("tok-123"),
        };
        let value = header_of(&auth).await;
        assert!(value.is_sensitive());
        assert!(!format!("{value:?}").contains("tok-123"));
        assert!(!format!("{auth:?}").contains("tok-123"));
        let basic = HttpAuth::Basic {
            username: "svc".into(),
            password: Secret::new("pw"),
        };
        assert_eq!(header_of(&basic).await.to_str().unwrap(), "Basic c3ZjOnB3");
    }

    #[test]
    fn token_endpoint_failures_are_classified_like_any_request() {
        let status = |status| AuthError::TokenStatus {
            origin: "https://login.example.com".into(),
            status,
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(status(503).transient(), Some(Some(Duration::from_secs(3))));
        assert_eq!(status(429).transient(), Some(Some(Duration::from_secs(3))));
        assert_eq!(status(401).transient(), None);
        assert_eq!(status(400).transient(), None);
        assert_eq!(status(401).reason(), "token_http_401");
        assert_eq!(
            AuthError::TokenTimeout(Duration::from_secs(1)).transient(),
            Some(None)
        );
        let unusable = AuthError::TokenAnswer {
            origin: "o".into(),
            reason: "not JSON".into(),
        };
        assert_eq!(unusable.transient(), Some(None));
        assert_eq!(
            status(401).to_string(),
            "the token endpoint `https://login.example.com` answered HTTP 401"
        );
    }

    #[tokio::test]
    async fn a_query_key_is_appended_to_the_url() {
        let auth = HttpAuth::Query {
            name: "api_key".into(),
            value: Secret::new("k&1"),
        };
        let built = Authenticator::build(
            "auth",
            &auth,
            &reqwest::Client::new(),
            None,
            &tokens::tests::store(),
        )
        .unwrap();
        let mut url = reqwest::Url::parse("https://api.example.com/x?a=1").unwrap();
        built
            .credential()
            .await
            .unwrap()
            .apply(&mut HeaderMap::new(), &mut url);
        assert_eq!(url.as_str(), "https://api.example.com/x?a=1&api_key=k%261");
        assert!(!format!("{built:?}").contains("k&1"));
    }
}
