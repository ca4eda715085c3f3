//! A templated HTTP request: what enrichment steps and HTTP sinks have in common.
//!
//! [`RequestTemplate::compile`] parses the method, URL, header-value and body
//! templates at start (naming a bad one's field); a method or URL without template
//! syntax is checked there too. Per event, [`render`](RequestTemplate::render)
//! fills them in and [`send`](RequestTemplate::send) makes the request with the
//! step's timeout and credentials, returning the body of a 2xx answer.
//!
//! This module reports *what* happened ([`RequestError`]); what it means (retry or
//! dead letter) is decided in `outcome::classify`, like every other failure.
//! Credentials come from secrets and are marked sensitive, so they are never
//! printed; error messages carry the origin (scheme, host, port), the status and
//! the start of the answer's body, never the request's path, query or headers.
//!
//! **URLs encode.** A value written into the URL template (`{{ payload.id }}`)
//! is percent-encoded as one component (everything but `A-Za-z0-9-._~`), so a
//! payload's `../../admin?x=1` stays one path segment; `| raw_url` inserts a
//! value as is, for a template that builds a URL's structure from trusted data.
//!
//! **Redirects and destinations** (`crate::outbound`): a 3xx fails the request
//! with [`RequestError::Redirect`], unless the step has `follow_redirects` and
//! the target has the same origin; then it is re-sent without the step's
//! credentials (at most [`MAX_REDIRECTS`] hops). A non-public destination is
//! refused ([`RequestError::Refused`]) unless `worker.outbound` allows it.
//!
//! **Credentials** (`crate::auth`): taken per request from the step's
//! [`Authenticator`]. A 401 to an OAuth 2.0 token discards the token and the
//! request is sent once more with a fresh one; a second 401 is the answer. A
//! TLS handshake failure (a client certificate refused, an unknown CA) is
//! [`RequestError::Tls`]: configuration, not a passing fault.

use std::time::{Duration, SystemTime};

use crate::config::{HttpAuth, OutboundConfig, TlsConfig, UndefinedMode};
use bytes::Bytes;
use minijinja::{Environment, Value};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, LOCATION};
use reqwest::{Method, StatusCode};

use crate::auth::{self, AuthError, Authenticator, Credential, TokenStore};
use crate::outbound::{self, DestinationRefused, Policy};
use crate::pipeline::PipelineError;
use crate::pipeline::templates;
use crate::providers::{retry_after, truncate};

/// How much of an error answer's body an error keeps.
pub(crate) const MAX_ERROR_BODY: usize = 200;

/// The most same-origin redirects a `follow_redirects` request follows.
pub const MAX_REDIRECTS: usize = 5;

/// What a value rendered into a URL keeps as is: RFC 3986's unreserved
/// characters. Everything else, `/ ? # & = %` included, is percent-encoded.
const URL_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The configured parts of a request, as written in the config.
pub struct RequestParts<'a> {
    /// The method template.
    pub method: &'a str,
    /// The URL template.
    pub url: &'a str,
    /// Header-value templates by name.
    pub headers: &'a std::collections::BTreeMap<String, String>,
    /// The body template.
    pub body: Option<&'a str>,
    /// Credentials.
    pub auth: Option<&'a HttpAuth>,
    /// The request's timeout.
    pub timeout: Duration,
    /// Whether same-origin redirects are followed (without credentials).
    pub follow_redirects: bool,
    /// Where requests may go (`worker.outbound`).
    pub outbound: &'a OutboundConfig,
    /// The client certificate and extra roots.
    pub tls: Option<&'a TlsConfig>,
    /// Where OAuth 2.0 tokens are shared.
    pub tokens: &'a TokenStore,
}

