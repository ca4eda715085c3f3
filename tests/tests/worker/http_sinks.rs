//! HTTP sinks on their own: credentials, the default body, redelivered jobs, and a
//! sink whose template fails for one event dead-lettering it without holding
//! back the sinks that can deliver.

use std::time::Duration;

use axum::http::Method;
use hookfleet_common::config::Secret;
use hookfleet_tests::app::TestApp;
use hookfleet_tests::fleet::{header, pipeline, take};
use hookfleet_tests::stand_in::StandIn;
use hookfleet_tests::wait::wait_until;
use hookfleet_worker::config::{HttpAuth, HttpSinkConfig, SinkConfig};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(30);

fn sink(name: &str, url: String) -> HttpSinkConfig {
    HttpSinkConfig {
        name: name.into(),
        method: "POST".into(),
        url,
        headers: Default::default(),
        body: None,
        when: None,
        auth: None,
        tls: None,
        signing_secret: None,
        timeout: Duration::from_secs(5),
        follow_redirects: false,
        success_when: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_deliver_once_per_event_with_their_credentials_even_when_the_job_is_redelivered() {
    let target = StandIn::start().await;
    target.answer(Method::POST, "/", 204, json!(null));
    let mut app = TestApp::builder()
        .configure(|settings, _| {
            let mut basic = sink("basic", format!("{}/basic", target.url()));
            basic.auth = Some(HttpAuth::Basic {
                username: "svc".into(),
                password: Secret::new("pw"),
            });
            let mut custom = sink(
                "custom",
                format!("{}/custom/{{{{ payload.n }}}}", target.url()),
            );
            custom.auth = Some(HttpAuth::Header {
                name: "X-Api-Key".into(),
                value: Secret::new("key-1"),
            });
            custom.headers = [("X-Ticket".to_owned(), "{{ payload.n }}".to_owned())].into();
            custom.body = Some("{{ output_json.sentiment }}".into());
            custom
                .headers
                .insert("Content-Type".into(), "text/plain".into());
            let mut p = pipeline("p", "mock", "Ticket {{ payload.n }}: thanks, great work");
            p.sinks = vec![
                SinkConfig::Http(Box::new(basic)),
                SinkConfig::Http(Box::new(custom)),
            ];
            settings.worker.pipelines = vec![p];
        })
        .start()
        .await;
    let worker = app.take_worker();
    let jobs = app.jobs();

    let meta = jobs
        .publish("support", "ticket.created", &json!({ "n": 7 }))
        .await;
    wait_until(DEADLINE, || {
        let done = worker.jobs("p", "succeeded");
        async move { done >= 1 }
    })
    .await;
    // The broker hands the same message again (a redelivery): nothing is repeated.
    jobs.publish_meta(&meta, json!({ "n": 7 }).to_string().as_bytes())
        .await;
    wait_until(DEADLINE, || {
        let skipped = worker.jobs("p", "duplicate");
        async move { skipped >= 1 }
    })
    .await;

    let basic = target.requests_to(&Method::POST, "/basic");
    assert_eq!(basic.len(), 1);
    assert_eq!(basic[0].header("authorization"), Some("Basic c3ZjOnB3"));
    // Without a body template the body is the result JSON.
    let result = basic[0].json();
    assert_eq!(result["message_id"], meta.message_id.as_str());
    assert_eq!(result["output_json"]["sentiment"], "positive");
    assert_eq!(basic[0].header("content-type"), Some("application/json"));
    assert!(basic[0].header("webhook-signature").is_none());
    assert_eq!(
        basic[0].header("webhook-id"),
        Some(format!("msg_{}_p_basic", meta.message_id).as_str())
    );

    let custom = target.requests_to(&Method::POST, "/custom/7");
    assert_eq!(custom.len(), 1);
    assert_eq!(custom[0].header("x-api-key"), Some("key-1"));
    assert_eq!(custom[0].header("x-ticket"), Some("7"));
    assert_eq!(custom[0].header("content-type"), Some("text/plain"));
    assert_eq!(&custom[0].body[..], b"positive");

    worker.stop().await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_template_failing_for_an_event_dead_letters_it_after_the_other_sinks_delivered() {
    let target = StandIn::start().await;
    target.answer(Method::POST, "/", 200, json!({}));
    target.answer(
        Method::POST,
        "/rejects",
        422,
        json!({ "error": "bad field" }),
    );
    let mut app = TestApp::builder()
        .max_attempts(5)
        .configure(|settings, _| {
            let good = sink("good", format!("{}/good", target.url()));
            let mut broken = sink("broken", format!("{}/broken", target.url()));
            broken.body = Some("{{ payload.missing.field }}".into());
            let mut p = pipeline("p", "mock", "Ticket {{ payload.n }}");
            p.sinks = vec![
                SinkConfig::Http(Box::new(good)),
                SinkConfig::Http(Box::new(broken)),
            ];
            let mut q = pipeline("q", "mock", "Ticket {{ payload.n }}");
            q.sinks = vec![SinkConfig::Http(Box::new(sink(
                "rejects",
                format!("{}/rejects", target.url()),
            )))];
            settings.worker.pipelines = vec![p, q];
        })
        .start()
        .await;
    let worker = app.take_worker();
    let env = app.env();
    let jobs = app.jobs();

    jobs.publish("support", "ticket.created", &json!({ "n": 1 }))
        .await;
    let topology = env.topology();
    let dead = take(env, &topology.dead_queue(), 1, DEADLINE).await;

    assert_eq!(header(&dead[0], "hf-stage").as_deref(), Some("sink"));
    assert_eq!(
        header(&dead[0], "hf-error-class").as_deref(),
        Some("permanent")
    );
    let error = header(&dead[0], "hf-error").unwrap();
    assert!(error.starts_with("sink_template_error"), "{error}");
    assert!(error.contains("cannot render `body`"), "{error}");
    assert_eq!(target.requests_to(&Method::POST, "/good").len(), 1);
    assert!(target.requests_to(&Method::POST, "/broken").is_empty());
    // A 422 is permanent as well: tried once, never retried.
    assert_eq!(target.requests_to(&Method::POST, "/rejects").len(), 1);
    assert_eq!(worker.jobs("p", "dead_lettered"), 1);
    assert_eq!(worker.jobs("q", "dead_lettered"), 1);

    worker.stop().await.unwrap();
    app.stop().await;
}
