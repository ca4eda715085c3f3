//! Webhook senders for tests: sources with freshly generated secrets, and requests
//! signed the way each provider signs them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hookfleet_common::config::Secret;
use hookfleet_common::signature::SchemeKind;
use hookfleet_common::signature::{github, standard, stripe};
use hookfleet_ingest::config::SourceConfig;
use rand::RngCore;

/// A source config with defaults, as `hookfleet.toml` would give it.
pub fn source(scheme: SchemeKind, secrets: &[&str]) -> SourceConfig {
    SourceConfig {
        scheme,
        secrets: secrets.iter().map(|s| Secret::new(*s)).collect(),
        hmac: None,
        tolerance: Duration::from_secs(300),
        max_body_bytes: 1024 * 1024,
        event_id: None,
        event_type: None,
        require_json: true,
        allow_ips: Vec::new(),
        rate_limit: None,
        forward_headers: Vec::new(),
        dedup_body: None,
    }
}

/// A random Standard Webhooks secret (`whsec_` + base64 of 24 random bytes).
pub fn standard_secret() -> String {
    let mut key = [0u8; 24];
    rand::rng().fill_bytes(&mut key);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// A random secret for the other schemes.
pub fn plain_secret() -> String {
    let mut key = [0u8; 16];
    rand::rng().fill_bytes(&mut key);
    format!("whsec_{}", hex::encode(key))
}

/// Seconds since the epoch, `offset` seconds from now.
pub fn unix_now(offset: i64) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    now + offset
}

/// A Standard Webhooks request: `webhook-id/timestamp/signature` headers.
pub fn standard_request(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    event_id: &str,
    body: &[u8],
) -> reqwest::RequestBuilder {
    let ts = unix_now(0);
    let signature = standard::sign(secret, event_id, ts, body).expect("valid secret");
    client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", event_id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(body.to_vec())
}

/// A Stripe request signed at `ts`.
pub fn stripe_request(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    ts: i64,
    body: &[u8],
) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("stripe-signature", stripe::sign(secret, ts, body))
        .body(body.to_vec())
}

/// A GitHub request.
pub fn github_request(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    delivery: &str,
    event: &str,
    body: &[u8],
) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("x-github-delivery", delivery)
        .header("x-github-event", event)
        .header("x-hub-signature-256", github::sign(secret, body))
        .body(body.to_vec())
}

/// A support-ticket event body with a unique id.
pub fn ticket(event_id: &str, text: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "type": "ticket.created",
        "id": event_id,
        "ticket": { "subject": "Help", "body": text },
        "customer": { "name": "Ada", "email": "ada@example.com" }
    }))
    .expect("serializable")
}