/// Why an outbound request did not give a usable answer.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A template failed for this event (a missing value).
    #[error("cannot render `{template}`")]
    Render {
        /// `method`, `url`, `body`, `when` or `headers.NAME`.
        template: String,
        /// minijinja's complaint.
        #[source]
        source: minijinja::Error,
    },
    /// A template rendered into something that is not a method, URL or header.
    #[error("the rendered {what} is invalid: {reason}")]
    Invalid {
        /// `method`, `url` or `headers.NAME`.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection could not be made.
    #[error("cannot connect")]
    Connect(#[source] reqwest::Error),
    /// The connection broke, or the answer could not be read.
    #[error("the request failed")]
    Transport(#[source] reqwest::Error),
    /// The endpoint answered with a status other than 2xx.
    #[error("answered HTTP {status}: {body}")]
    Status {
        /// The status code.
        status: u16,
        /// The `Retry-After` it asked for, if any.
        retry_after: Option<Duration>,
        /// The start of the answer's body.
        body: String,
    },
    /// A 2xx answer that a sink's `success_when` does not accept (Slack's
    /// `{"ok": false}` with HTTP 200).
    #[error("answered 2xx, but `{condition}` does not hold: {body}")]
    Declined {
        /// The sink's `success_when` expression.
        condition: String,
        /// The start of the answer's body, or the expression's error.
        body: String,
    },
    /// A 2xx answer that should be JSON (an enrichment step's) is not.
    #[error("the answer is not JSON")]
    NotJson(#[source] serde_json::Error),
    /// A redirect, not followed: redirects are off, it leads to another origin,
    /// or there were more than [`MAX_REDIRECTS`].
    #[error("answered HTTP {status}, a redirect to `{location}`, which is not followed")]
    Redirect {
        /// The 3xx status.
        status: u16,
        /// The `Location`'s origin (scheme, host, port), or `none`.
        location: String,
    },
    /// The destination is not allowed by `worker.outbound`.
    #[error(transparent)]
    Refused(DestinationRefused),
    /// No credential could be had (the token endpoint failed).
    #[error("cannot authenticate")]
    Auth(#[source] AuthError),
    /// The TLS handshake failed: the server refused our client certificate
    /// (or wanted one), or its certificate is not trusted.
    #[error("TLS with `{origin}` failed: {reason}")]
    Tls {
        /// The server's origin.
        origin: String,
        /// rustls's words (`received fatal alert: CertificateRequired`).
        reason: String,
    },
}

/// A request rendered for one event, ready to send.
#[derive(Debug)]
pub struct RenderedRequest {
    /// The method.
    pub method: Method,
    /// The URL.
    pub url: reqwest::Url,
    /// The configured headers, rendered (credentials are added when sending).
    pub headers: HeaderMap,
    /// The body, when the template has one.
    pub body: Option<String>,
}

/// A compiled request template with its client.
pub struct RequestTemplate {
    templates: Environment<'static>,
    headers: Vec<HeaderName>,
    has_body: bool,
    auth: Option<Authenticator>,
    timeout: Duration,
    follow_redirects: bool,
    policy: Policy,
    client: reqwest::Client,
}

impl RequestTemplate {
    /// Compiles the request configured at `field` (its templates are
    /// `{field}.method`, `{field}.url`, `{field}.headers.NAME`, `{field}.body`).
    pub fn compile(
        field: &str,
        parts: RequestParts<'_>,
        undefined: UndefinedMode,
    ) -> Result<Self, PipelineError> {
        let mut env = templates::environment(undefined);
        env.set_formatter(encode_url_values);
        env.add_filter("raw_url", |value: Value| {
            Value::from_safe_string(value.to_string())
        });
        templates::compile(&mut env, "method", parts.method, &format!("{field}.method"))?;
        templates::compile(&mut env, "url", parts.url, &format!("{field}.url"))?;
        if !is_template(parts.method) && Method::from_bytes(parts.method.as_bytes()).is_err() {
            return Err(PipelineError::Invalid {
                field: format!("{field}.method"),
                reason: format!("`{}` is not an HTTP method", parts.method),
            });
        }
        if !is_template(parts.url)
            && let Err(e) = reqwest::Url::parse(parts.url)
        {
            return Err(PipelineError::Invalid {
                field: format!("{field}.url"),
                reason: format!("not a URL: {e}"),
            });
        }
        let mut headers = Vec::new();
        for (name, value) in parts.headers {
            let header =
                HeaderName::from_bytes(name.as_bytes()).map_err(|e| PipelineError::Invalid {
                    field: format!("{field}.headers.{name}"),
                    reason: e.to_string(),
                })?;
            templates::compile(
                &mut env,
                &format!("headers.{header}"),
                value,
                &format!("{field}.headers.{name}"),
            )?;
            headers.push(header);
        }
        if let Some(body) = parts.body {
            templates::compile(&mut env, "body", body, &format!("{field}.body"))?;
        }
        let policy = Policy::new(parts.outbound);
        let Connection { client, auth } = connection(field, &parts, &policy)?;
        Ok(Self {
            templates: env,
            headers,
            has_body: parts.body.is_some(),
            auth,
            timeout: parts.timeout,
            follow_redirects: parts.follow_redirects,
            policy,
            client,
        })
    }

    /// Renders the request for one event's template context.
    pub fn render(&self, context: &Value) -> Result<RenderedRequest, RequestError> {
        let method = self.render_one("method", context)?;
        let method =
            Method::from_bytes(method.trim().as_bytes()).map_err(|_| RequestError::Invalid {
                what: "method".into(),
                reason: format!("`{}` is not an HTTP method", truncate(&method, 40)),
            })?;
        let url = self.render_one("url", context)?;
        let url = reqwest::Url::parse(url.trim()).map_err(|e| RequestError::Invalid {
            what: "url".into(),
            reason: e.to_string(),
        })?;
        let mut headers = HeaderMap::new();
        for name in &self.headers {
            let template = format!("headers.{name}");
            let value = self.render_one(&template, context)?;
            let value = HeaderValue::from_str(value.trim()).map_err(|e| RequestError::Invalid {
                what: template,
                reason: e.to_string(),
            })?;
            headers.insert(name.clone(), value);
        }
        let body = if self.has_body {
            Some(self.render_one("body", context)?)
        } else {
            None
        };
        Ok(RenderedRequest {
            method,
            url,
            headers,
            body,
        })
    }

    fn render_one(&self, name: &str, context: &Value) -> Result<String, RequestError> {
        self.templates
            .get_template(name)
            .and_then(|t| t.render(context))
            .map_err(|source| RequestError::Render {
                template: name.to_owned(),
                source,
            })
    }

    /// Sends `request` with the step's credentials and timeout; the body of a 2xx
    /// answer, or what went wrong. Follows same-origin redirects without the
    /// credentials when the step allows it, and retries a 401 once with a fresh
    /// OAuth 2.0 token (module docs).
    pub async fn send(&self, request: RenderedRequest) -> Result<Bytes, RequestError> {
        let credential = self.credential().await?;
        let answer = self.exchange(&request, credential.clone()).await;
        let (Err(RequestError::Status { status: 401, .. }), Some(auth), Some(used)) =
            (&answer, &self.auth, &credential)
        else {
            return answer;
        };
        if !auth.rejected(used).await {
            return answer;
        }
        let fresh = self.credential().await?;
        self.exchange(&request, fresh).await
    }

    async fn credential(&self) -> Result<Option<Credential>, RequestError> {
        match &self.auth {
            Some(auth) => auth
                .credential()
                .await
                .map(Some)
                .map_err(RequestError::Auth),
            None => Ok(None),
        }
    }

    /// One request and the redirects it may follow.
    async fn exchange(
        &self,
        request: &RenderedRequest,
        credential: Option<Credential>,
    ) -> Result<Bytes, RequestError> {
        let mut hop = Hop {
            method: request.method.clone(),
            url: request.url.clone(),
            body: request.body.clone(),
            credential,
        };
        let mut hops = 0;
        loop {
            let response = self.send_once(&hop, &request.headers).await?;
            let status = response.status();
            if !status.is_redirection() {
                return self.answer(response).await;
            }
            let target = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|location| hop.url.join(location).ok());
            match target {
                Some(next)
                    if self.follow_redirects
                        && hops < MAX_REDIRECTS
                        && next.origin() == hop.url.origin() =>
                {
                    hops += 1;
                    hop.redirect(status, next);
                }
                _ => {
                    return Err(RequestError::Redirect {
                        status: status.as_u16(),
                        location: target.map_or_else(|| "none".into(), |u| outbound::origin(&u)),
                    });
                }
            }
        }
    }

    async fn send_once(
        &self,
        hop: &Hop,
        headers: &HeaderMap,
    ) -> Result<reqwest::Response, RequestError> {
        self.policy
            .check_literal(&hop.url)
            .map_err(RequestError::Refused)?;
        let mut headers = headers.clone();
        let mut url = hop.url.clone();
        if let Some(credential) = &hop.credential {
            credential.apply(&mut headers, &mut url);
        }
        let mut builder = self
            .client
            .request(hop.method.clone(), url)
            .headers(headers)
            .timeout(self.timeout);
        if let Some(body) = &hop.body {
            builder = builder.body(body.clone());
        }
        builder
            .send()
            .await
            .map_err(|e| self.transport_error(e, &hop.url))
    }

    /// The body of a 2xx answer, else the status error.
    async fn answer(&self, response: reqwest::Response) -> Result<Bytes, RequestError> {
        let status = response.status();
        let url = response.url().clone();
        let answer_headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(e, &url))?;
        if status.is_success() {
            return Ok(body);
        }
        Err(RequestError::Status {
            status: status.as_u16(),
            retry_after: retry_after(&answer_headers, SystemTime::now()),
            body: truncate(&String::from_utf8_lossy(&body), MAX_ERROR_BODY),
        })
    }

    /// The error, its URL cut to the origin: a path or query may hold a token.
    fn transport_error(&self, e: reqwest::Error, url: &reqwest::Url) -> RequestError {
        if let Some(refused) = outbound::refusal(&e) {
            return RequestError::Refused(refused);
        }
        if let Some(reason) = auth::tls::handshake_failure(&e) {
            return RequestError::Tls {
                origin: outbound::origin(url),
                reason,
            };
        }
        let e = outbound::redact(e, url);
        if e.is_timeout() {
            RequestError::Timeout(self.timeout)
        } else if e.is_connect() {
            RequestError::Connect(e)
        } else {
            RequestError::Transport(e)
        }
    }
}

/// One request of a possibly redirected exchange.
struct Hop {
    method: Method,
    url: reqwest::Url,
    body: Option<String>,
    credential: Option<Credential>,
}

impl Hop {
    /// Moves to `next` as browsers do (303, or 301/302 after a POST, become a
    /// GET without a body), never with the credentials.
    fn redirect(&mut self, status: StatusCode, next: reqwest::Url) {
        let to_get = status == StatusCode::SEE_OTHER
            || (matches!(status.as_u16(), 301 | 302) && self.method == Method::POST);
        if to_get {
            self.method = Method::GET;
            self.body = None;
        }
        self.url = next;
        self.credential = None;
    }
}

/// The formatter of a request's templates: a value written into the `url`
/// template is percent-encoded unless marked safe (`| raw_url`).
fn encode_url_values(
    out: &mut minijinja::Output<'_>,
    state: &minijinja::State<'_, '_>,
    value: &Value,
) -> Result<(), minijinja::Error> {
    if state.name() != "url" || value.is_safe() || value.is_undefined() || value.is_none() {
        return minijinja::escape_formatter(out, state, value);
    }
    let text = value.to_string();
    write!(out, "{}", utf8_percent_encode(&text, URL_COMPONENT))
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string()))
}

