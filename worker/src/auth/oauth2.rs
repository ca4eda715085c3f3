//! OAuth 2.0 client credentials (RFC 6749 §4.4): `POST token_url` with
//! `grant_type=client_credentials` (and `scope`, `audience` when set), the
//! client authenticated in the form body or by HTTP Basic; the answer's
//! `access_token` is used until `expires_in` less the refresh margin.
//!
//! Tokens are shared by the fleet through [`TokenStore`]. A token endpoint's
//! failure is reported as an [`AuthError`] with the same shape as any
//! outbound failure (status, timeout, connect), so it is retried or
//! dead-lettered by the same rules; its body is never kept (it may echo the
//! client's credentials).

use std::time::Duration;

use crate::config::{ClientAuth, OAuth2ClientCredentials};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use secrecy::SecretString;
use serde_json::Value;

use super::AuthError;
use super::tokens::{Fetched, TokenStore};
use crate::limits::cache::{CacheError, CacheKey};
use crate::outbound::{self, Policy};

/// The lifetime assumed when the token endpoint does not say (Salesforce
/// returns no `expires_in`): a 401 before then refreshes it anyway.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// The cache namespace of token entries: apart from every pipeline's.
const TOKEN_NAMESPACE: &str = "hookfleet-oauth2-token";

/// One configured client-credentials grant.
pub struct OAuth2 {
    config: OAuth2ClientCredentials,
    key: CacheKey,
    client: reqwest::Client,
    /// The destination policy, for enrichment and sinks; `None` for providers.
    policy: Option<Policy>,
    tokens: TokenStore,
}

impl std::fmt::Debug for OAuth2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2")
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

impl OAuth2 {
    /// A grant sending its token requests with `client`. Does no I/O.
    pub fn new(
        config: &OAuth2ClientCredentials,
        client: reqwest::Client,
        policy: Option<Policy>,
        tokens: TokenStore,
    ) -> Result<Self, CacheError> {
        Ok(Self {
            key: token_key(config)?,
            config: config.clone(),
            client,
            policy,
            tokens,
        })
    }

    /// The key its token is shared under.
    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    /// A token: the fleet's current one, or a fresh one.
    pub async fn token(&self) -> Result<SecretString, AuthError> {
        let lease = self.config.timeout + Duration::from_secs(1);
        self.tokens.token(&self.key, lease, || self.fetch()).await
    }

    /// Forgets `token`, which the API rejected, unless already replaced.
    pub async fn discard(&self, token: &str) {
        self.tokens.discard(&self.key, token).await;
    }

    /// Asks the token endpoint; logs and counts the request.
    async fn fetch(&self) -> Result<Fetched, AuthError> {
        let fetched = self.request().await;
        crate::events::TokenRequested {
            client_id: &self.config.client_id,
            outcome: fetched.as_ref().map(|f| f.keep),
        }
        .emit(self.tokens.metrics());
        fetched
    }

    /// One request to the token endpoint.
    async fn request(&self) -> Result<Fetched, AuthError> {
        let url = reqwest::Url::parse(&self.config.token_url).map_err(|e| AuthError::Invalid {
            reason: format!("token_url is not a URL: {e}"),
        })?;
        if let Some(policy) = &self.policy {
            policy.check_literal(&url).map_err(AuthError::Refused)?;
        }
        let origin = outbound::origin(&url);
        let mut request = self
            .client
            .post(url.clone())
            .timeout(self.config.timeout)
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(self.form());
        if self.config.client_auth == ClientAuth::Basic {
            request = request.header(AUTHORIZATION, self.basic()?);
        }
        let response = request
            .send()
            .await
            .map_err(|e| AuthError::transport(e, &url, self.config.timeout))?;
        let status = response.status();
        let retry_after =
            crate::providers::retry_after(response.headers(), std::time::SystemTime::now());
        let body = response
            .bytes()
            .await
            .map_err(|e| AuthError::transport(e, &url, self.config.timeout))?;
        if !status.is_success() {
            return Err(AuthError::TokenStatus {
                origin,
                status: status.as_u16(),
                retry_after,
            });
        }
        read_token(&body, self.config.refresh_margin, &origin)
    }

