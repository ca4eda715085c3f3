//! An OAuth 2.0 authorization server and the API it protects, in one stand-in:
//! `POST /oauth/token` issues `tok-1`, `tok-2`, … for the client-credentials
//! grant (RFC 6749 §4.4) to the one client it knows; every other path is the
//! API, answering 200 to a current token and 401 otherwise.
//!
//! It counts token requests and records API requests, and a test can expire
//! tokens early, revoke the ones issued so far, or refuse every token, to see
//! the worker refresh and retry exactly as documented.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The path of the token endpoint.
pub const TOKEN_PATH: &str = "/oauth/token";

/// One API request as received.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// The method.
    pub method: Method,
    /// The path.
    pub path: String,
    /// The bearer token it carried, if any.
    pub token: Option<String>,
    /// Its `content-type`.
    pub content_type: Option<String>,
    /// Its body.
    pub body: Bytes,
    /// The status it got.
    pub status: u16,
}

struct Issued {
    at: Instant,
}

struct Inner {
    client_id: String,
    client_secret: String,
    lifetime: Duration,
    issued: Vec<Issued>,
    /// Tokens numbered up to this are revoked.
    revoked_through: usize,
    refuse_all: bool,
    answer: serde_json::Value,
    token_requests: Vec<HashMap<String, String>>,
    api_requests: Vec<ApiRequest>,
}

/// A running authorization server and API.
pub struct OAuthStandIn {
    url: String,
    inner: Arc<Mutex<Inner>>,
    stop: CancellationToken,
}

impl OAuthStandIn {
    /// Starts on `127.0.0.1:0` for one client; tokens live `lifetime`.
    pub async fn start(client_id: &str, client_secret: &str, lifetime: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let inner = Arc::new(Mutex::new(Inner {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            lifetime,
            issued: Vec::new(),
            revoked_through: 0,
            refuse_all: false,
            answer: json!({ "ok": true }),
            token_requests: Vec::new(),
            api_requests: Vec::new(),
        }));
        let stop = CancellationToken::new();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let stopped = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
        });
        Self { url, inner, stop }
    }

    /// `http://127.0.0.1:{port}`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The token endpoint's URL.
    pub fn token_url(&self) -> String {
        format!("{}{TOKEN_PATH}", self.url)
    }

    /// The form fields of every token request so far.
    pub fn token_requests(&self) -> Vec<HashMap<String, String>> {
        self.lock().token_requests.clone()
    }

    /// Every API request so far.
    pub fn api_requests(&self) -> Vec<ApiRequest> {
        self.lock().api_requests.clone()
    }

    /// Revokes every token issued so far: the API answers 401 to them.
    pub fn revoke_issued(&self) {
        let mut inner = self.lock();
        inner.revoked_through = inner.issued.len();
    }

    /// The JSON the API answers to an accepted request (`{"ok":true}` at first).
    pub fn answer(&self, body: serde_json::Value) {
        self.lock().answer = body;
    }

    /// Makes the API refuse every token, even fresh ones.
    pub fn refuse_all(&self) {
        self.lock().refuse_all = true;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("not poisoned")
    }
}

impl Drop for OAuthStandIn {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut inner = inner.lock().expect("not poisoned");
    if method == Method::POST && uri.path() == TOKEN_PATH {
        return issue(&mut inner, &headers, &body);
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let accepted = token
        .as_deref()
        .and_then(|t| t.strip_prefix("tok-"))
        .and_then(|n| n.parse::<usize>().ok())
        .is_some_and(|n| {
            !inner.refuse_all
                && n > inner.revoked_through
                && inner
                    .issued
                    .get(n - 1)
                    .is_some_and(|t| t.at.elapsed() < inner.lifetime)
        });
    let status = if accepted { 200 } else { 401 };
    inner.api_requests.push(ApiRequest {
        method,
        path: uri.path().to_owned(),
        token,
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body,
        status,
    });
    let answer = if accepted {
        inner.answer.clone()
    } else {
        json!({ "error": "invalid_token" })
    };
    (
        StatusCode::from_u16(status).expect("valid"),
        axum::Json(answer),
    )
        .into_response()
}

/// The token endpoint: checks the grant and the client, issues the next token.
fn issue(inner: &mut Inner, headers: &HeaderMap, body: &[u8]) -> Response {
    let form: HashMap<String, String> = form_fields(body);
    inner.token_requests.push(form.clone());
    let json_form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let client_ok = form.get("client_id") == Some(&inner.client_id)
        && form.get("client_secret") == Some(&inner.client_secret);
    if !json_form || form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": "unsupported_grant_type" })),
        )
            .into_response();
    }
    if !client_ok {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "error": "invalid_client" })),
        )
            .into_response();
    }
    inner.issued.push(Issued { at: Instant::now() });
    let token = format!("tok-{}", inner.issued.len());
    axum::Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": inner.lifetime.as_secs(),
    }))
    .into_response()
}

/// `application/x-www-form-urlencoded` fields (`+` is a space).
pub fn form_fields(body: &[u8]) -> HashMap<String, String> {
    let decode = |s: &str| percent_decode(&s.replace('+', " "));
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
