//! Stand-ins for the services a pipeline talks to over HTTP (a CRM, a chat
//! channel): a small axum server on port 0 that records every request and
//! answers by rules the test sets, and can change, while it runs.
//!
//! A rule matches a method and a path prefix and says the status and JSON body
//! to answer; requests no rule matches get `404`. Requests are recorded whatever
//! the answer, so a test can count attempts as well as successes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::wait::wait_until;

/// One request as the stand-in received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `PATCH`, …
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    /// The query, if any (`a=1&b=2`).
    pub query: Option<String>,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// The status it was answered with.
    pub status: u16,
}

impl Recorded {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON (panics when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// How to answer requests matching a method and path prefix.
#[derive(Debug, Clone)]
struct Rule {
    method: Method,
    prefix: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

#[derive(Default)]
struct Shared {
    rules: Mutex<Vec<Rule>>,
    requests: Mutex<Vec<Recorded>>,
}

/// A running stand-in server.
pub struct StandIn {
    url: String,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl StandIn {
    /// Starts a stand-in on `127.0.0.1:0` with no rules.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a stand-in");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let shared = Arc::new(Shared::default());
        let stop = CancellationToken::new();
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(shared.clone());
        let stopped = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
        });
        Self { url, shared, stop }
    }

    /// `http://127.0.0.1:{port}`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Answers `method` requests under `prefix` with `status` and the JSON `body`
    /// (replacing an earlier rule for the same method and prefix).
    pub fn answer(&self, method: Method, prefix: &str, status: u16, body: serde_json::Value) {
        self.answer_raw(method, prefix, status, &body.to_string());
    }

    /// As [`answer`](Self::answer), with any body text.
    pub fn answer_raw(&self, method: Method, prefix: &str, status: u16, body: &str) {
        self.answer_with_headers(method, prefix, status, &[], body);
    }

    /// As [`answer_raw`](Self::answer_raw), with response headers (`retry-after`,
    /// `location`).
    pub fn answer_with_headers(
        &self,
        method: Method,
        prefix: &str,
        status: u16,
        headers: &[(&str, &str)],
        body: &str,
    ) {
        let mut rules = self.shared.rules.lock().expect("not poisoned");
        rules.retain(|r| !(r.method == method && r.prefix == prefix));
        rules.push(Rule {
            method,
            prefix: prefix.to_owned(),
            status,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.to_owned(),
        });
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().expect("not poisoned").clone()
    }

    /// The requests with `method` under `prefix`.
    pub fn requests_to(&self, method: &Method, prefix: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == *method && r.path.starts_with(prefix))
            .collect()
    }

    /// Waits until `n` requests with `method` under `prefix` arrived; panics
    /// after `deadline`.
    pub async fn wait_for(&self, method: Method, prefix: &str, n: usize, deadline: Duration) {
        wait_until(deadline, || {
            let count = self.requests_to(&method, prefix).len();
            async move { count >= n }
        })
        .await;
    }

    /// Stops the server.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn answer(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let rule = shared
        .rules
        .lock()
        .expect("not poisoned")
        .iter()
        .filter(|r| r.method == method && path.starts_with(&r.prefix))
        .max_by_key(|r| r.prefix.len())
        .cloned();
    let (status, extra, text) = rule.map_or(
        (404, Vec::new(), r#"{"error":"no such route"}"#.to_owned()),
        |r| (r.status, r.headers, r.body),
    );
    shared
        .requests
        .lock()
        .expect("not poisoned")
        .push(Recorded {
            method,
            path,
            query: uri.query().map(str::to_owned),
            headers,
            body,
            status,
        });
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, [("content-type", "application/json")], text).into_response();
    for (name, value) in extra {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            axum::http::HeaderValue::from_str(&value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}