    /// The form body: grant type, scope and audience, and the client's
    /// credentials unless they go in a Basic header.
    fn form(&self) -> String {
        let mut fields = vec![("grant_type", "client_credentials")];
        if let Some(scope) = &self.config.scope {
            fields.push(("scope", scope));
        }
        if let Some(audience) = &self.config.audience {
            fields.push(("audience", audience));
        }
        if self.config.client_auth == ClientAuth::Body {
            fields.push(("client_id", &self.config.client_id));
            fields.push(("client_secret", self.config.client_secret.expose()));
        }
        fields
            .iter()
            .map(|(k, v)| format!("{k}={}", form_encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// `Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 §2.3.1).
    fn basic(&self) -> Result<HeaderValue, AuthError> {
        use base64::Engine as _;
        let pair = format!(
            "{}:{}",
            form_encode(&self.config.client_id),
            form_encode(self.config.client_secret.expose())
        );
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        let mut value =
            HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|_| AuthError::Invalid {
                reason: "the client credentials are not a valid header value".into(),
            })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// The fleet-wide key of a grant's token: endpoint, client, scope, audience.
fn token_key(config: &OAuth2ClientCredentials) -> Result<CacheKey, CacheError> {
    let request = serde_json::json!({ "scope": config.scope, "audience": config.audience });
    CacheKey::new(
        TOKEN_NAMESPACE,
        &config.token_url,
        &config.client_id,
        &request,
    )
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(value: &str) -> String {
    utf8_percent_encode(value, NON_ALPHANUMERIC).to_string()
}

/// The token and how long to keep it, from a token endpoint's 2xx answer.
fn read_token(body: &[u8], margin: Duration, origin: &str) -> Result<Fetched, AuthError> {
    let invalid = |reason: &str| AuthError::TokenAnswer {
        origin: origin.to_owned(),
        reason: reason.to_owned(),
    };
    let answer: Value = serde_json::from_slice(body).map_err(|_| invalid("not JSON"))?;
    let token = answer
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && HeaderValue::from_str(&format!("Bearer {t}")).is_ok())
        .ok_or_else(|| invalid("no usable access_token"))?;
    // Some endpoints (Azure AD v1) send `expires_in` as a string.
    let lifetime = match answer.get("expires_in") {
        Some(Value::Number(n)) => n.as_u64().map(Duration::from_secs),
        Some(Value::String(s)) => s.trim().parse().ok().map(Duration::from_secs),
        _ => None,
    }
    .unwrap_or(DEFAULT_LIFETIME);
    Ok(Fetched {
        token: SecretString::from(token.to_owned()),
        keep: keep_for(lifetime, margin),
    })
}

/// How long a token of `lifetime` is used: until `margin` before it expires,
/// or half its lifetime when that is shorter than the margin.
fn keep_for(lifetime: Duration, margin: Duration) -> Duration {
    if lifetime > margin * 2 {
        lifetime - margin
    } else {
        lifetime / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn a_token_is_kept_until_the_margin_before_it_expires() {
        let minute = Duration::from_secs(60);
        assert_eq!(keep_for(minute * 60, minute), minute * 59);
        assert_eq!(
            keep_for(Duration::from_secs(90), minute),
            Duration::from_secs(45)
        );
        assert_eq!(
            keep_for(Duration::from_secs(2), Duration::ZERO),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn token_answers_are_read_strictly() {
        let margin = Duration::from_secs(60);
        let ok = read_token(
            br#"{"access_token":"abc","expires_in":"3600"}"#,
            margin,
            "o",
        )
        .unwrap();
        assert_eq!(ok.token.expose_secret(), "abc");
        assert_eq!(ok.keep, Duration::from_secs(3540));
        let salesforce =
            read_token(br#"{"access_token":"abc","issued_at":"1"}"#, margin, "o").unwrap();
        assert_eq!(salesforce.keep, DEFAULT_LIFETIME - margin);
        for bad in [
            &br#"{"token":"x"}"#[..],
            b"<html>",
            br#"{"access_token":"a\nb"}"#,
        ] {
            let error = read_token(bad, margin, "https://login.example.com").unwrap_err();
            assert!(
                error.to_string().contains("https://login.example.com"),
                "{error}"
            );
        }
    }

    #[test]
    fn form_values_are_encoded() {
        assert_eq!(form_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
