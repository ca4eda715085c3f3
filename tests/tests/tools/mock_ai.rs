//! The mock AI provider: deterministic answers, provider-shaped errors, injected
//! failures, the enforced rate window and its counters. No broker or Redis.

use std::time::{Duration, Instant};

use hookfleet_tests::mock_ai::window::{Admission, LimitKind, RateWindow};
use hookfleet_tests::mock_ai::{
    CountersSnapshot, MockAi, MockConfig, ModelLimits, Prompt, go_duration,
};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

const MINUTE: Duration = Duration::from_secs(60);

async fn openai(mock: &MockAi, body: Value) -> Response {
    Client::new()
        .post(mock.url("/v1/chat/completions"))
        .bearer_auth("sk-test")
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn anthropic(mock: &MockAi, body: Value) -> Response {
    Client::new()
        .post(mock.url("/v1/messages"))
        .header("x-api-key", "sk-ant-test")
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn chat(user: &str) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You triage support tickets."},
            {"role": "user", "content": user},
        ],
        "temperature": 0.0,
        "max_tokens": 200,
    })
}

fn chat_json(user: &str) -> Value {
    let mut body = chat(user);
    body["response_format"] = json!({"type": "json_object"});
    body
}

fn message(user: &str) -> Value {
    json!({
        "model": "claude-3-5-haiku",
        "system": "You triage support tickets.",
        "messages": [{"role": "user", "content": user}],
        "max_tokens": 200,
        "temperature": 0.0,
    })
}

fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("header {name} present"))
        .to_str()
        .unwrap()
        .to_owned()
}

