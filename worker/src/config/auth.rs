//! How outbound requests (enrichment steps, HTTP sinks, AI providers) prove who
//! they are, beyond a static secret: OAuth 2.0 client credentials, self-signed
//! JWT bearer assertions, and TLS client certificates with a private CA.
//!
//! These are shapes and the checks a type can make at load time (names, URLs,
//! lifetimes, that secrets are references). Reading PEM files and keys, fetching
//! and sharing tokens, and signing are `crate::auth`'s,
//! which names the field of a key or certificate it cannot use.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use hookfleet_common::config::{ConfigError, Secret};

/// `auth = { kind = "oauth2_client_credentials", ... }`: a token from the token
/// endpoint (RFC 6749 §4.4), shared by the fleet, sent as `Authorization: Bearer`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2ClientCredentials {
    /// The token endpoint (`https://login.salesforce.com/services/oauth2/token`).
    pub token_url: String,
    /// The client id (not secret).
    pub client_id: String,
    /// The client secret, by reference.
    pub client_secret: Secret,
    /// The `scope` parameter, when the provider wants one.
    #[serde(default)]
    pub scope: Option<String>,
    /// The `audience` parameter (Auth0 and similar), when the provider wants one.
    #[serde(default)]
    pub audience: Option<String>,
    /// How the client authenticates to the token endpoint: `body`
    /// (`client_id` and `client_secret` form fields, the default; Salesforce,
    /// HubSpot, Microsoft) or `basic` (HTTP Basic, RFC 6749 §2.3.1).
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// A token is replaced this long before it expires (`60s`), so no request
    /// leaves with a token about to lapse.
    #[serde(default = "default_refresh_margin", with = "humantime_serde")]
    pub refresh_margin: Duration,
    /// Timeout of a token request (`10s`).
    #[serde(default = "default_token_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// Where the client's credentials go in a token request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Form fields `client_id` and `client_secret` (`client_secret_post`).
    #[default]
    Body,
    /// `Authorization: Basic` (`client_secret_basic`).
    Basic,
}

/// `auth = { kind = "jwt", ... }`: a short-lived JWT signed per request and sent
/// as `Authorization: Bearer`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtAuth {
    /// `HS256` (a shared secret) or `RS256` (an RSA private key, PEM).
    pub algorithm: JwtAlgorithm,
    /// The HMAC secret or the PEM private key, by reference.
    pub key: Secret,
    /// The `iss` claim.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The `aud` claim.
    #[serde(default)]
    pub audience: Option<String>,
    /// The `sub` claim.
    #[serde(default)]
    pub subject: Option<String>,
    /// `exp - iat` (`5m`); at most an hour.
    #[serde(default = "default_jwt_lifetime", with = "humantime_serde")]
    pub lifetime: Duration,
    /// The `kid` header, when the receiver picks keys by id.
    #[serde(default)]
    pub key_id: Option<String>,
    /// Further claims, as given (`{ tenant = "acme" }`). `iss`, `aud`, `sub`,
    /// `iat`, `exp` and `jti` are set from the fields above and cannot be here.
    #[serde(default)]
    pub claims: BTreeMap<String, serde_json::Value>,
}

/// The JWT signing algorithms supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    HS256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 and an RSA private key.
    RS256,
}

/// `tls = { client_cert, client_key, ca }`: mutual TLS and a private CA.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The client certificate chain, a PEM file (leaf first).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM, PKCS#8, PKCS#1 or SEC1), by
    /// reference: `{ secret_file = "/etc/hookfleet/tls/client.key" }`.
    #[serde(default)]
    pub client_key: Option<Secret>,
    /// Extra root certificates to trust (a PEM bundle), on top of the
    /// platform's roots: for endpoints behind a private CA.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

fn default_refresh_margin() -> Duration {
    Duration::from_secs(60)
}

fn default_token_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_jwt_lifetime() -> Duration {
    Duration::from_secs(300)
}

/// Claims the JWT fields set, which `claims` may not override.
const RESERVED_CLAIMS: [&str; 6] = ["iss", "aud", "sub", "iat", "exp", "jti"];

