//! The product-review workflow, `examples/product-review-insights.toml`, end to
//! end: a signed `review.created` webhook → ingest → worker → the AI's
//! sentiment, topics and quality score → the review updated through the
//! review platform's API with exactly those insights. The example runs as
//! shipped, with only its host pointed at a stand-in and its provider at a
//! stand-in scripted with the answer.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::Method;
use hookfleet_common::config::{Secret, Sources};
use hookfleet_tests::env::TestEnv;
use hookfleet_tests::fleet::{WorkerHandle, worker_settings};
use hookfleet_tests::settings::Settings;
use hookfleet_tests::spawn::IngestHandle;
use hookfleet_tests::stand_in::StandIn;
use hookfleet_tests::wait::wait_until;
use hookfleet_tests::webhook;
use hookfleet_worker::config::{ProviderConfig, ProviderKind};
use serde_json::json;

const EXAMPLE: &str = include_str!("../../../examples/product-review-insights.toml");
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const DEADLINE: Duration = Duration::from_secs(30);

fn load_example(reviews: &str) -> Settings {
    for (name, value) in [
        ("REVIEWS_WEBHOOK_SECRET", SECRET),
        ("OPENAI_API_KEY", "sk-test"),
        ("REVIEWS_API_KEY", "reviews-key"),
    ] {
        // SAFETY: nextest runs each test in its own process, before any thread reads these.
        unsafe { std::env::set_var(name, value) };
    }
    Settings::load_from(Sources {
        file: None,
        toml: Some(EXAMPLE.replace("https://reviews.example.com", reviews)),
        env: Some(HashMap::new()),
    })
    .expect("the example loads")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_gets_sentiment_topics_and_a_quality_score_stored_back() {
    let env = TestEnv::new().await;
    let reviews = StandIn::start().await;
    reviews.answer(
        Method::PATCH,
        "/api/v1/reviews/",
        200,
        json!({ "updated": true }),
    );
    let ai = StandIn::start().await;
    let insights = json!({
        "sentiment": "negative",
        "topics": ["sizing", "delivery"],
        "quality_score": 4,
        "summary": "Runs two sizes small and arrived a week late."
    });
    ai.answer(
        Method::POST,
        "/v1/chat/completions",
        200,
        json!({
            "model": "gpt-4o-mini",
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": insights.to_string() } }],
            "usage": { "prompt_tokens": 80, "completion_tokens": 40 }
        }),
    );
    let example = load_example(reviews.url());
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

    let body = serde_json::to_vec(&json!({
        "type": "review.created",
        "product": { "id": "p-9", "title": "Trail running shoe" },
        "review": {
            "id": "rev-77", "rating": 2, "title": "Too small, late",
            "body": "Ordered my usual size, had to send them back. Took 12 days to arrive."
        }
    }))
    .unwrap();
    let client = reqwest::Client::new();
    let response = webhook::standard_request(
        &client,
        &ingest.hook_url("reviews"),
        SECRET,
        "msg_rev77",
        &body,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 202);
    let message_id = response.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until(DEADLINE, || {
        let done = worker.jobs("review-insights", "succeeded");
        async move { done >= 1 }
    })
    .await;

    let prompt = ai.requests()[0].json();
    let user = prompt["messages"][1]["content"].as_str().unwrap();
    assert!(user.contains("Product: Trail running shoe"), "{user}");
    assert!(user.contains("Rating: 2/5"), "{user}");
    let updates = reviews.requests_to(&Method::PATCH, "/api/v1/reviews/");
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].path, "/api/v1/reviews/rev-77");
    assert_eq!(updates[0].header("x-api-key"), Some("reviews-key"));
    let stored = updates[0].json();
    assert_eq!(stored["ai_insights"], insights);
    assert_eq!(stored["hookfleet_message_id"], message_id.as_str());

    worker.stop().await.unwrap();
    ingest.stop().await.unwrap();
}