async fn openai_content(response: Response) -> String {
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn http_counters(mock: &MockAi) -> CountersSnapshot {
    reqwest::get(mock.url("/counters"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_same_prompt_gets_the_same_answer_and_a_different_one_does_not() {
    let mock = MockAi::start(MockConfig::default()).await;

    let first = openai_content(openai(&mock, chat("Where is my order 1234?")).await).await;
    let again = openai_content(openai(&mock, chat("Where is my order 1234?")).await).await;
    let other = openai_content(openai(&mock, chat("Where is my order 9999?")).await).await;

    assert_eq!(first, again);
    assert_ne!(first, other);
    assert!(first.contains("Where is my order 1234?"), "echoes: {first}");
}

#[tokio::test]
async fn openai_completion_has_the_documented_shape_and_token_usage() {
    let mock = MockAi::start(MockConfig::default()).await;
    let response = openai(&mock, chat("abcdefghi")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!header(&response, "x-request-id").is_empty());
    let body: Value = response.json().await.unwrap();

    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4o-mini");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    // "You triage support tickets." (27 chars) + "abcdefghi" (9) = 36 chars → 9 tokens.
    assert_eq!(body["usage"]["prompt_tokens"], 9);
    let completion = content.chars().count().div_ceil(4) as u64;
    assert_eq!(body["usage"]["completion_tokens"], completion);
    assert_eq!(body["usage"]["total_tokens"], 9 + completion);
}

#[tokio::test]
async fn anthropic_message_has_the_documented_shape_and_the_same_answer_as_openai() {
    let mock = MockAi::start(MockConfig::default()).await;
    let response = anthropic(&mock, message("Hello there")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!header(&response, "request-id").is_empty());
    let body: Value = response.json().await.unwrap();

    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], "claude-3-5-haiku");
    assert_eq!(body["content"][0]["type"], "text");
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["usage"]["input_tokens"], 10);
    let text = body["content"][0]["text"].as_str().unwrap();
    assert!(body["usage"]["output_tokens"].as_u64().unwrap() > 0);

    // The system prompt becomes a leading system message: one conversation, one
    // answer, whichever API carries it.
    let mut as_openai = chat("Hello there");
    as_openai["model"] = json!("claude-3-5-haiku");
    assert_eq!(openai_content(openai(&mock, as_openai).await).await, text);
}

#[tokio::test]
async fn json_mode_returns_parseable_json_with_the_sentiment_rules() {
    let mock = MockAi::start(MockConfig::default()).await;
    let cases = [
        ("I am angry, the blender arrived broken", "negative"),
        ("I want a REFUND, this is terrible", "negative"),
        ("Thanks, great service, love it", "positive"),
        ("Thanks, but it arrived broken", "negative"),
        ("Please update my shipping address", "neutral"),
    ];
    for (user, sentiment) in cases {
        let content = openai_content(openai(&mock, chat_json(user)).await).await;
        let reply: Value = serde_json::from_str(&content).unwrap();
        assert_eq!(reply["sentiment"], sentiment, "for {user:?}");
        assert_eq!(reply["echo"], user.chars().take(40).collect::<String>());
        assert!(reply["summary"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(reply["category"].as_str().is_some());
    }

    // Without response_format, saying "JSON" in the prompt is enough (Anthropic).
    let response = anthropic(&mock, message("Reply in JSON: thanks a lot!")).await;
    let body: Value = response.json().await.unwrap();
    let reply: Value = serde_json::from_str(body["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(reply["sentiment"], "positive");
    assert_eq!(
        reply["prompt_hash"],
        Prompt::from_pairs(&[
            ("system", "You triage support tickets."),
            ("user", "Reply in JSON: thanks a lot!"),
        ])
        .hash()
    );
}

#[tokio::test]
async fn max_tokens_cuts_the_answer_with_finish_reason_length() {
    let mock = MockAi::start(MockConfig::default()).await;
    let mut body = chat_json("a long enough prompt");
    body["max_tokens"] = json!(3);
    let response: Value = openai(&mock, body).await.json().await.unwrap();
    assert_eq!(response["choices"][0]["finish_reason"], "length");
    assert_eq!(
        response["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .chars()
            .count(),
        12
    );
    assert_eq!(response["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn requests_without_an_api_key_or_a_model_are_refused_in_the_providers_shape() {
    let mock = MockAi::start(MockConfig::default()).await;
    let client = Client::new();

    let no_key = client
        .post(mock.url("/v1/chat/completions"))
        .json(&chat("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), StatusCode::UNAUTHORIZED);
    let body: Value = no_key.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");

    let no_version = client
        .post(mock.url("/v1/messages"))
        .header("x-api-key", "k")
        .json(&message("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_version.status(), StatusCode::BAD_REQUEST);
    let body: Value = no_version.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let response = openai(
        &mock,
        json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let counters = mock.counters();
    assert_eq!(counters.requests, 3);
    assert_eq!(counters.status(401), 1);
    assert_eq!(counters.status(400), 2);
}

#[tokio::test]
async fn rate_limit_429_bodies_match_each_providers_shape() {
    let mock = MockAi::start(MockConfig {
        rpm_limit: Some(1),
        ..MockConfig::default()
    })
    .await;

    assert_eq!(openai(&mock, chat("one")).await.status(), StatusCode::OK);
    let limited = openai(&mock, chat("two")).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = limited.json().await.unwrap();
    let error = body["error"].as_object().unwrap();
    assert_eq!(error["type"], "requests");
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert!(error["param"].is_null());
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("Limit 1, Used 1, Requested 1")
    );

    assert_eq!(
        anthropic(&mock, message("one")).await.status(),
        StatusCode::OK
    );
    let limited = anthropic(&mock, message("two")).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(body["error"]["message"].as_str().is_some());

    mock.set_config(MockConfig {
        insufficient_quota_rate: 1.0,
        overloaded_rate: 1.0,
        ..MockConfig::default()
    });
    let quota = openai(&mock, chat("three")).await;
    assert_eq!(quota.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(!quota.headers().contains_key("retry-after"));
    let body: Value = quota.json().await.unwrap();
    assert_eq!(body["error"]["code"], "insufficient_quota");

    let overloaded = anthropic(&mock, message("three")).await;
    assert_eq!(overloaded.status().as_u16(), 529);
    let body: Value = overloaded.json().await.unwrap();
    assert_eq!(
        body,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
}

#[tokio::test]
async fn random_429s_carry_retry_after_and_the_fix_turns_them_off() {
    let mock = MockAi::start(MockConfig {
        rate_429: 1.0,
        ..MockConfig::default()
    })
    .await;
    let limited = openai(&mock, chat("hi")).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&limited, "retry-after"), "1");
    assert_eq!(header(&limited, "retry-after-ms"), "1000");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");

    mock.heal();
    assert_eq!(openai(&mock, chat("hi")).await.status(), StatusCode::OK);
    let counters = mock.counters();
    assert_eq!(counters.injected("rate_limit"), 1);
    assert_eq!(counters.rate_limited, 0, "the window refused nothing");
}

#[tokio::test]
async fn the_rpm_window_answers_429_with_retry_after_above_the_limit_and_admits_again_after() {
    // Long enough that three local requests never outlast it on a loaded machine.
    let window = Duration::from_millis(1500);
    let mock = MockAi::start(MockConfig {
        rpm_limit: Some(3),
        rate_window: window,
        ..MockConfig::default()
    })
    .await;

    let started = Instant::now();
    for i in 0..3 {
        let response = openai(&mock, chat(&format!("request {i}"))).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "x-ratelimit-limit-requests"), "3");
        assert_eq!(
            header(&response, "x-ratelimit-remaining-requests"),
            (2 - i).to_string()
        );
        assert_eq!(header(&response, "x-ratelimit-reset-requests"), "1.5s");
    }
    let limited = openai(&mock, chat("request 3")).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&limited, "x-ratelimit-remaining-requests"), "0");
    let retry_ms: u64 = header(&limited, "retry-after-ms").parse().unwrap();
    let waited = started.elapsed().as_millis() as u64;
    assert!(
        retry_ms <= 1500 && retry_ms + waited >= 1500,
        "retry-after-ms {retry_ms} frees the oldest request (sent {waited} ms ago)"
    );
    assert_eq!(
        header(&limited, "retry-after"),
        "2",
        "whole seconds, rounded up"
    );

    // Another model has its own window.
    let mut other = chat("request 3");
    other["model"] = json!("gpt-4o");
    assert_eq!(openai(&mock, other).await.status(), StatusCode::OK);

    // Waiting out the advertised Retry-After is what is tested: the window
    // admits again after it.
    tokio::time::sleep(Duration::from_millis(retry_ms)).await;
    assert_eq!(
        openai(&mock, chat("request 3")).await.status(),
        StatusCode::OK
    );

    let counters = mock.counters();
    assert_eq!(counters.rate_limited, 1);
    assert_eq!(counters.status(429), 1);
    assert_eq!(counters.status(200), 5);
    assert_eq!(counters.by_model["gpt-4o-mini"], 5);
    assert_eq!(counters.by_model["gpt-4o"], 1);
    assert_eq!(counters.admitted_at_us.len(), 5);
}

#[tokio::test]
async fn the_window_admits_exactly_the_limit_under_concurrency() {
    let mock = MockAi::start(MockConfig {
        rpm_limit: Some(10),
        ..MockConfig::default()
    })
    .await;
    let requests = (0..40).map(|i| openai(&mock, chat(&format!("concurrent {i}"))));
    let statuses: Vec<StatusCode> = futures::future::join_all(requests)
        .await
        .iter()
        .map(|r| r.status())
        .collect();

    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        10
    );
    let counters = mock.counters();
    assert_eq!(counters.rate_limited, 30);
    assert_eq!(counters.max_admitted_in_any(MINUTE), 10);
}

#[tokio::test]
async fn the_tpm_window_counts_prompt_and_max_tokens_at_admission() {
    let mock = MockAi::start(MockConfig {
        tpm_limit: Some(500),
        ..MockConfig::default()
    })
    .await;
    // 27 + 9 chars → 9 prompt tokens, + 200 max_tokens = 209 per request.
    assert_eq!(
        openai(&mock, chat("abcdefghi")).await.status(),
        StatusCode::OK
    );
    let second = openai(&mock, chat("abcdefghi")).await;
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(header(&second, "x-ratelimit-remaining-tokens"), "82");
    let limited = openai(&mock, chat("abcdefghi")).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["type"], "tokens");
    assert_eq!(mock.counters().tokens_admitted, 418);

    // Larger than the whole limit: no retry-after, waiting does not help.
    let mut huge = chat("x");
    huge["max_tokens"] = json!(1000);
    let too_large = openai(&mock, huge).await;
    assert_eq!(too_large.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(!too_large.headers().contains_key("retry-after"));
}

#[test]
fn the_window_arithmetic_frees_capacity_as_admissions_age_out() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let limits = ModelLimits {
        rpm: Some(2),
        tpm: Some(100),
    };
    let mut window = RateWindow::new();

    assert!(matches!(
        window.try_admit(t0, MINUTE, limits, 10),
        Admission::Admitted(_)
    ));
    assert!(matches!(
        window.try_admit(t0 + ms(1000), MINUTE, limits, 10),
        Admission::Admitted(u) if u.requests == 2 && u.tokens == 20 && u.full_reset == MINUTE
    ));
    // Third request at 5 s: the first admission leaves at 60 s.
    let Admission::Limited(limited) = window.try_admit(t0 + ms(5000), MINUTE, limits, 10) else {
        panic!("over the request limit");
    };
    assert_eq!(limited.kind, LimitKind::Requests);
    assert_eq!(limited.retry_after, Some(ms(55_000)));
    // Just before 60 s it is still refused; at 60 s it fits.
    assert!(matches!(
        window.try_admit(t0 + ms(59_999), MINUTE, limits, 10),
        Admission::Limited(_)
    ));
    assert!(matches!(
        window.try_admit(t0 + MINUTE, MINUTE, limits, 10),
        Admission::Admitted(u) if u.requests == 2
    ));

    // Tokens only: 50 more at 30 s needs the admissions of 0 s and 10 s gone.
    let limits = ModelLimits {
        rpm: None,
        tpm: Some(100),
    };
    let mut window = RateWindow::new();
    for at in [0, 10_000, 20_000] {
        assert!(matches!(
            window.try_admit(t0 + ms(at), MINUTE, limits, 30),
            Admission::Admitted(_)
        ));
    }
    let Admission::Limited(limited) = window.try_admit(t0 + ms(30_000), MINUTE, limits, 50) else {
        panic!("over the token limit");
    };
    assert_eq!(limited.kind, LimitKind::Tokens);
    assert_eq!(limited.retry_after, Some(ms(40_000)));
    assert_eq!(limited.usage.tokens, 90);
    // More tokens than the whole limit can never fit.
    let Admission::Limited(limited) = window.try_admit(t0 + ms(30_000), MINUTE, limits, 101) else {
        panic!("too large");
    };
    assert_eq!(limited.retry_after, None);
    assert!(matches!(
        window.try_admit(t0 + ms(70_000), MINUTE, limits, 50),
        Admission::Admitted(u) if u.tokens == 80
    ));
}

#[test]
fn reset_durations_are_written_the_way_openai_writes_them() {
    assert_eq!(go_duration(Duration::ZERO), "0s");
    assert_eq!(go_duration(Duration::from_micros(11_200)), "12ms");
    assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
    assert_eq!(go_duration(Duration::from_secs(360)), "6m0s");
    assert_eq!(go_duration(Duration::from_millis(61_250)), "1m1.25s");
    assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
}

#[tokio::test]
async fn marker_prompts_always_fail_and_others_succeed() {
    let mock = MockAi::start(MockConfig {
        fail_marker: Some("FAIL-ME".into()),
        bad_request_marker: Some("REJECT-ME".into()),
        ..MockConfig::default()
    })
    .await;

    for _ in 0..3 {
        let failed = openai(&mock, chat("order FAIL-ME please")).await;
        assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body: Value = failed.json().await.unwrap();
        assert_eq!(body["error"]["type"], "server_error");
    }
    let failed = anthropic(&mock, message("order FAIL-ME please")).await;
    assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = failed.json().await.unwrap();
    assert_eq!(body["error"]["type"], "api_error");

    let rejected = anthropic(&mock, message("REJECT-ME")).await;
    assert_eq!(rejected.status(), StatusCode::BAD_REQUEST);
    let body: Value = rejected.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");

    assert_eq!(
        openai(&mock, chat("an ordinary order")).await.status(),
        StatusCode::OK
    );
    let counters = mock.counters();
    assert_eq!(counters.injected("fail_marker"), 4);
    assert_eq!(counters.injected("bad_request_marker"), 1);
    assert_eq!(mock.calls_for_prompt_containing("FAIL-ME"), 4);
}

#[tokio::test]
async fn the_first_attempt_of_every_distinct_prompt_fails_and_the_retry_succeeds() {
    let mock = MockAi::start(MockConfig {
        fail_first_attempts: 1,
        ..MockConfig::default()
    })
    .await;
    for prompt in ["alpha", "beta"] {
        assert_eq!(
            openai(&mock, chat(prompt)).await.status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(openai(&mock, chat(prompt)).await.status(), StatusCode::OK);
    }
    assert_eq!(mock.counters().injected("first_attempt"), 2);
}

#[tokio::test]
async fn the_rate_limit_marker_answers_one_429_per_prompt_with_the_configured_retry_time() {
    let mock = MockAi::start(MockConfig {
        rate_limit_marker: Some("SLOW DOWN".into()),
        rate_limit_retry_after: Duration::from_millis(2500),
        ..MockConfig::default()
    })
    .await;
    let first = openai(&mock, chat("please SLOW DOWN")).await;
    assert_eq!(first.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&first, "retry-after-ms"), "2500");
    assert_eq!(header(&first, "retry-after"), "3");
    assert_eq!(
        openai(&mock, chat("please SLOW DOWN")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        openai(&mock, chat("no marker")).await.status(),
        StatusCode::OK
    );
    let counters = mock.counters();
    assert_eq!(counters.injected("rate_limit_marker"), 1);
    assert_eq!(counters.throttled_at_us.len(), 1);
    assert_eq!(counters.admitted_at_us.len(), 2);
    assert!(counters.throttled_at_us[0] <= counters.admitted_at_us[0]);
}

#[tokio::test]
async fn malformed_answers_are_200s_that_do_not_parse() {
    let mock = MockAi::start(MockConfig {
        malformed_rate: 1.0,
        ..MockConfig::default()
    })
    .await;
    for i in 0..2 {
        let response = openai(&mock, chat(&format!("m{i}"))).await;
        assert_eq!(response.status(), StatusCode::OK);
        let text = response.text().await.unwrap();
        assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    }
    assert_eq!(mock.counters().injected("malformed"), 2);
}

#[tokio::test]
async fn counters_count_per_status_model_and_prompt_directly_and_over_http() {
    let mock = MockAi::start(MockConfig {
        fail_marker: Some("boom".into()),
        ..MockConfig::default()
    })
    .await;
    openai(&mock, chat("hello")).await;
    openai(&mock, chat("hello")).await;
    openai(&mock, chat("boom")).await;
    anthropic(&mock, message("hello")).await;

    let counters = mock.counters();
    assert_eq!(counters.requests, 4);
    assert_eq!(counters.status(200), 3);
    assert_eq!(counters.status(500), 1);
    assert_eq!(counters.by_model["gpt-4o-mini"], 3);
    assert_eq!(counters.by_model["claude-3-5-haiku"], 1);
    assert_eq!(counters.by_provider["openai"], 3);
    assert_eq!(counters.by_provider["anthropic"], 1);
    let hello = Prompt::from_pairs(&[("system", "You triage support tickets."), ("user", "hello")]);
    // The same conversation through either API is one prompt.
    assert_eq!(counters.calls_for_prompt(&hello.hash()), 3);
    assert_eq!(mock.calls_for_prompt_containing("boom"), 1);
    assert_eq!(counters.admitted_at_us.len(), 3);
    assert!(counters.admitted_at_us.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(
        counters.admitted_between(Duration::ZERO, mock.elapsed() + Duration::from_secs(1)),
        3
    );
    // 2 requests x (ceil(32 / 4) + 200) + Anthropic's ceil(32 / 4) + 200.
    assert_eq!(counters.tokens_admitted, 3 * 208);

    let over_http = http_counters(&mock).await;
    assert_eq!(over_http.by_status, counters.by_status);
    assert_eq!(over_http.prompt_calls, counters.prompt_calls);

    let reset: CountersSnapshot = Client::new()
        .post(mock.url("/counters/reset"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reset.requests, 4);
    assert_eq!(mock.counters().requests, 0);
    assert_eq!(http_counters(&mock).await.requests, 0);
}

#[tokio::test]
async fn health_and_config_are_served_over_http() {
    let mock = MockAi::start(MockConfig::default()).await;
    let health = reqwest::get(mock.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    let updated = Client::new()
        .put(mock.url("/config"))
        .json(&json!({"latency": 5, "rpm_limit": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), StatusCode::OK);
    let config = mock.config();
    assert_eq!(config.latency, Duration::from_millis(5));
    assert_eq!(config.rpm_limit, Some(7));
    let read: MockConfig = reqwest::get(mock.url("/config"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read, config);
    assert_eq!(
        mock.counters().requests,
        0,
        "admin routes are not model calls"
    );
}

#[tokio::test]
async fn latency_delays_answers_and_stop_closes_the_port() {
    let mock = MockAi::start(MockConfig {
        latency: Duration::from_millis(150),
        ..MockConfig::default()
    })
    .await;
    let started = Instant::now();
    assert_eq!(openai(&mock, chat("slow")).await.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(150));

    let url = mock.url("/healthz");
    mock.stop().await.unwrap();
    assert!(reqwest::get(url).await.is_err());
}
