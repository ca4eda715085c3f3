//! The e-commerce fraud check, `examples/shopify-fraud-check.toml`, end to end:
//! a signed Shopify `orders/create` webhook → ingest → worker → the customer's
//! order history (OAuth 2.0) → the AI's risk verdict → for a high risk, a
//! `tagsAdd` on the Shopify Admin stand-in and one Slack post; for a low risk,
//! neither. The example runs as shipped, with only its hosts pointed at the
//! stand-ins and its provider at a stand-in scripted with the verdicts.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::Method;
use hookfleet_common::config::{Secret, Sources};
use hookfleet_tests::env::TestEnv;
use hookfleet_tests::fleet::{WorkerHandle, worker_settings};
use hookfleet_tests::settings::Settings;
use hookfleet_tests::spawn::IngestHandle;
use hookfleet_tests::stand_in::StandIn;
use hookfleet_tests::stand_ins::oauth::OAuthStandIn;
use hookfleet_tests::wait::wait_until;
use hookfleet_worker::config::{ProviderConfig, ProviderKind};
use serde_json::{Value, json};

const EXAMPLE: &str = include_str!("../../../examples/shopify-fraud-check.toml");
const PIPELINE: &str = "order-fraud-check";
const WEBHOOK_SECRET: &str = "shopify-webhook-secret";
const ORDERS_SECRET: &str = "orders-client-secret";
const GRAPHQL: &str = "/admin/api/2025-01/graphql.json";
const DEADLINE: Duration = Duration::from_secs(30);

/// An OpenAI chat completion whose content is `verdict`.
fn completion(verdict: Value) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": verdict.to_string() } }],
        "usage": { "prompt_tokens": 120, "completion_tokens": 30 }
    })
}

/// A Shopify order as `orders/create` sends it (the fields the example reads).
fn order(id: u64, name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id,
        "admin_graphql_api_id": format!("gid://shopify/Order/{id}"),
        "name": name,
        "email": "buyer@example.net",
        "total_price": "1249.00",
        "currency": "EUR",
        "customer": { "id": 7001 },
        "billing_address": { "country_code": "DE" },
        "shipping_address": { "country_code": "NG" }
    }))
    .unwrap()
}

