//! Outbound HTTP steps of a pipeline: enrichment requests before the AI call
//! (`enrich = [...]`) and HTTP sinks after it (`sinks = [{ kind = "http", ... }]`).
//!
//! Both are templated requests: method, URL, header values and body are minijinja
//! templates, compiled by the worker at start ([`crate::pipeline::request_template`]),
//! which names a bad one's field. Here live the shapes and the checks types can
//! make: names, timeouts, and that credentials are secrets, never inline strings.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Deserialize;

use super::auth::{JwtAuth, OAuth2ClientCredentials, TlsConfig};
use hookfleet_common::config::{ConfigError, Secret};

/// Credentials for an outbound request, from secrets (redacted in `Debug`).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum HttpAuth {
    /// `Authorization: Bearer {token}`.
    Bearer {
        /// The token.
        token: Secret,
    },
    /// `Authorization: Basic base64({username}:{password})`.
    Basic {
        /// The user name (not secret).
        username: String,
        /// The password.
        password: Secret,
    },
    /// A custom header carrying the secret as is (`X-Api-Key: {value}`).
    Header {
        /// The header's name.
        name: String,
        /// Its value.
        value: Secret,
    },
    /// A query parameter carrying the secret (`?api_key={value}`).
    Query {
        /// The parameter's name.
        name: String,
        /// Its value.
        value: Secret,
    },
    /// An OAuth 2.0 client-credentials token, shared by the fleet.
    #[serde(rename = "oauth2_client_credentials")]
    OAuth2ClientCredentials(Box<OAuth2ClientCredentials>),
    /// A self-signed JWT, fresh for each request.
    Jwt(Box<JwtAuth>),
}

/// One enrichment step (`enrich = [{ name = "crm", url = "…" }]`): an HTTP request
/// made before the prompt is rendered, whose JSON answer templates read as
/// `enrich.<name>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrichStepConfig {
    /// The step's name, `[A-Za-z0-9_]` so templates can write `enrich.crm`.
    pub name: String,
    /// The HTTP method, a template (`GET`).
    #[serde(default = "default_get")]
    pub method: String,
    /// The URL, a template (`https://crm.example.com/customers/{{ payload.customer.id }}`).
    pub url: String,
    /// Header values by name; the values are templates.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The request body, a template; none by default.
    #[serde(default)]
    pub body: Option<String>,
    /// Credentials (`{ kind = "bearer", token = { secret_env = "CRM_TOKEN" } }`).
    #[serde(default)]
    pub auth: Option<HttpAuth>,
    /// A client certificate and extra CA (`{ client_cert, client_key, ca }`).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Timeout of the request, connection to last byte (`10s`). A timeout is
    /// transient: the job is retried.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Whether a redirect to the same origin (scheme, host and port) is followed
    /// (`false`): then it is re-sent without the step's `auth` credentials. A
    /// redirect elsewhere, or any redirect when off, fails the request.
    #[serde(default)]
    pub follow_redirects: bool,
}

/// An HTTP sink (`{ kind = "http", name = "crm", url = "…" }`): a request made
/// once the AI answered, at most once per event (see the worker's `sinks`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// The sink's name, `[A-Za-z0-9_-]`, unique in its pipeline: part of the
    /// delivery marker and of the `webhook-id`, so renaming a sink re-delivers.
    pub name: String,
    /// The HTTP method, a template (`POST`).
    #[serde(default = "default_post")]
    pub method: String,
    /// The URL, a template.
    pub url: String,
    /// Header values by name; the values are templates.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body, a template; by default the result JSON the results exchange gets.
    #[serde(default)]
    pub body: Option<String>,
    /// A minijinja expression; the sink is skipped for events where it is false
    /// (`output_json.sentiment == "negative"`). Always delivered when unset.
    #[serde(default)]
    pub when: Option<String>,
    /// Credentials, as for enrichment steps.
    #[serde(default)]
    pub auth: Option<HttpAuth>,
    /// A client certificate and extra CA, as for enrichment steps.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// A Standard Webhooks secret (`whsec_…`): requests are signed with
    /// `webhook-signature` when set. `webhook-id` and `webhook-timestamp` are sent
    /// either way.
    #[serde(default)]
    pub signing_secret: Option<Secret>,
    /// Timeout of the request (`10s`). A timeout is transient: the job is retried.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// As for enrichment steps: same-origin redirects only, without credentials.
    #[serde(default)]
    pub follow_redirects: bool,
    /// A minijinja expression over `response` (the 2xx answer's body as JSON,
    /// none when it is not JSON) that must hold for the delivery to count:
    /// `response.ok` for Slack's Web API, which reports errors with HTTP 200.
    /// When it does not, the sink failed (transient: the job is retried and
    /// dead-lettered after its attempts). Any 2xx counts when unset.
    #[serde(default)]
    pub success_when: Option<String>,
}

