//! The shipped example configurations load, compile and render, so they never rot.

use std::collections::HashMap;
use std::sync::Arc;

use hookfleet_common::config::Sources;
use hookfleet_common::message::EventMeta;
use hookfleet_worker::auth::TokenStore;
use hookfleet_worker::config::Settings;
use hookfleet_worker::pipeline::Pipelines;
use hookfleet_worker::pipeline::sinks::{Delivery, JobResult};
use hookfleet_worker::pipeline::templates;
use hookfleet_worker::providers::Provider;
use serde_json::json;

const EXAMPLE: &str = include_str!("../../../examples/support-escalation.toml");

/// The example's secrets. nextest runs each test in its own process, so setting
/// the environment here races with nothing.
fn set_secrets() {
    for (name, value) in [
        (
            "SUPPORT_WEBHOOK_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ),
        (
            "CHAT_SIGNING_SECRET",
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        ),
        ("OPENAI_API_KEY", "sk-example"),
        ("CRM_API_TOKEN", "crm-example"),
    ] {
        // SAFETY: single-threaded at this point of the test process (see above).
        unsafe { std::env::set_var(name, value) };
    }
}

#[tokio::test]
async fn the_support_escalation_example_loads_compiles_and_renders() {
    set_secrets();
    let sources = Sources {
        file: None,
        toml: Some(EXAMPLE.to_owned()),
        env: Some(HashMap::new()),
    };
    let ingest = hookfleet_ingest::config::Settings::load_from(sources.clone())
        .expect("ingest loads the example");
    assert!(ingest.ingest.sources.contains_key("support"));
    let mut settings = Settings::load_from(sources).expect("the worker loads the example");
    settings.worker.admin_listen = "127.0.0.1:0".parse().unwrap();

    // The whole worker builds from it (every template compiles)…
    hookfleet_worker::Application::build(settings.clone())
        .await
        .expect("a worker builds from the example");

    // …and its templates render a sample ticket into what the workflow promises.
    let topology = hookfleet_common::topology::Topology::new("example", &settings.amqp);
    let redis = hookfleet_common::redis::pool(&settings.redis).unwrap();
    let tokens = TokenStore::new(
        redis,
        topology.clone(),
        settings.redis.timeout,
        hookfleet_worker::metrics::WorkerMetrics::new().unwrap(),
    );
    let mut providers = HashMap::new();
    for (name, config) in &settings.worker.providers {
        providers.insert(
            name.clone(),
            Arc::new(Provider::build(name, config, &tokens).unwrap()),
        );
    }
    let publisher = hookfleet_common::publisher::Publisher::new(&settings.amqp, "example", None);
    let pipelines = Pipelines::build(&settings.worker, &providers, &tokens, |i, p| {
        p.sinks
            .iter()
            .enumerate()
            .map(|(j, s)| {
                let field = format!("worker.pipelines[{i}].sinks[{j}]");
                hookfleet_worker::pipeline::sinks::Sink::build(
                    &field,
                    s,
                    p.undefined,
                    &settings.worker.outbound,
                    &tokens,
                    &publisher,
                    &topology,
                )
            })
            .collect()
    })
    .unwrap();
    let pipeline = pipelines.matching("support", "ticket.created").remove(0);
    let payload = json!({
        "type": "ticket.created", "id": "tkt-1",
        "ticket": { "subject": "Broken", "body": "It broke." },
        "customer": { "id": "cus_1", "name": "Ada" }
    });
    let meta = EventMeta {
        message_id: "01J0000000000000000000000".into(),
        source: "support".into(),
        event_type: "ticket.created".into(),
        event_id: Some("tkt-1".into()),
        received_at: "2025-01-01T00:00:00.000Z".into(),
        content_type: Some("application/json".into()),
        traceparent: None,
        forwarded: vec![],
        attempt: 0,
        replays: 0,
    };
    let base = templates::base(&payload, &meta, 1, &pipeline.name);
    let history = json!({ "crm": { "plan": "pro", "tickets": [{ "id": "old" }] } });
    let context = templates::with_enrich(&base, history.as_object().unwrap());
    let prompt = pipeline.render(&context).unwrap();
    assert!(
        prompt
            .user
            .starts_with("Customer: Ada, pro plan, 1 earlier tickets."),
        "{}",
        prompt.user
    );
    let wants = |sentiment: &str| {
        let output = json!({ "summary": "s", "sentiment": sentiment, "category": "billing" });
        let result = JobResult {
            message_id: meta.message_id.clone(),
            source: "support".into(),
            event_id: None,
            event_type: "ticket.created".into(),
            pipeline: pipeline.name.clone(),
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
            fallback: None,
            model_reported: None,
            output: output.to_string(),
            output_json: Some(output.clone()),
            usage: Default::default(),
            attempts: 1,
            cached: false,
            latency_ms: 1,
            received_at: meta.received_at.clone(),
            completed_at: meta.received_at.clone(),
        };
        let context = templates::with_output(&context, &result.output, Some(&output));
        let delivery = Delivery {
            result: &result,
            context: &context,
            traceparent: None,
        };
        pipeline
            .sinks
            .iter()
            .map(|s| (s.name().to_owned(), s.wanted(&delivery).unwrap()))
            .collect::<Vec<_>>()
    };
    let names = |v: &[(&str, bool)]| {
        v.iter()
            .map(|(n, w)| ((*n).to_owned(), *w))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        wants("negative"),
        names(&[("amqp", true), ("crm", true), ("chat-escalation", true)])
    );
    assert_eq!(
        wants("positive"),
        names(&[("amqp", true), ("crm", true), ("chat-escalation", false)])
    );
}