fn load_example(hosts: &[(&str, &str)]) -> Settings {
    for (name, value) in [
        ("SHOPIFY_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("OPENAI_API_KEY", "sk-test"),
        ("ORDERS_CLIENT_SECRET", ORDERS_SECRET),
        ("SHOPIFY_ADMIN_TOKEN", "shpat_test"),
        ("SLACK_BOT_TOKEN", "xoxb-test"),
    ] {
        // SAFETY: nextest runs each test in its own process, before any thread reads these.
        unsafe { std::env::set_var(name, value) };
    }
    let toml = hosts.iter().fold(EXAMPLE.to_owned(), |toml, (from, to)| {
        toml.replace(from, to)
    });
    Settings::load_from(Sources {
        file: None,
        toml: Some(toml),
        env: Some(HashMap::new()),
    })
    .expect("the example loads")
}

async fn send_order(client: &reqwest::Client, ingest: &IngestHandle, body: Vec<u8>, id: &str) {
    let signature = hookfleet_common::signature::shopify::sign(WEBHOOK_SECRET, &body);
    let response = client
        .post(ingest.hook_url("shopify"))
        .header("content-type", "application/json")
        .header("x-shopify-hmac-sha256", signature)
        .header("x-shopify-topic", "orders/create")
        .header("x-shopify-webhook-id", id)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_risky_order_is_tagged_and_reported_and_a_safe_one_is_left_alone() {
    let env = TestEnv::new().await;
    let orders = OAuthStandIn::start(
        "hookfleet-fraud-check",
        ORDERS_SECRET,
        Duration::from_secs(3600),
    )
    .await;
    orders.answer(json!({ "orders_count": 0, "chargebacks": 2, "first_order_at": null }));
    let shopify = StandIn::start().await;
    shopify.answer(
        Method::POST,
        GRAPHQL,
        200,
        json!({ "data": { "tagsAdd": { "userErrors": [] } } }),
    );
    let slack = StandIn::start().await;
    slack.answer(
        Method::POST,
        "/api/chat.postMessage",
        200,
        json!({ "ok": true }),
    );
    let ai = StandIn::start().await;
    ai.answer(
        Method::POST,
        "/v1/chat/completions",
        200,
        completion(
            json!({ "risk": "high", "score": 91, "reasons": ["new customer", "countries differ"] }),
        ),
    );

    let token_url = orders.token_url();
    let example = load_example(&[
        ("https://auth.example.com/oauth/token", token_url.as_str()),
        ("https://orders.example.com", orders.url()),
        ("https://example.myshopify.com", shopify.url()),
        ("https://slack.com", slack.url()),
    ]);
    let mut settings = worker_settings(&env, 3);
    settings.ingest.sources = example.ingest.sources;
    settings.worker.pipelines = example.worker.pipelines;
    settings.worker.providers.insert(
        "openai".into(),
        ProviderConfig {
            kind: ProviderKind::Openai,
            base_url: Some(format!("{}/v1", ai.url())),
            api_key: Some(Secret::new("sk-test")),
            timeout: Duration::from_secs(5),
            anthropic_version: "2023-06-01".into(),
            api_key_header: None,
            auth: None,
            tls: None,
        },
    );
    let ingest = IngestHandle::start(settings.clone()).await;
    let worker = WorkerHandle::start_consuming(settings).await;
    let client = reqwest::Client::new();

    send_order(&client, &ingest, order(450789469, "#1001"), "wh-1").await;
    wait_until(DEADLINE, || {
        let done = worker.jobs(PIPELINE, "succeeded");
        async move { done >= 1 }
    })
    .await;

    // The history was fetched with the shared OAuth token, and read by the prompt.
    let history = orders.api_requests();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].path, "/api/customers/7001/order-history");
    assert_eq!(history[0].token.as_deref(), Some("tok-1"));
    assert_eq!(orders.token_requests()[0]["scope"], "orders.read");
    let prompt = ai.requests()[0].json();
    let user = prompt["messages"][1]["content"].as_str().unwrap();
    assert!(user.contains("0 earlier orders, 2 chargebacks"), "{user}");
    assert!(
        user.contains("Billing country DE, shipping country NG"),
        "{user}"
    );

    let tags = shopify.requests_to(&Method::POST, GRAPHQL);
    assert_eq!(tags.len(), 1, "tagged once");
    assert_eq!(tags[0].header("x-shopify-access-token"), Some("shpat_test"));
    let mutation = tags[0].json();
    assert!(mutation["query"].as_str().unwrap().contains("tagsAdd"));
    assert_eq!(mutation["variables"]["id"], "gid://shopify/Order/450789469");
    assert_eq!(
        mutation["variables"]["tags"],
        json!(["fraud-review", "ai-risk-91"])
    );
    let posts = slack.requests_to(&Method::POST, "/api/chat.postMessage");
    assert_eq!(posts.len(), 1, "reported once");
    let post = posts[0].json();
    assert_eq!(post["channel"], "C0FRAUDTEAM");
    assert_eq!(
        post["text"],
        "Possible fraud on order #1001 (score 91): new customer; countries differ"
    );

    // A low-risk verdict: the order is neither tagged nor reported.
    ai.answer(
        Method::POST,
        "/v1/chat/completions",
        200,
        completion(json!({ "risk": "low", "score": 4, "reasons": [] })),
    );
    send_order(&client, &ingest, order(450789470, "#1002"), "wh-2").await;
    wait_until(DEADLINE, || {
        let done = worker.jobs(PIPELINE, "succeeded");
        async move { done >= 2 }
    })
    .await;
    assert_eq!(shopify.requests().len(), 1);
    assert_eq!(slack.requests().len(), 1);
    assert_eq!(orders.token_requests().len(), 1, "the token is reused");
    assert_eq!(orders.api_requests().len(), 2);

    worker.stop().await.unwrap();
    ingest.stop().await.unwrap();
}
