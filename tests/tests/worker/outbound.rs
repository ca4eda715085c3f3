//! The worker's outbound calls against hostile or broken endpoints: tokens in
//! URLs never leave, redirects are not followed, non-public destinations are
//! refused, absurd `retry-after`s neither panic nor stall the fleet, and a
//! provider's missing or overflowing usage is accounted for.

use std::time::Duration;

use axum::http::Method;
use hookfleet_common::config::Secret;
use hookfleet_common::redis::status::{EventState, Statuses};
use hookfleet_tests::app::TestApp;
use hookfleet_tests::env::TestEnv;
use hookfleet_tests::fleet::{header, json_body, mock_openai, pipeline, take};
use hookfleet_tests::logs::Logs;
use hookfleet_tests::proxy::ClosedPort;
use hookfleet_tests::stand_in::StandIn;
use hookfleet_tests::wait::wait_until;
use hookfleet_worker::config::{
    FallbackConfig, HttpAuth, HttpSinkConfig, ModelLimits, ProviderConfig, ProviderKind, SinkConfig,
};
use hookfleet_worker::limits::limiter::{Clock, Limiter};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(30);
const COMPLETIONS: &str = "/v1/chat/completions";

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

/// An OpenAI-style provider whose answers a stand-in scripts.
fn scripted_provider(stand_in: &StandIn) -> ProviderConfig {
    ProviderConfig {
        kind: ProviderKind::Openai,
        base_url: Some(format!("{}/v1", stand_in.url())),
        api_key: Some(Secret::new("sk-test")),
        timeout: Duration::from_secs(5),
        anthropic_version: "2023-06-01".into(),
        api_key_header: None,
        auth: None,
        tls: None,
    }
}

