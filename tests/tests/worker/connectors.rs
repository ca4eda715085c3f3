//! The connector snippets of `examples/connectors/`, each delivered by a worker
//! to a stand-in that checks the request as the service documents it: method,
//! path, headers and body fields. The snippets are loaded as shipped, with only
//! their hosts pointed at the stand-in.

use std::time::Duration;

use axum::http::Method;
use hookfleet_tests::env::TestEnv;
use hookfleet_tests::fleet::{
    JobPublisher, WorkerHandle, header, mock_openai, pipeline, take, worker_settings,
};
use hookfleet_tests::mock_ai::{MockAi, MockConfig};
use hookfleet_tests::settings::Settings;
use hookfleet_tests::stand_in::{Recorded, StandIn};
use hookfleet_tests::stand_ins::oauth::OAuthStandIn;
use hookfleet_tests::wait::wait_until;
use hookfleet_worker::config::SinkConfig;
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(30);
/// A prompt the mock answers `negative` to (it contains "refund").
const PROMPT: &str = "Order {{ payload.id }}: it arrived broken, I want a refund.";

/// The sink of snippet `file`, its `https://…example…` host replaced by `host`.
fn snippet(file: &str, host: &str) -> SinkConfig {
    let path = format!(
        "{}/../examples/connectors/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("the snippet exists");
    let text = [
        "https://hooks.slack.com",
        "https://slack.com",
        "https://example.webhook.office.com",
        "https://api.hubapi.com",
        "https://example.my.salesforce.com",
        "https://example.myshopify.com",
    ]
    .iter()
    .fold(text, |text, origin| text.replace(origin, host));
    let mut doc: toml::Table = toml::from_str(&text).expect("the snippet is TOML");
    let sink = doc
        .remove("worker")
        .and_then(|w| {
            // Alone in a file, `[[worker.pipelines.sinks]]` makes `pipelines` a table.
            let pipelines = w.get("pipelines")?;
            let pipeline = pipelines.get(0).unwrap_or(pipelines);
            pipeline.get("sinks")?.get(0).cloned()
        })
        .expect("one [[worker.pipelines.sinks]]");
    sink.try_into().expect("the snippet is a sink")
}

/// One event with `payload` published to a worker whose only pipeline has the
/// one sink `sink` and two attempts.
struct OneEvent {
    env: TestEnv,
    worker: WorkerHandle,
    _mock: MockAi,
}

impl OneEvent {
    async fn run(sink: SinkConfig, payload: Value) -> Self {
        let env = TestEnv::new().await;
        let mock = MockAi::start(MockConfig::default()).await;
        let mut settings: Settings = worker_settings(&env, 2);
        settings
            .worker
            .providers
            .insert("mock".into(), mock_openai(&mock));
        let mut p = pipeline("p", "mock", PROMPT);
        p.sinks = vec![sink];
        settings.worker.pipelines = vec![p];
        let worker = WorkerHandle::start_consuming(settings).await;
        let jobs = JobPublisher::new(&env).await;
        jobs.publish("shop", "orders.create", &payload).await;
        jobs.close().await;
        Self {
            env,
            worker,
            _mock: mock,
        }
    }
}

/// Runs one event with `payload` through a pipeline whose only sink is `sink`.
async fn deliver(sink: SinkConfig, payload: Value) {
    let run = OneEvent::run(sink, payload).await;
    wait_until(DEADLINE, || {
        let done = run.worker.jobs("p", "succeeded");
        async move { done >= 1 }
    })
    .await;
}

/// Runs one event whose sink fails every attempt; returns the dead letter's
/// `hf-error`.
async fn dead_letter_reason(sink: SinkConfig) -> String {
    let run = OneEvent::run(sink, json!({ "id": 7 })).await;
    let env = &run.env;
    let dead = take(env, &env.topology().dead_queue(), 1, DEADLINE).await;
    assert_eq!(run.worker.jobs("p", "succeeded"), 0);
    assert_eq!(header(&dead[0], "hf-stage").as_deref(), Some("sink"));
    header(&dead[0], "hf-error").expect("a dead letter says why")
}

fn set_secret(name: &str, value: &str) {
    // SAFETY: nextest runs each test in its own process, before any thread reads it.
    unsafe { std::env::set_var(name, value) };
}

/// The one request the stand-in received.
fn only_request(stand_in: &StandIn) -> Recorded {
    let requests = stand_in.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    requests
        .into_iter()
        .next()
        .unwrap_or_else(|| unreachable!())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_incoming_webhook_posts_block_kit_with_a_fallback_text() {
    let slack = StandIn::start().await;
    slack.answer_raw(Method::POST, "/services/", 200, "ok");
    deliver(
        snippet("slack-incoming-webhook.toml", slack.url()),
        json!({ "id": 1 }),
    )
    .await;

    let request = only_request(&slack);
    assert_eq!(request.method, Method::POST);
    assert_eq!(
        request.path,
        "/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    let body = request.json();
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .starts_with("Needs attention: ")
    );
    let blocks = body["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["type"], "plain_text");
    assert_eq!(blocks[1]["type"], "section");
    assert_eq!(blocks[1]["text"]["type"], "mrkdwn");
    assert_eq!(blocks[2]["type"], "context");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_chat_post_message_sends_channel_text_and_blocks_with_the_bot_token() {
    set_secret("SLACK_BOT_TOKEN", "xoxb-test-token");
    let slack = StandIn::start().await;
    slack.answer(
        Method::POST,
        "/api/chat.postMessage",
        200,
        json!({ "ok": true }),
    );
    deliver(
        snippet("slack-chat-post-message.toml", slack.url()),
        json!({ "id": 1 }),
    )
    .await;

    let request = only_request(&slack);
    assert_eq!(request.method, Method::POST);
    assert_eq!(request.path, "/api/chat.postMessage");
    assert_eq!(
        request.header("authorization"),
        Some("Bearer xoxb-test-token")
    );
    assert_eq!(
        request.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let body = request.json();
    assert_eq!(body["channel"], "C0123456789");
    assert!(body["text"].is_string());
    assert_eq!(body["blocks"][0]["type"], "section");
    assert_eq!(body["blocks"][0]["text"]["type"], "mrkdwn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teams_webhook_posts_a_message_with_one_adaptive_card() {
    let teams = StandIn::start().await;
    teams.answer_raw(Method::POST, "/webhookb2/", 202, "");
    deliver(
        snippet("teams-workflow-webhook.toml", teams.url()),
        json!({ "id": 1 }),
    )
    .await;

    let request = only_request(&teams);
    assert_eq!(request.method, Method::POST);
    assert!(request.path.starts_with("/webhookb2/"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    let body = request.json();
    assert_eq!(body["type"], "message");
    let attachment = &body["attachments"][0];
    assert_eq!(
        attachment["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &attachment["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(
        card["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );
    assert!(card["version"].is_string());
    assert_eq!(card["body"][0]["type"], "TextBlock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_patches_the_ticket_properties_with_the_private_app_token() {
    set_secret("HUBSPOT_PRIVATE_APP_TOKEN", "pat-na1-test");
    let hubspot = StandIn::start().await;
    hubspot.answer(
        Method::PATCH,
        "/crm/v3/objects/tickets/",
        200,
        json!({ "id": "512" }),
    );
    deliver(
        snippet("hubspot-update-ticket.toml", hubspot.url()),
        json!({ "id": 1, "ticket_id": "512" }),
    )
    .await;

    let request = only_request(&hubspot);
    assert_eq!(request.method, Method::PATCH);
    assert_eq!(request.path, "/crm/v3/objects/tickets/512");
    assert_eq!(request.header("authorization"), Some("Bearer pat-na1-test"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    let properties = &request.json()["properties"];
    assert_eq!(properties["hs_ticket_priority"], "HIGH", "a negative order");
    assert!(properties["ai_summary"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_patches_the_case_with_a_client_credentials_token() {
    set_secret("SALESFORCE_CLIENT_SECRET", "sf-secret");
    let salesforce = OAuthStandIn::start(
        "3MVG9EXAMPLECONSUMERKEY",
        "sf-secret",
        Duration::from_secs(3600),
    )
    .await;
    let mut sink = snippet("salesforce-update-case.toml", salesforce.url());
    // The stand-in's token endpoint lives at its own path.
    if let SinkConfig::Http(http) = &mut sink
        && let Some(hookfleet_worker::config::HttpAuth::OAuth2ClientCredentials(oauth)) =
            &mut http.auth
    {
        assert!(oauth.token_url.ends_with("/services/oauth2/token"));
        oauth.token_url = salesforce.token_url();
    }
    deliver(sink, json!({ "id": 1, "case_id": "5003000000D8cuI" })).await;

    let tokens = salesforce.token_requests();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0]["grant_type"], "client_credentials");
    assert_eq!(tokens[0]["client_id"], "3MVG9EXAMPLECONSUMERKEY");
    let api = salesforce.api_requests();
    assert_eq!(api.len(), 1);
    assert_eq!(api[0].method, Method::PATCH);
    assert_eq!(
        api[0].path,
        "/services/data/v62.0/sobjects/Case/5003000000D8cuI"
    );
    assert_eq!(api[0].token.as_deref(), Some("tok-1"));
    assert_eq!(api[0].content_type.as_deref(), Some("application/json"));
    let body: Value = serde_json::from_slice(&api[0].body).unwrap();
    assert_eq!(body["Priority"], "High");
    assert!(body["AI_Summary__c"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shopify_tags_the_order_through_the_admin_graphql_api() {
    set_secret("SHOPIFY_ADMIN_TOKEN", "shpat_test");
    let shopify = StandIn::start().await;
    shopify.answer(
        Method::POST,
        "/admin/api/2025-01/graphql.json",
        200,
        json!({ "data": { "tagsAdd": { "node": { "id": "gid://shopify/Order/450789469" }, "userErrors": [] } } }),
    );
    deliver(
        snippet("shopify-tag-order.toml", shopify.url()),
        json!({ "id": 450789469 }),
    )
    .await;

    let request = only_request(&shopify);
    assert_eq!(request.method, Method::POST);
    assert_eq!(request.path, "/admin/api/2025-01/graphql.json");
    assert_eq!(request.header("x-shopify-access-token"), Some("shpat_test"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    let body = request.json();
    assert!(
        body["query"]
            .as_str()
            .unwrap()
            .contains("tagsAdd(id: $id, tags: $tags)")
    );
    assert_eq!(body["variables"]["id"], "gid://shopify/Order/450789469");
    assert_eq!(body["variables"]["tags"][0], "ai-reviewed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_answer_of_200_with_ok_false_is_a_failed_delivery_not_a_sent_one() {
    set_secret("SLACK_BOT_TOKEN", "xoxb-test-token");
    let slack = StandIn::start().await;
    slack.answer(
        Method::POST,
        "/api/chat.postMessage",
        200,
        json!({ "ok": false, "error": "channel_not_found" }),
    );

    let error = dead_letter_reason(snippet("slack-chat-post-message.toml", slack.url())).await;

    assert!(error.starts_with("sink_declined"), "{error}");
    assert!(error.contains("`response.ok` does not hold"), "{error}");
    assert!(error.contains("channel_not_found"), "{error}");
    assert!(!error.contains("xoxb-test-token"), "{error}");
    // Transient: retried once (two attempts), then dead-lettered.
    assert_eq!(slack.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shopify_user_errors_and_throttling_in_a_200_are_failed_deliveries() {
    set_secret("SHOPIFY_ADMIN_TOKEN", "shpat_test");
    for answer in [
        json!({ "data": { "tagsAdd": { "node": null, "userErrors": [{ "field": ["id"], "message": "Order does not exist" }] } } }),
        json!({ "errors": [{ "message": "Throttled", "extensions": { "code": "THROTTLED" } }] }),
        json!("not an object"),
    ] {
        let shopify = StandIn::start().await;
        shopify.answer(
            Method::POST,
            "/admin/api/2025-01/graphql.json",
            200,
            answer.clone(),
        );

        let error = dead_letter_reason(snippet("shopify-tag-order.toml", shopify.url())).await;

        assert!(error.starts_with("sink_declined"), "{answer}: {error}");
        assert!(error.contains("does not hold"), "{answer}: {error}");
    }
}
