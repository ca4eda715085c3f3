//! Rendering: the embedded templates and stylesheet, and the one function
//! that turns a template and its context into a response.
//!
//! Every template ends in `.html`, so minijinja escapes every value it prints
//! (payloads, headers, AI output and errors are all hostile text). Every
//! response says `Cache-Control: no-store`: pages hold event data and CSRF
//! tokens and must not stay in a browser's cache.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use minijinja::Environment;
use serde::Serialize;

/// The templates, embedded in the binary.
const TEMPLATES: [(&str, &str); 9] = [
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("panel.html", include_str!("templates/panel.html")),
    ("event.html", include_str!("templates/event.html")),
    ("letters.html", include_str!("templates/letters.html")),
    ("letter.html", include_str!("templates/letter.html")),
    ("action.html", include_str!("templates/action.html")),
    ("pipelines.html", include_str!("templates/pipelines.html")),
];

/// The stylesheet.
pub const CSS: &str = include_str!("templates/console.css");
/// The overview's refresher: the only script.
pub const JS: &str = include_str!("templates/console.js");

/// Why a template could not be compiled or rendered.
#[derive(Debug, thiserror::Error)]
#[error("console template `{name}` failed")]
pub struct ViewError {
    name: String,
    #[source]
    source: minijinja::Error,
}

/// The compiled templates.
pub struct Views {
    env: Environment<'static>,
}

impl Views {
    /// Compiles the embedded templates (a broken one fails the worker's start).
    pub fn build() -> Result<Self, ViewError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        for (name, source) in TEMPLATES {
            env.add_template(name, source).map_err(|source| ViewError {
                name: name.to_owned(),
                source,
            })?;
        }
        Ok(Self { env })
    }

    /// Renders `name` with `context` as a `status` response.
    pub fn page(&self, status: StatusCode, name: &str, context: impl Serialize) -> Response {
        let rendered = self
            .env
            .get_template(name)
            .and_then(|template| template.render(context));
        match rendered {
            Ok(html) => html_response(status, html),
            Err(source) => {
                let error = ViewError {
                    name: name.to_owned(),
                    source,
                };
                tracing::error!(error = %hookfleet_common::telemetry::error_chain(&error), "Console page failed to render.");
                html_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "<!doctype html><p>The page could not be rendered.</p>".to_owned(),
                )
            }
        }
    }
}

/// An HTML response the browser must not cache.
pub fn html_response(status: StatusCode, html: String) -> Response {
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    no_store(headers);
    response
}

/// An embedded asset.
pub fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    no_store(headers);
    response
}

/// `Cache-Control: no-store`, and no framing by other sites.
pub fn no_store(headers: &mut axum::http::HeaderMap) {
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'",
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles_and_escapes_what_it_prints() {
        let views = Views::build().unwrap();
        let hostile = "<script>alert(1)</script>";
        let response = views.page(
            StatusCode::OK,
            "letter.html",
            minijinja::context! { id => hostile, letter => minijinja::context! { body => hostile, headers => vec![("hf-x", hostile)] } },
        );
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
    }
}