/// A chat completion answering `{"ok":true}`, with `usage` when given.
fn completion(usage: Option<serde_json::Value>) -> String {
    let mut body = json!({
        "model": "gpt-4o-mini",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": "{\"ok\":true}" } }],
    });
    if let Some(usage) = usage {
        body["usage"] = usage;
    }
    body.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_a_sink_url_reaches_no_log_no_dead_letter_and_no_status() {
    let closed = ClosedPort::reserve();
    const TOKEN: &str = "xoxb-SECRET-TOKEN-41d7";
    let logs = Logs::capture();
    let chat = StandIn::start().await;
    chat.answer(Method::POST, "/services", 500, json!({ "error": "down" }));
    let mut app = TestApp::builder()
        .max_attempts(2)
        .configure(|settings, _| {
            let mut p = pipeline("p", "mock", "Ticket {{ payload.n }}");
            p.sinks = vec![
                SinkConfig::Http(Box::new(sink(
                    "failing",
                    format!("{}/services/T0/B1/{TOKEN}", chat.url()),
                ))),
                SinkConfig::Http(Box::new(sink(
                    "unreachable",
                    format!(
                        "http://127.0.0.1:{}/hooks/{TOKEN}?token={TOKEN}",
                        closed.port
                    ),
                ))),
            ];
            settings.worker.pipelines = vec![p];
        })
        .start()
        .await;
    let worker = app.take_worker();
    let env = app.env();
    let jobs = app.jobs();
    let statuses = Statuses::new(
        env.redis(),
        env.topology(),
        env.settings.status.clone(),
        Duration::from_secs(2),
    );

    let meta = jobs
        .publish("support", "ticket.created", &json!({ "n": 1 }))
        .await;
    let dead = take(env, &env.topology().dead_queue(), 1, DEADLINE).await;
    let error = header(&dead[0], "hf-error").unwrap();
    assert!(
        error.contains("http://127.0.0.1:"),
        "the host is kept: {error}"
    );
    assert!(!error.contains(TOKEN), "{error}");
    wait_until(DEADLINE, || {
        let statuses = &statuses;
        let id = meta.message_id.clone();
        async move {
            matches!(
                statuses.get(&id).await,
                Ok(Some(status)) if matches!(status.state, EventState::Dead { .. })
            )
        }
    })
    .await;
    let status = statuses.get(&meta.message_id).await.unwrap().unwrap();
    let status = serde_json::to_string(&status).unwrap();
    assert!(status.contains("sink"), "{status}");
    assert!(!status.contains(TOKEN), "{status}");
    worker.stop().await.unwrap();

    let logs = logs.text();
    assert!(
        logs.contains("Job failed for good"),
        "the failure was logged: {logs}"
    );
    assert!(!logs.contains(TOKEN), "{logs}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_answering_301_is_dead_lettered_naming_the_location_and_never_delivered() {
    let target = StandIn::start().await;
    target.answer_with_headers(
        Method::POST,
        "/moved",
        301,
        &[("location", "https://elsewhere.example.net/collect?k=1")],
        "",
    );
    let mut app = TestApp::builder()
        .configure(|settings, _| {
            let mut p = pipeline("p", "mock", "Ticket {{ payload.n }}");
            p.sinks = vec![SinkConfig::Http(Box::new(sink(
                "crm",
                format!("{}/moved", target.url()),
            )))];
            settings.worker.pipelines = vec![p];
        })
        .start()
        .await;
    let worker = app.take_worker();
    let env = app.env();
    let jobs = app.jobs();

    jobs.publish("support", "ticket.created", &json!({ "n": 1 }))
        .await;
    let dead = take(env, &env.topology().dead_queue(), 1, DEADLINE).await;
    let error = header(&dead[0], "hf-error").unwrap();
    assert!(error.starts_with("sink_http_301"), "{error}");
    assert!(
        error.contains("https://elsewhere.example.net"),
        "names the Location's origin: {error}"
    );
    assert!(!error.contains("k=1"), "but not its query: {error}");
    assert_eq!(worker.jobs("p", "succeeded"), 0);
    assert_eq!(worker.jobs("p", "dead_lettered"), 1);
    assert_eq!(target.requests().len(), 1, "the redirect was not followed");

    worker.stop().await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_redirects_stays_on_the_origin_and_drops_the_credentials() {
    let target = StandIn::start().await;
    target.answer_with_headers(Method::POST, "/old", 307, &[("location", "/new")], "");
    target.answer(Method::POST, "/new", 200, json!({}));
    // The same server under another name is another origin.
    let port = target.url().rsplit(':').next().unwrap().to_owned();
    let away = format!("http://localhost:{port}/new");
    target.answer_with_headers(Method::POST, "/away", 302, &[("location", &away)], "");
    let mut app = TestApp::builder()
        .configure(|settings, _| {
            settings.worker.outbound.allow_hosts = vec!["127.0.0.1".into(), "localhost".into()];
            let with_key = |name: &str, path: &str| {
                let mut s = sink(name, format!("{}{path}", target.url()));
                s.follow_redirects = true;
                s.auth = Some(HttpAuth::Header {
                    name: "X-Api-Key".into(),
                    value: Secret::new("key-1"),
                });
                SinkConfig::Http(Box::new(s))
            };
            let mut p = pipeline("p", "mock", "Ticket {{ payload.n }}");
            p.sinks = vec![with_key("same", "/old"), with_key("cross", "/away")];
            settings.worker.pipelines = vec![p];
        })
        .start()
        .await;
    let worker = app.take_worker();
    let env = app.env();
    let jobs = app.jobs();

    jobs.publish("support", "ticket.created", &json!({ "n": 1 }))
        .await;
    let dead = take(env, &env.topology().dead_queue(), 1, DEADLINE).await;
    let error = header(&dead[0], "hf-error").unwrap();
    assert!(error.starts_with("sink_http_302"), "{error}");
    assert!(
        error.contains(&format!("http://localhost:{port}")),
        "{error}"
    );
    let old = target.requests_to(&Method::POST, "/old");
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].header("x-api-key"), Some("key-1"));
    let new = target.requests_to(&Method::POST, "/new");
    assert_eq!(new.len(), 1, "one same-origin hop, none across origins");
    assert_eq!(new[0].header("x-api-key"), None, "credentials stay behind");
    assert_eq!(new[0].body, old[0].body, "a 307 keeps the body");

    worker.stop().await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_destinations_are_refused_by_default_and_allowed_when_listed() {
    let target = StandIn::start().await;
    target.answer(Method::POST, "/", 200, json!({}));
    let port = target.url().rsplit(':').next().unwrap().to_owned();
    let mut p = pipeline("p", "mock", "Ticket {{ payload.n }}");
    p.sinks = vec![
        // A name that resolves to 127.0.0.1, and an IP literal.
        SinkConfig::Http(Box::new(sink(
            "name",
            format!("http://localhost:{port}/name"),
        ))),
        SinkConfig::Http(Box::new(sink(
            "literal",
            format!("http://127.0.0.1:{port}/literal"),
        ))),
    ];
    let mut app = TestApp::builder()
        .workers(0)
        .pipeline(p)
        .configure(|settings, _| settings.worker.outbound.allow_hosts = Vec::new())
        .start()
        .await;
    let (env, jobs) = (app.env(), app.jobs());

    let strict = app.start_worker(app.settings.clone()).await;
    jobs.publish("support", "ticket.created", &json!({ "n": 1 }))
        .await;
    let dead = take(env, &env.topology().dead_queue(), 1, DEADLINE).await;
    strict.stop().await.unwrap();
    let error = header(&dead[0], "hf-error").unwrap();
    assert!(error.starts_with("sink_destination_refused"), "{error}");
    assert!(
        error.contains("`localhost`") && error.contains("`127.0.0.1`"),
        "{error}"
    );
    assert!(target.requests().is_empty(), "nothing was sent");

    let allowed = app
        .start_worker(app.settings_with(|settings| {
            settings.worker.outbound.allow_hosts = vec!["localhost".into(), "127.0.0.1".into()];
        }))
        .await;
    jobs.publish("support", "ticket.created", &json!({ "n": 2 }))
        .await;
    target.wait_for(Method::POST, "/name", 1, DEADLINE).await;
    target.wait_for(Method::POST, "/literal", 1, DEADLINE).await;
    wait_until(DEADLINE, || {
        let done = allowed.jobs("p", "succeeded") == 1;
        async move { done }
    })
    .await;

    allowed.stop().await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_and_daily_retry_afters_neither_panic_nor_pause_past_the_cap_and_fallbacks_answer() {
    let absurd = StandIn::start().await;
    let daily = StandIn::start().await;
    let quota = r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
    absurd.answer_with_headers(
        Method::POST,
        COMPLETIONS,
        429,
        &[("retry-after", "1e20")],
        quota,
    );
    daily.answer_with_headers(
        Method::POST,
        COMPLETIONS,
        429,
        &[("retry-after", "21600")],
        quota,
    );
    let mut app = TestApp::builder()
        .configure(|settings, started| {
            let providers = &mut settings.worker.providers;
            providers.insert("mock".into(), mock_openai(&started.mock));
            providers.insert("absurd".into(), scripted_provider(&absurd));
            providers.insert("daily".into(), scripted_provider(&daily));
            let with_fallback = |name: &str, provider: &str| {
                let mut p = pipeline(name, provider, "Ticket {{ payload.n }}");
                p.event_types = vec![format!("{name}.*")];
                p.fallbacks = vec![FallbackConfig {
                    provider: "mock".into(),
                    model: "gpt-4o-mini".into(),
                }];
                p
            };
            settings.worker.pipelines = vec![
                with_fallback("absurd", "absurd"),
                with_fallback("daily", "daily"),
            ];
        })
        .start()
        .await;
    let worker = app.take_worker();
    let env = app.env();
    let jobs = app.jobs();
    let limiter = Limiter::new(
        env.redis(),
        env.topology(),
        &app.settings.worker.limits,
        Duration::from_secs(2),
    );

    // One job per pipeline, then, once their 429s paused the models, one more.
    for n in 0..2 {
        for name in ["absurd", "daily"] {
            jobs.publish("support", &format!("{name}.created"), &json!({ "n": n }))
                .await;
        }
        let results = take(env, &env.topology().results_queue(), 2, DEADLINE).await;
        for result in &results {
            let body = json_body(result);
            assert_eq!(body["provider"], "mock", "the fallback answered: {body}");
        }
    }
    // The first job's 429 paused the model; the second fell through at once.
    assert_eq!(absurd.requests_to(&Method::POST, COMPLETIONS).len(), 1);
    assert_eq!(daily.requests_to(&Method::POST, COMPLETIONS).len(), 1);
    // No job holds a slot: the last ones only have their acks left.
    wait_until(Duration::from_secs(5), || {
        let idle = worker.inflight() == 0;
        async move { idle }
    })
    .await;
    for provider in ["absurd", "daily"] {
        let state = limiter.state(provider, "gpt-4o-mini").await.unwrap();
        let now = redis_now_us(env).await;
        let paused = Duration::from_micros(state.paused_until.saturating_sub(now));
        assert!(
            paused > Duration::from_secs(60),
            "{provider} is paused: {paused:?}"
        );
        assert!(
            paused <= Duration::from_secs(601),
            "{provider}'s pause is cut to max_retry_after: {paused:?}"
        );
    }

    worker.stop().await.unwrap();
    app.stop().await;
}

/// The Redis server's clock, µs since the epoch (the limiter's clock).
async fn redis_now_us(env: &TestEnv) -> u64 {
    let mut conn = env.redis().get().await.unwrap();
    let (secs, micros): (u64, u64) = deadpool_redis::redis::cmd("TIME")
        .query_async(&mut conn)
        .await
        .unwrap();
    secs * 1_000_000 + micros
}

/// `tpm` limits on `provider`'s `gpt-4o-mini`: 10 tokens a second.
fn slow_tokens(provider: &str) -> ModelLimits {
    ModelLimits {
        provider: provider.into(),
        model: "gpt-4o-mini".into(),
        rpm: None,
        tpm: Some(600),
        burst_requests: None,
        burst_tokens: None,
        refund_unused: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_without_usage_keeps_its_reservation_and_is_counted_and_huge_usage_saturates() {
    let silent = StandIn::start().await;
    silent.answer_raw(Method::POST, COMPLETIONS, 200, &completion(None));
    let huge = StandIn::start().await;
    let max = json!({ "prompt_tokens": u64::MAX, "completion_tokens": u64::MAX });
    huge.answer_raw(Method::POST, COMPLETIONS, 200, &completion(Some(max)));
    let mut quiet = pipeline("silent", "silent", "Ticket {{ payload.n }}");
    quiet.event_types = vec!["silent.*".into()];
    let mut loud = pipeline("huge", "huge", "Ticket {{ payload.n }}");
    loud.event_types = vec!["huge.*".into()];
    let mut app = TestApp::builder()
        .pipeline(quiet)
        .pipeline(loud)
        .configure(|settings, _| {
            let providers = &mut settings.worker.providers;
            providers.insert("silent".into(), scripted_provider(&silent));
            providers.insert("huge".into(), scripted_provider(&huge));
            settings.worker.limits.models = vec![slow_tokens("silent"), slow_tokens("huge")];
        })
        .start()
        .await;
    let worker = app.take_worker();
    let (env, jobs) = (app.env(), app.jobs());
    let limiter = Limiter::new(
        env.redis(),
        env.topology(),
        &app.settings.worker.limits,
        Duration::from_secs(2),
    );

    jobs.publish("support", "silent.created", &json!({ "n": 1 }))
        .await;
    jobs.publish("support", "huge.created", &json!({ "n": 2 }))
        .await;
    let results = take(env, &env.topology().results_queue(), 2, DEADLINE).await;
    let by_pipeline = |name: &str| {
        results
            .iter()
            .map(json_body)
            .find(|b| b["pipeline"] == name)
            .unwrap()
    };
    assert_eq!(by_pipeline("huge")["usage"]["input_tokens"], u64::MAX);
    assert_eq!(by_pipeline("silent")["usage"]["input_tokens"], 0);
    let missing = |provider: &str| {
        worker
            .metrics
            .ai_usage_missing
            .with_label_values(&[provider, "gpt-4o-mini"])
            .get()
    };
    assert_eq!(missing("silent"), 1);
    assert_eq!(missing("huge"), 0);
    // The reservation (about 128 tokens at 10 a second) is still charged: a
    // refund to the reported nothing would leave the bucket full again.
    let next = limiter
        .reserve("silent", "gpt-4o-mini", 10, Duration::ZERO, Clock::Redis)
        .await
        .unwrap();
    assert!(
        !next.granted && next.wait > Duration::from_secs(5),
        "{next:?}"
    );
    // Overflowing usage saturates: charged as debt, never wrapped into a refund.
    let next = limiter
        .reserve("huge", "gpt-4o-mini", 10, Duration::ZERO, Clock::Redis)
        .await
        .unwrap();
    assert!(!next.granted, "{next:?}");

    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_redirect_is_not_followed_and_dead_letters_naming_its_origin() {
    let moved = StandIn::start().await;
    moved.answer_with_headers(
        Method::POST,
        COMPLETIONS,
        308,
        &[(
            "location",
            "https://collector.example.net/v1/chat/completions",
        )],
        "",
    );
    let mut app = TestApp::builder()
        .pipeline(pipeline("p", "moved", "Ticket {{ payload.n }}"))
        .configure(|settings, _| {
            settings
                .worker
                .providers
                .insert("moved".into(), scripted_provider(&moved));
        })
        .start()
        .await;
    let worker = app.take_worker();
    let (env, jobs) = (app.env(), app.jobs());

    jobs.publish("support", "ticket.created", &json!({ "n": 1 }))
        .await;
    let dead = take(env, &env.topology().dead_queue(), 1, DEADLINE).await;
    let error = header(&dead[0], "hf-error").unwrap();
    assert!(error.starts_with("ai_http_308"), "{error}");
    assert!(error.contains("https://collector.example.net"), "{error}");
    assert_eq!(
        header(&dead[0], "hf-error-class").as_deref(),
        Some("permanent")
    );
    assert_eq!(moved.requests().len(), 1, "the API key went nowhere else");

    worker.stop().await.unwrap();
}