/// Where enrichment steps and HTTP sinks may connect (`[worker.outbound]`).
///
/// Their URLs are templates over untrusted payloads, so by default a request to
/// a loopback, private (RFC 1918, unique-local), link-local (169.254.0.0/16,
/// `fe80::/10`, cloud metadata endpoints), shared (100.64.0.0/10) or unspecified
/// address is refused. The check is made on the addresses a name resolves to,
/// right before connecting, so a public name pointing at 127.0.0.1 is refused
/// too. AI providers' `base_url`s are operator configuration and not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    /// Host names or IP addresses exempt from the check, as written in URLs
    /// (`["crm.internal", "127.0.0.1"]`), compared without case.
    pub allow_hosts: Vec<String>,
    /// Allow every non-public address (`false`): for a fleet whose every
    /// destination is internal, and for local development.
    pub allow_private: bool,
}

fn default_get() -> String {
    "GET".to_owned()
}

fn default_post() -> String {
    "POST".to_owned()
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

fn check_request(
    field: &str,
    url: &str,
    headers: &BTreeMap<String, String>,
    auth: Option<&HttpAuth>,
    timeout: Duration,
) -> Result<(), ConfigError> {
    if url.trim().is_empty() {
        return Err(ConfigError::invalid(
            format!("{field}.url"),
            "must not be empty",
        ));
    }
    if timeout.is_zero() {
        return Err(ConfigError::invalid(
            format!("{field}.timeout"),
            "must be greater than 0",
        ));
    }
    for name in headers.keys() {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(ConfigError::invalid(
                format!("{field}.headers.{name}"),
                "not a valid header name",
            ));
        }
    }
    if let Some(auth) = auth {
        auth.validate(&format!("{field}.auth"))?;
    }
    Ok(())
}

impl HttpAuth {
    /// Checks the credentials configured at `field` (`….auth`).
    pub(super) fn validate(&self, field: &str) -> Result<(), ConfigError> {
        match self {
            Self::Header { name, .. }
                if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() =>
            {
                Err(ConfigError::invalid(
                    format!("{field}.name"),
                    "not a valid header name",
                ))
            }
            Self::Query { name, .. } if name.trim().is_empty() => Err(ConfigError::invalid(
                format!("{field}.name"),
                "must not be empty",
            )),
            Self::OAuth2ClientCredentials(oauth) => oauth.validate(field),
            Self::Jwt(jwt) => jwt.validate(field),
            _ => Ok(()),
        }
    }
}

impl EnrichStepConfig {
    /// Checks the `i`-th step of the pipeline at `pipeline` (its field path).
    pub(super) fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if !is_identifier(&self.name) {
            return Err(ConfigError::invalid(
                format!("{field}.name"),
                "must be 1-100 characters of [A-Za-z0-9_], not starting with a digit",
            ));
        }
        if let Some(tls) = &self.tls {
            tls.validate(field)?;
        }
        check_request(
            field,
            &self.url,
            &self.headers,
            self.auth.as_ref(),
            self.timeout,
        )
    }
}

impl HttpSinkConfig {
    pub(super) fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if !super::is_name(&self.name) {
            return Err(ConfigError::invalid(
                format!("{field}.name"),
                "must be 1-100 characters of [A-Za-z0-9_-]",
            ));
        }
        if let Some(secret) = &self.signing_secret
            && hookfleet_common::signature::standard::sign(secret.expose(), "check", 0, b"")
                .is_err()
        {
            return Err(ConfigError::invalid(
                format!("{field}.signing_secret"),
                "must be a Standard Webhooks secret: whsec_ followed by base64",
            ));
        }
        if let Some(tls) = &self.tls {
            tls.validate(field)?;
        }
        check_request(
            field,
            &self.url,
            &self.headers,
            self.auth.as_ref(),
            self.timeout,
        )
    }
}

/// Checks that names are unique within one list (`enrich` or `sinks`).
pub(super) fn unique<'a>(
    field: &str,
    names: impl Iterator<Item = &'a str>,
) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for (i, name) in names.enumerate() {
        if !seen.insert(name) {
            return Err(ConfigError::invalid(
                format!("{field}[{i}].name"),
                format!("`{name}` is used twice"),
            ));
        }
    }
    Ok(())
}