impl OAuth2ClientCredentials {
    /// Checks the fields of `auth` at `field`.
    pub(super) fn validate(&self, field: &str) -> Result<(), ConfigError> {
        let url = reqwest::Url::parse(&self.token_url).ok();
        if !url.is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host()) {
            return Err(ConfigError::invalid(
                format!("{field}.token_url"),
                "must be an http(s) URL",
            ));
        }
        if self.client_id.trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("{field}.client_id"),
                "must not be empty",
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::invalid(
                format!("{field}.timeout"),
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

impl JwtAuth {
    /// Checks the fields of `auth` at `field`.
    pub(super) fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.lifetime.is_zero() || self.lifetime > Duration::from_secs(3600) {
            return Err(ConfigError::invalid(
                format!("{field}.lifetime"),
                "must be between 1s and 1h: the token is meant to be short-lived",
            ));
        }
        if let Some(name) = self
            .claims
            .keys()
            .find(|k| RESERVED_CLAIMS.contains(&k.as_str()))
        {
            return Err(ConfigError::invalid(
                format!("{field}.claims.{name}"),
                "is set by the jwt fields (issuer, audience, subject, lifetime)",
            ));
        }
        Ok(())
    }
}

impl TlsConfig {
    /// Checks that a client certificate comes with its key and files exist.
    pub(super) fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(ConfigError::invalid(
                format!("{field}.tls"),
                "client_cert and client_key go together",
            ));
        }
        for (name, path) in [("client_cert", &self.client_cert), ("ca", &self.ca)] {
            if let Some(path) = path
                && !path.is_file()
            {
                return Err(ConfigError::invalid(
                    format!("{field}.tls.{name}"),
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
        Ok(())
    }
}

/// Checks a provider's `api_key_header`, `auth` and `tls` at `field`.
pub(super) fn validate_provider(
    field: &str,
    provider: &super::ProviderConfig,
) -> Result<(), ConfigError> {
    if let Some(name) = &provider.api_key_header {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(ConfigError::invalid(
                format!("{field}.api_key_header"),
                "not a valid header name",
            ));
        }
        if provider.api_key.is_none() {
            return Err(ConfigError::invalid(
                format!("{field}.api_key_header"),
                "needs api_key",
            ));
        }
    }
    if provider.auth.is_some() && provider.api_key.is_some() && provider.api_key_header.is_none() {
        return Err(ConfigError::invalid(
            format!("{field}.auth"),
            "both auth and api_key would set the authorization header; drop one, or send the key in api_key_header",
        ));
    }
    if let Some(auth) = &provider.auth {
        auth.validate(&format!("{field}.auth"))?;
    }
    if let Some(tls) = &provider.tls {
        tls.validate(field)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use hookfleet_common::config::{ConfigError, Sources};

    use crate::config::{HttpAuth, Settings, SinkConfig};

    fn load(toml: &str) -> Result<Settings, ConfigError> {
        Settings::load_from(Sources {
            file: None,
            toml: Some(toml.to_owned()),
            env: Some(Default::default()),
        })
    }

    /// A pipeline whose one HTTP sink has `auth_and_tls` (TOML key lines).
    fn with_sink(secret: &std::path::Path, auth_and_tls: &str) -> String {
        format!(
            r#"
[worker.providers.p]
kind = "openai"
[[worker.pipelines]]
name = "x"
provider = "p"
model = "m"
user = "hi"
[[worker.pipelines.sinks]]
kind = "http"
name = "s"
url = "https://api.example.com/x"
{}
"#,
            auth_and_tls.replace("SECRET", &format!("{{ secret_file = {:?} }}", secret))
        )
    }

    fn secret_file() -> tempfile_path::Guard {
        tempfile_path::Guard::new("s3cret")
    }

    #[test]
    fn every_auth_kind_loads_from_toml() {
        let secret = secret_file();
        for (auth, kind) in [
            (
                r#"auth = { kind = "query", name = "api_key", value = SECRET }"#,
                "query",
            ),
            (
                r#"auth = { kind = "oauth2_client_credentials", token_url = "https://login.example.com/token", client_id = "c", client_secret = SECRET, scope = "a b", client_auth = "basic" }"#,
                "oauth2",
            ),
            (
                r#"auth = { kind = "jwt", algorithm = "HS256", key = SECRET, issuer = "i", lifetime = "2m", claims = { tenant = "acme" } }"#,
                "jwt",
            ),
        ] {
            let settings = load(&with_sink(secret.path(), auth)).unwrap();
            let SinkConfig::Http(sink) = &settings.worker.pipelines[0].sinks[0] else {
                panic!("an http sink");
            };
            let loaded = match sink.auth.as_ref().unwrap() {
                HttpAuth::Query { .. } => "query",
                HttpAuth::OAuth2ClientCredentials(o) => {
                    assert_eq!(o.client_secret.expose(), "s3cret");
                    assert_eq!(o.client_auth, super::ClientAuth::Basic);
                    "oauth2"
                }
                HttpAuth::Jwt(j) => {
                    assert_eq!(j.claims["tenant"], "acme");
                    "jwt"
                }
                other => panic!("{other:?}"),
            };
            assert_eq!(loaded, kind);
        }
    }

    #[test]
    fn bad_auth_and_tls_fail_naming_the_field() {
        let secret = secret_file();
        let field = "worker.pipelines[0].sinks[0]";
        for (lines, expected) in [
            (
                r#"auth = { kind = "oauth2_client_credentials", token_url = "ftp://x", client_id = "c", client_secret = SECRET }"#,
                format!("`{field}.auth.token_url`"),
            ),
            (
                r#"auth = { kind = "jwt", algorithm = "HS256", key = SECRET, lifetime = "2h" }"#,
                format!("`{field}.auth.lifetime`"),
            ),
            (
                r#"auth = { kind = "jwt", algorithm = "HS256", key = SECRET, claims = { exp = 1 } }"#,
                format!("`{field}.auth.claims.exp`"),
            ),
            (
                r#"tls = { client_key = SECRET }"#,
                format!("`{field}.tls`: client_cert and client_key go together"),
            ),
            (
                r#"tls = { ca = "/nonexistent/ca.pem" }"#,
                format!("`{field}.tls.ca`"),
            ),
        ] {
            let error = load(&with_sink(secret.path(), lines))
                .unwrap_err()
                .to_string();
            assert!(error.contains(&expected), "{error}");
            assert!(!error.contains("s3cret"), "{error}");
        }
    }

    #[test]
    fn a_provider_key_header_needs_a_key_and_a_valid_name() {
        let base = "[worker.providers.azure]\nkind = \"openai\"\n";
        let error = load(&format!("{base}api_key_header = \"api-key\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`worker.providers.azure.api_key_header`: needs api_key"),
            "{error}"
        );
    }

    /// A secret file removed on drop (no tempfile crate in this crate).
    mod tempfile_path {
        pub struct Guard(std::path::PathBuf);
        impl Guard {
            pub fn new(value: &str) -> Self {
                let path = std::env::temp_dir().join(format!("hf-auth-{}", ulid::Ulid::new()));
                let mut file = std::fs::File::create(&path).unwrap();
                super::Write::write_all(&mut file, value.as_bytes()).unwrap();
                Self(path)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Guard {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }
}
