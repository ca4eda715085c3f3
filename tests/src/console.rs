//! The web console from a test's side: settings that turn it on with a fresh
//! token, and a client with one method per thing an operator does.

use crate::settings::Settings;
use hookfleet_common::config::Secret;
use hookfleet_worker::config::ConsoleConfig;
use reqwest::StatusCode;

/// Turns the console on in `settings` with `token`, named `oncall`.
pub fn enable(settings: &mut Settings, token: &str) {
    settings.worker.console = ConsoleConfig {
        enabled: true,
        token: Some(Secret::new(token)),
        token_name: "oncall".into(),
        ..ConsoleConfig::default()
    };
}

/// A fresh random token.
pub fn fresh_token() -> String {
    format!("console-{}", ulid::Ulid::new())
}

/// A page as the console answered it.
#[derive(Debug)]
pub struct Page {
    /// The HTTP status.
    pub status: StatusCode,
    /// `Cache-Control`.
    pub cache_control: Option<String>,
    /// The HTML.
    pub html: String,
}

impl Page {
    /// The value of the first hidden input named `name`.
    pub fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self
            .html
            .find(&marker)
            .unwrap_or_else(|| panic!("no hidden `{name}` in the page:\n{}", self.html))
            + marker.len();
        let end = self.html[start..].find('"').expect("closing quote") + start;
        self.html[start..end].to_owned()
    }
}

/// An operator's client: `base` is the worker's admin URL.
pub struct ConsoleClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl ConsoleClient {
    /// A client sending `Authorization: Bearer {token}`.
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            base: base.to_owned(),
            token: Some(token.to_owned()),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
        }
    }

    /// A client without credentials.
    pub fn anonymous(base: &str) -> Self {
        Self {
            token: None,
            ..Self::new(base, "")
        }
    }

    /// `GET {path}` (path starts with `/console`).
    pub async fn get(&self, path: &str) -> Page {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    /// `POST {path}` with form `fields`.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form_body(fields));
        self.send(request).await
    }

    /// `POST {path}` with form `fields`; an error when the worker does not answer.
    pub async fn post_raw(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Result<String> {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.token.as_deref().unwrap_or_default())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form_body(fields))
            .send()
            .await?
            .text()
            .await
    }

    async fn send(&self, mut request: reqwest::RequestBuilder) -> Page {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("the console answers");
        let status = response.status();
        let cache_control = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let html = response.text().await.expect("a body");
        Page {
            status,
            cache_control,
            html,
        }
    }
}

/// `fields` as an `application/x-www-form-urlencoded` body.
pub fn form_body(fields: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse("http://form.invalid/").expect("a URL");
    url.query_pairs_mut().extend_pairs(fields);
    url.query().unwrap_or_default().to_owned()
}