/// A step's client (destination policy, TLS settings) and credentials.
struct Connection {
    client: reqwest::Client,
    auth: Option<Authenticator>,
}

fn connection(
    field: &str,
    parts: &RequestParts<'_>,
    policy: &Policy,
) -> Result<Connection, PipelineError> {
    let mut builder = outbound::builder(policy);
    if let Some(tls) = parts.tls {
        builder = auth::tls::apply(builder, field, tls).map_err(setup_error)?;
    }
    let client = builder.build().map_err(|source| PipelineError::Client {
        field: field.to_owned(),
        source,
    })?;
    let auth = parts
        .auth
        .map(|a| {
            let field = format!("{field}.auth");
            Authenticator::build(&field, a, &client, Some(policy.clone()), parts.tokens)
        })
        .transpose()
        .map_err(setup_error)?;
    Ok(Connection { client, auth })
}

/// A credential or TLS file that cannot be used, as a pipeline error.
fn setup_error(e: auth::SetupError) -> PipelineError {
    PipelineError::Invalid {
        field: e.field,
        reason: e.reason,
    }
}

/// Whether `text` has template syntax (else it is checked as is at start).
fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%")
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;
    use std::collections::BTreeMap;

    fn parts<'a>(
        method: &'a str,
        url: &'a str,
        headers: &'a BTreeMap<String, String>,
        body: Option<&'a str>,
    ) -> RequestParts<'a> {
        RequestParts {
            method,
            url,
            headers,
            body,
            auth: None,
            timeout: Duration::from_secs(1),
            follow_redirects: false,
            outbound: &STRICT,
            tls: None,
            tokens: Box::leak(Box::new(crate::auth::tokens::tests::store())),
        }
    }

    static STRICT: OutboundConfig = OutboundConfig {
        allow_hosts: Vec::new(),
        allow_private: false,
    };

    #[test]
    fn a_request_renders_method_url_headers_and_body() {
        let headers = BTreeMap::from([("X-Ticket".to_owned(), "{{ payload.id }}".to_owned())]);
        let template = RequestTemplate::compile(
            "f",
            parts(
                "{{ 'patch' | upper }}",
                "http://crm.test/t/{{ payload.id }}",
                &headers,
                Some("{{ payload | tojson }}"),
            ),
            UndefinedMode::SemiStrict,
        )
        .unwrap();
        let context = context! { payload => context! { id => "t-1" } };
        let request = template.render(&context).unwrap();
        assert_eq!(request.method, Method::PATCH);
        assert_eq!(request.url.as_str(), "http://crm.test/t/t-1");
        assert_eq!(request.headers["x-ticket"], "t-1");
        assert_eq!(request.body.as_deref(), Some(r#"{"id":"t-1"}"#));
    }

    #[test]
    fn values_in_the_url_are_encoded_unless_raw_and_nowhere_else() {
        let headers = BTreeMap::from([("X-Id".to_owned(), "{{ payload.id }}".to_owned())]);
        let template = RequestTemplate::compile(
            "f",
            parts(
                "POST",
                "{{ payload.base | raw_url }}/t/{{ payload.id }}?q={{ payload.q }}&n={{ payload.n }}",
                &headers,
                Some("{{ payload.id }}"),
            ),
            UndefinedMode::SemiStrict,
        )
        .unwrap();
        let context = context! { payload => context! {
            base => "http://crm.test/api",
            id => "../../admin?x=1#f",
            q => "a b&c=d/é",
            n => 7,
        } };
        let request = template.render(&context).unwrap();
        assert_eq!(
            request.url.as_str(),
            "http://crm.test/api/t/..%2F..%2Fadmin%3Fx%3D1%23f?q=a%20b%26c%3Dd%2F%C3%A9&n=7"
        );
        assert_eq!(request.headers["x-id"], "../../admin?x=1#f");
        assert_eq!(request.body.as_deref(), Some("../../admin?x=1#f"));
    }

    #[test]
    fn bad_templates_and_fixed_values_fail_at_compile_with_their_field() {
        let none = BTreeMap::new();
        let compile = |method, url, headers: &BTreeMap<String, String>, body| {
            RequestTemplate::compile(
                "worker.pipelines[0].sinks[1]",
                parts(method, url, headers, body),
                UndefinedMode::SemiStrict,
            )
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
        };
        let err = compile("POST", "http://x/{{ payload.id ", &none, None);
        assert!(err.contains("worker.pipelines[0].sinks[1].url"), "{err}");
        let err = compile("PO ST", "http://x/", &none, None);
        assert!(err.contains("worker.pipelines[0].sinks[1].method"), "{err}");
        let err = compile("POST", "not a url", &none, None);
        assert!(err.contains("worker.pipelines[0].sinks[1].url"), "{err}");
        let err = compile("POST", "http://x/", &none, Some("{% if %}"));
        assert!(err.contains("worker.pipelines[0].sinks[1].body"), "{err}");
        let headers = BTreeMap::from([("X-A".to_owned(), "{{ }".to_owned())]);
        let err = compile("POST", "http://x/", &headers, None);
        assert!(
            err.contains("worker.pipelines[0].sinks[1].headers.X-A"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_value_is_a_render_error_naming_the_template() {
        let none = BTreeMap::new();
        let template = RequestTemplate::compile(
            "f",
            parts("GET", "http://x/{{ payload.missing }}", &none, None),
            UndefinedMode::SemiStrict,
        )
        .unwrap();
        let err = template
            .render(&context! { payload => context! {} })
            .unwrap_err();
        assert!(matches!(&err, RequestError::Render { template, .. } if template == "url"));
    }
}
