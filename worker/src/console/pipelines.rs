//! The pipelines page: what this worker loaded — each pipeline's globs,
//! provider and model, fallbacks, sinks and enrichment steps — and the
//! providers.
//!
//! Secrets are shown as references only (`env:OPENAI_API_KEY`,
//! `file:/run/secrets/crm`), never values; URLs only as their origin, since a
//! path or query may carry a token; header values not at all.

use std::sync::Arc;

use crate::config::{HttpAuth, PipelineConfig, ProviderConfig, SinkConfig};
use axum::extract::State;
use axum::response::Response;
use hookfleet_common::config::Secret;
use serde::Serialize;

use super::{Authed, ConsoleState};

/// One pipeline, as shown.
#[derive(Debug, Serialize)]
struct PipelineView {
    name: String,
    sources: Vec<String>,
    event_types: Vec<String>,
    provider: String,
    model: String,
    fallbacks: Vec<String>,
    sinks: Vec<String>,
    enrich: Vec<String>,
}

/// One provider, as shown.
#[derive(Debug, Serialize)]
struct ProviderView {
    name: String,
    kind: &'static str,
    base_url: String,
    api_key: String,
    timeout: String,
}

/// `GET /console/pipelines`.
pub async fn page(State(state): State<Arc<ConsoleState>>, Authed(operator): Authed) -> Response {
    let worker = &state.settings.worker;
    let pipelines: Vec<PipelineView> = worker.pipelines.iter().map(pipeline).collect();
    let providers: Vec<ProviderView> = worker
        .providers
        .iter()
        .map(|(name, p)| provider(name, p))
        .collect();
    let context = minijinja::context! { pipelines => pipelines, providers => providers };
    state.render(&operator, "pipelines", "pipelines.html", context)
}

fn pipeline(p: &PipelineConfig) -> PipelineView {
    PipelineView {
        name: p.name.clone(),
        sources: p.sources.clone(),
        event_types: p.event_types.clone(),
        provider: p.provider.clone(),
        model: p.model.clone(),
        fallbacks: p
            .fallbacks
            .iter()
            .map(|f| format!("{} / {}", f.provider, f.model))
            .collect(),
        sinks: p.sinks.iter().map(sink).collect(),
        enrich: p
            .enrich
            .iter()
            .map(|e| {
                format!(
                    "{}: {} {}{}",
                    e.name,
                    e.method,
                    origin(&e.url),
                    auth(e.auth.as_ref())
                )
            })
            .collect(),
    }
}

fn sink(s: &SinkConfig) -> String {
    match s {
        SinkConfig::Amqp => "amqp: the results exchange".to_owned(),
        SinkConfig::Http(h) => {
            let signing = h
                .signing_secret
                .as_ref()
                .map(|s| format!(", signed with {}", reference(s)))
                .unwrap_or_default();
            format!(
                "http {}: {} {}{}{signing}",
                h.name,
                h.method,
                origin(&h.url),
                auth(h.auth.as_ref())
            )
        }
    }
}

fn provider(name: &str, p: &ProviderConfig) -> ProviderView {
    ProviderView {
        name: name.to_owned(),
        kind: p.kind.as_str(),
        base_url: origin(&p.base_url()),
        api_key: p
            .api_key
            .as_ref()
            .map_or_else(|| "none".to_owned(), reference),
        timeout: humantime::format_duration(p.timeout).to_string(),
    }
}

fn auth(a: Option<&HttpAuth>) -> String {
    match a {
        None => String::new(),
        Some(HttpAuth::Bearer { token }) => format!(", bearer token {}", reference(token)),
        Some(HttpAuth::Basic { username, password }) => {
            format!(", basic {username} / {}", reference(password))
        }
        Some(HttpAuth::Header { name, value }) => format!(", header {name}: {}", reference(value)),
        Some(HttpAuth::Query { name, value }) => format!(", query {name}={}", reference(value)),
        Some(HttpAuth::OAuth2ClientCredentials(oauth)) => format!(
            ", OAuth 2.0 client {} at {} {}",
            oauth.client_id,
            origin(&oauth.token_url),
            reference(&oauth.client_secret)
        ),
        Some(HttpAuth::Jwt(jwt)) => format!(", JWT signed with {}", reference(&jwt.key)),
    }
}

/// A secret as its reference (`env:NAME`), never its value.
fn reference(secret: &Secret) -> String {
    format!("[{}]", secret.origin())
}

/// A URL's scheme and host (a template that is no URL yet shows as such).
fn origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}/…", u.scheme()),
            (Some(host), None) => format!("{}://{host}/…", u.scheme()),
            _ => "(no host)".to_owned(),
        },
        Err(_) => "(a URL template)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_show_their_origin_and_secrets_their_reference() {
        assert_eq!(
            origin("https://crm.example/v1/x?token=abc"),
            "https://crm.example/…"
        );
        assert_eq!(origin("http://127.0.0.1:9/a"), "http://127.0.0.1:9/…");
        let shown = auth(Some(&HttpAuth::Bearer {
            token: Secret::new("s3cret-value"),
        }));
        assert_eq!(shown, ", bearer token [inline]");
    }
}
