//! Ingest under failure: broker cut and restored, publish refused, Redis away,
//! SIGTERM with requests in flight. Nothing answered 2xx is ever missing.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hookfleet_common::config::FailMode;

use hookfleet_common::message::EventMeta;
use hookfleet_common::signature::SchemeKind;
use hookfleet_tests::app::{TestApp, TestAppBuilder};
use hookfleet_tests::env::TestEnv;
use hookfleet_tests::process::Service;
use hookfleet_tests::proxy::{ClosedPort, Proxy};
use hookfleet_tests::spawn::IngestHandle;
use hookfleet_tests::wait::wait_until;
use hookfleet_tests::webhook::{self, source};
use lapin::types::FieldTable;
use serde_json::Value;
use tokio::sync::Mutex;

/// Ingest alone, with one `standard` source `std` signed with `secret`.
fn ingest_app(secret: &str) -> TestAppBuilder<'static> {
    TestApp::builder()
        .workers(0)
        .ingest()
        .source("std", source(SchemeKind::Standard, &[secret]))
}

fn event_ids(messages: &[lapin::message::BasicGetMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            EventMeta::from_properties(&m.delivery.properties)
                .unwrap()
                .event_id
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn a_failed_publish_releases_the_dedup_claim_so_the_retry_is_accepted() {
    let secret = webhook::standard_secret();
    let mut app = ingest_app(&secret).start().await;
    let (env, ingest) = (app.env(), app.ingest());
    let topology = env.topology();
    // With the jobs queue unbound, the mandatory publish comes back NO_ROUTE.
    env.channel()
        .queue_unbind(
            topology.jobs_queue().into(),
            topology.events_exchange().into(),
            "#".into(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let body = webhook::ticket("evt_retry", "x");
    let send = || {
        webhook::standard_request(
            &client,
            &ingest.hook_url("std"),
            &secret,
            "msg_retry",
            &body,
        )
        .send()
    };

    let refused = send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "5");
    let error: Value = refused.json().await.unwrap();
    assert!(error["error"].is_string());

    topology.declare(env.channel()).await.unwrap(); // restores the binding
    let retried = send().await.unwrap();
    assert_eq!(retried.status(), 202, "the retry is not called a duplicate");
    let jobs = topology.jobs_queue();
    env.wait_for_count(&jobs, 1, Duration::from_secs(5)).await;
    assert_eq!(env.drain(&jobs).await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn without_redis_ingest_fails_open_by_default_and_closed_when_configured() {
    let secret = webhook::standard_secret();
    let app = ingest_app(&secret).start().await;
    let env = app.env();
    let closed = ClosedPort::reserve();
    let client = reqwest::Client::new();
    for (mode, expected) in [(FailMode::Open, 202), (FailMode::Closed, 503)] {
        let settings = app.settings_with(|settings| {
            settings.redis.url = format!("redis://127.0.0.1:{}", closed.port);
            settings.redis.timeout = Duration::from_millis(300);
            settings.ingest.redis_failure = mode;
        });
        let ingest = app.start_ingest(settings).await;
        let id = format!("m-{mode:?}");
        let response = webhook::standard_request(
            &client,
            &ingest.hook_url("std"),
            &secret,
            &id,
            &webhook::ticket(&id, "x"),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(response.status(), expected, "{mode:?}");
        let ready = client.get(ingest.url("/readyz")).send().await.unwrap();
        let expected_ready = if mode == FailMode::Open { 200 } else { 503 };
        assert_eq!(ready.status(), expected_ready, "{mode:?} readiness");
        if mode == FailMode::Open {
            assert_eq!(
                ingest
                    .metrics
                    .dedup_unavailable
                    .with_label_values(&["std"])
                    .get(),
                1
            );
            // The status cannot be recorded either: counted, and the 202 stands.
            assert_eq!(ingest.metrics.status_write_failures.get(), 1);
            let accepted: Value = response.json().await.unwrap();
            let status = ingest
                .status(&format!("/events/{}", accepted["id"].as_str().unwrap()))
                .send()
                .await
                .unwrap();
            assert_eq!(status.status(), 503, "status unknowable without Redis");
        }
        ingest.stop().await.unwrap();
    }
    let jobs = env.topology().jobs_queue();
    env.wait_for_count(&jobs, 1, Duration::from_secs(5)).await;
    assert_eq!(env.drain(&jobs).await.len(), 1, "only the fail-open event");
}

#[tokio::test]
async fn a_broker_cut_gives_503_never_a_false_202_and_ingest_recovers_by_itself() {
    let proxy = Proxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let secret = webhook::standard_secret();
    let amqp_url = proxy.amqp_url();
    let mut app = ingest_app(&secret)
        .configure(move |settings, _| {
            settings.amqp.url = amqp_url;
            settings.amqp.confirm_timeout = Duration::from_secs(2);
        })
        .start()
        .await;
    let (env, ingest) = (app.env(), app.ingest());
    let client = reqwest::Client::new();
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let statuses = Arc::new(Mutex::new(Vec::<(u16, bool)>::new()));
    let running = Arc::new(AtomicBool::new(true));

    let mut senders = Vec::new();
    for worker in 0..4 {
        let (url, client, secret) = (ingest.hook_url("std"), client.clone(), secret.clone());
        let (accepted, statuses, running) = (accepted.clone(), statuses.clone(), running.clone());
        senders.push(tokio::spawn(async move {
            let mut i = 0;
            while running.load(Ordering::SeqCst) {
                i += 1;
                let id = format!("w{worker}-{i}");
                let response = webhook::standard_request(
                    &client,
                    &url,
                    &secret,
                    &id,
                    &webhook::ticket(&id, "x"),
                )
                .send()
                .await
                .unwrap();
                let status = response.status().as_u16();
                let has_retry_after = response.headers().contains_key("retry-after");
                if status == 202 {
                    accepted.lock().await.push(id);
                }
                statuses.lock().await.push((status, has_retry_after));
                // A steady sender's pace, not an ordering: the test waits on counts.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }

    let count_202 = || async { statuses.lock().await.iter().filter(|s| s.0 == 202).count() };
    wait_until(Duration::from_secs(10), || async {
        count_202().await >= 20
    })
    .await;
    proxy.sever();
    let before = statuses.lock().await.len();
    wait_until(Duration::from_secs(10), || async {
        statuses.lock().await[before..]
            .iter()
            .filter(|s| s.0 == 503)
            .count()
            >= 5
    })
    .await;
    let ready = client.get(ingest.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "unready while the broker is away");
    proxy.restore();
    let after_restore = statuses.lock().await.len();
    wait_until(Duration::from_secs(15), || async {
        statuses.lock().await[after_restore..]
            .iter()
            .filter(|s| s.0 == 202)
            .count()
            >= 20
    })
    .await;
    running.store(false, Ordering::SeqCst);
    for sender in senders {
        sender.await.unwrap();
    }

    let statuses = statuses.lock().await.clone();
    for (status, has_retry_after) in &statuses {
        assert!(matches!(status, 202 | 503), "unexpected status {status}");
        if *status == 503 {
            assert!(has_retry_after, "every 503 carries Retry-After");
        }
    }
    let accepted: HashSet<String> = accepted.lock().await.iter().cloned().collect();
    let jobs = env.topology().jobs_queue();
    env.wait_for_count(&jobs, accepted.len() as u32, Duration::from_secs(10))
        .await;
    let landed: HashSet<String> = event_ids(&env.drain(&jobs).await).into_iter().collect();
    let missing: Vec<_> = accepted.difference(&landed).collect();
    assert!(missing.is_empty(), "202 without a message: {missing:?}");
    app.stop().await;
}

#[tokio::test]
async fn sigterm_turns_readiness_off_and_lets_in_flight_requests_finish() {
    let secret = webhook::plain_secret();
    let mut app = TestApp::builder()
        .workers(0)
        .ingest()
        .source("stripe", source(SchemeKind::Stripe, &[&secret]))
        .configure(|settings, _| settings.ingest.drain_delay = Duration::from_millis(800))
        .start()
        .await;
    let ingest = app.ingest.take().expect("ingest runs");
    let addr = ingest.base_url.trim_start_matches("http://").to_owned();
    let body = webhook::ticket("evt_slow", "in flight during shutdown");
    let signature = hookfleet_common::signature::stripe::sign(&secret, webhook::unix_now(0), &body);

    // A request whose body is still arriving when SIGTERM comes.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /hooks/stripe HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nStripe-Signature: {signature}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..10]).await.unwrap();

    ingest.begin_shutdown();
    let client = reqwest::Client::new();
    wait_until(Duration::from_secs(2), || async {
        client
            .get(ingest.url("/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 503)
    })
    .await;
    stream.write_all(&body[10..]).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");

    ingest.stop().await.unwrap();
    let env = app.env();
    let jobs = env.topology().jobs_queue();
    env.wait_for_count(&jobs, 1, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_ingest_binary_logs_json_without_secrets_and_exits_zero_on_sigterm() {
    let secret = webhook::standard_secret();
    let app = ingest_app(&secret)
        .configure(|settings, _| settings.telemetry.log_level = "debug".into())
        .start()
        .await;
    let ingest = app.spawn_ready(Service::Ingest, &app.settings).await;
    let client = reqwest::Client::new();
    let url = ingest.hook_url("std");
    let good = webhook::standard_request(&client, &url, &secret, "m1", &webhook::ticket("m1", "x"));
    assert_eq!(good.send().await.unwrap().status(), 202);
    let bad = webhook::standard_request(&client, &url, &webhook::standard_secret(), "m2", b"{}");
    assert_eq!(bad.send().await.unwrap().status(), 401);
    let metrics = client.get(ingest.admin("/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("hookfleet_ingest_requests_total{outcome=\"accepted\",source=\"std\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("hookfleet_ingest_publish_duration_seconds_count 1"));

    ingest.sigterm();
    let exited = ingest.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(exited.code, Some(0), "{exited:?}");
    let logs = exited.logs;
    assert!(!logs.trim().is_empty(), "the service logs");
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok(), "log line is JSON: {line}");
    }
    let key_part = secret.trim_start_matches("whsec_");
    assert!(!logs.contains(key_part), "logs contain the secret");
}

/// Ingest on a namespace of its own whose jobs queue holds one message: with
/// reject-publish, the broker nacks publishes once it is full. Quorum queues
/// evaluate the limit after the fact, so one or two may still get in. `change`
/// adjusts the rest of its settings.
async fn ingest_on_a_full_queue(
    app: &TestApp,
    change: impl FnOnce(&mut hookfleet_tests::settings::Settings),
) -> (hookfleet_common::topology::Topology, IngestHandle) {
    let settings = app.settings_with(|settings| {
        settings.namespace = format!("{}-full", settings.namespace);
        settings.amqp.jobs_max_length = Some(1);
        change(settings);
    });
    let topology = hookfleet_common::topology::Topology::new(&settings.namespace, &settings.amqp);
    (topology, app.start_ingest(settings).await)
}

#[tokio::test]
async fn a_nack_from_a_full_queue_is_a_503_not_a_202() {
    let secret = webhook::standard_secret();
    let app = TestApp::builder()
        .workers(0)
        .source("std", source(SchemeKind::Standard, &[&secret]))
        .start()
        .await;
    let env = app.env();
    let (topology, ingest) = ingest_on_a_full_queue(&app, |_| {}).await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for id in ["a", "b", "c", "d", "e", "f"] {
        let response = webhook::standard_request(
            &client,
            &ingest.hook_url("std"),
            &secret,
            id,
            &webhook::ticket(id, "x"),
        )
        .send()
        .await
        .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses[0], 202);
    let refused = statuses.iter().filter(|s| **s == 503).count();
    let accepted = statuses.iter().filter(|s| **s == 202).count();
    assert!(refused >= 3, "{statuses:?}");
    assert_eq!(refused + accepted, statuses.len(), "{statuses:?}");
    assert_eq!(ingest.requests("std", "unavailable"), refused as u64);
    // Every 202 is in the queue, and nothing else is.
    let options = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let depth = env
        .channel()
        .queue_declare(topology.jobs_queue().into(), options, FieldTable::default())
        .await
        .unwrap()
        .message_count();
    assert_eq!(depth as usize, accepted);
    ingest.stop().await.unwrap();
    topology.delete(env.channel()).await.unwrap();
}

#[tokio::test]
async fn a_channel_the_broker_nacked_on_is_replaced_and_counted() {
    let secret = webhook::standard_secret();
    let app = TestApp::builder()
        .workers(0)
        .source("std", source(SchemeKind::Standard, &[&secret]))
        .start()
        .await;
    let env = app.env();
    // One channel, so every nack lands on the channel being replaced.
    let (topology, ingest) =
        ingest_on_a_full_queue(&app, |settings| settings.amqp.publisher_channels = 1).await;
    let client = reqwest::Client::new();
    let post = |id: String| {
        let request = webhook::standard_request(
            &client,
            &ingest.hook_url("std"),
            &secret,
            &id,
            &webhook::ticket(&id, "x"),
        );
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let reopened = || {
        ingest
            .metrics
            .amqp_channels_reopened
            .with_label_values(&["hookfleet-ingest"])
            .get()
    };
    // Nacked until the channel is replaced: not sooner than a second after it
    // was opened, and not again within a second of that.
    let mut sent = 0;
    wait_until(Duration::from_secs(10), || {
        sent += 1;
        let answer = post(format!("evt-{sent}"));
        async move { answer.await == 503 && reopened() >= 1 }
    })
    .await;
    let started = tokio::time::Instant::now();
    for id in 0..20 {
        assert_eq!(post(format!("again-{id}")).await, 503);
    }
    let limit = 1 + started.elapsed().as_secs();
    assert!(reopened() <= 1 + limit, "{} replacements", reopened());
    // The fresh channel publishes as soon as the queue has room again.
    env.channel()
        .queue_purge(topology.jobs_queue().into(), Default::default())
        .await
        .unwrap();
    let mut sent = 0;
    wait_until(Duration::from_secs(10), || {
        sent += 1;
        let answer = post(format!("room-{sent}"));
        async move { answer.await == 202 }
    })
    .await;
    ingest.stop().await.unwrap();
    topology.delete(env.channel()).await.unwrap();
}

#[tokio::test]
async fn a_broker_that_stops_confirming_gets_503_after_the_confirm_timeout() {
    let proxy = Proxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let secret = webhook::standard_secret();
    let amqp_url = proxy.amqp_url();
    let mut app = ingest_app(&secret)
        .configure(move |settings, _| {
            settings.amqp.url = amqp_url;
            settings.amqp.confirm_timeout = Duration::from_millis(500);
        })
        .start()
        .await;
    let ingest = app.ingest();
    let client = reqwest::Client::new();
    let send = |id: &'static str| {
        webhook::standard_request(
            &client,
            &ingest.hook_url("std"),
            &secret,
            id,
            &webhook::ticket(id, "x"),
        )
        .send()
    };
    assert_eq!(send("before").await.unwrap().status(), 202);
    proxy.stall();
    let started = tokio::time::Instant::now();
    let stalled = send("stalled").await.unwrap();
    assert_eq!(stalled.status(), 503);
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert!(stalled.headers().contains_key("retry-after"));
    proxy.unstall();
    app.stop().await;
}

/// The dedup key of `event_id` in source `source`, as ingest writes it.
fn seen_key(env: &TestEnv, source: &str, event_id: &str) -> String {
    env.topology().redis_key(&["seen", source, event_id])
}

async fn redis_get(env: &TestEnv, key: &str) -> Option<String> {
    let mut cmd = hookfleet_common::redis::redis::cmd("GET");
    cmd.arg(key);
    hookfleet_common::redis::run(&env.redis(), Duration::from_secs(2), &cmd)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_content_type_too_long_for_amqp_is_carried_and_its_retry_lands_once() {
    let secret = webhook::standard_secret();
    let mut app = ingest_app(&secret).start().await;
    let (env, ingest) = (app.env(), app.ingest());
    let client = reqwest::Client::new();
    let body = webhook::ticket("evt_ct", "x");
    let long_type = format!("application/json; profile={}", "p".repeat(274));
    assert_eq!(long_type.len(), 300);
    let send = |content_type: &str| {
        // `headers` replaces the helper's `application/json` (`header` would add a second).
        let mut replace = reqwest::header::HeaderMap::new();
        replace.insert("content-type", content_type.parse().unwrap());
        webhook::standard_request(&client, &ingest.hook_url("std"), &secret, "msg_ct", &body)
            .headers(replace)
            .send()
    };

    let first = send(&long_type).await.unwrap();
    assert_eq!(first.status(), 202, "{:?}", first.text().await);
    let retry = send("application/json").await.unwrap();
    assert_eq!(retry.status(), 200);
    let answer: Value = retry.json().await.unwrap();
    assert_eq!(answer["status"], "duplicate");

    let jobs = env.topology().jobs_queue();
    env.wait_for_count(&jobs, 1, Duration::from_secs(5)).await;
    let messages = env.drain(&jobs).await;
    assert_eq!(messages.len(), 1, "exactly once");
    let meta = EventMeta::from_properties(&messages[0].delivery.properties).unwrap();
    assert_eq!(meta.content_type.as_deref(), Some(long_type.as_str()));
    app.stop().await;
}

#[tokio::test]
async fn a_header_too_long_to_carry_is_refused_before_the_claim() {
    let secret = webhook::standard_secret();
    let mut app = ingest_app(&secret).start().await;
    let (env, ingest) = (app.env(), app.ingest());
    let client = reqwest::Client::new();
    let body = webhook::ticket("evt_tp", "x");
    let send =
        || webhook::standard_request(&client, &ingest.hook_url("std"), &secret, "msg_tp", &body);

    let refused = send()
        .header("traceparent", "0".repeat(5000))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 431);
    let error: Value = refused.json().await.unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("traceparent"),
        "{error}"
    );
    assert_eq!(redis_get(env, &seen_key(env, "std", "msg_tp")).await, None);
    assert_eq!(send().send().await.unwrap().status(), 202);
    app.stop().await;
}

#[tokio::test]
async fn a_panic_inside_the_publish_task_releases_the_claim() {
    let secret = webhook::standard_secret();
    let armed = Arc::new(AtomicBool::new(true));
    let trigger = armed.clone();
    let hook: hookfleet_ingest::app::BeforePublish = Arc::new(move |meta: &EventMeta| {
        if meta.event_id.as_deref() == Some("msg_panic") && trigger.swap(false, Ordering::SeqCst) {
            panic!("forced panic between claim and confirm");
        }
    });
    let mut app = ingest_app(&secret).before_publish(hook).start().await;
    let (env, ingest) = (app.env(), app.ingest());
    let client = reqwest::Client::new();
    let body = webhook::ticket("evt_panic", "x");
    let send = || {
        webhook::standard_request(
            &client,
            &ingest.hook_url("std"),
            &secret,
            "msg_panic",
            &body,
        )
        .send()
    };

    let failed = send().await.unwrap();
    assert_eq!(failed.status(), 503);
    assert!(!armed.load(Ordering::SeqCst), "the hook panicked");
    // Released by the guard, well before the pending claim (7 s here) could expire.
    let key = seen_key(env, "std", "msg_panic");
    wait_until(Duration::from_secs(3), || async {
        redis_get(env, &key).await.is_none()
    })
    .await;
    assert_eq!(send().await.unwrap().status(), 202, "the retry lands");
    let jobs = env.topology().jobs_queue();
    env.wait_for_count(&jobs, 1, Duration::from_secs(5)).await;
    assert_eq!(env.drain(&jobs).await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_copy_arriving_before_the_confirm_gets_409_and_after_it_200_duplicate() {
    let proxy = Proxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let secret = webhook::standard_secret();
    let amqp_url = proxy.amqp_url();
    let mut app = ingest_app(&secret)
        .configure(move |settings, _| {
            settings.amqp.url = amqp_url;
            settings.amqp.confirm_timeout = Duration::from_secs(2);
        })
        .start()
        .await;
    let (env, ingest) = (app.env(), app.ingest());
    let client = reqwest::Client::new();
    let send = |id: &str| {
        webhook::standard_request(
            &client,
            &ingest.hook_url("std"),
            &secret,
            id,
            &webhook::ticket(id, "x"),
        )
        .send()
    };
    assert_eq!(send("before").await.unwrap().status(), 202);

    for (id, confirmed) in [("held-ok", true), ("held-fails", false)] {
        proxy.stall();
        let first = tokio::spawn(send(id));
        let key = seen_key(env, "std", id);
        wait_until(Duration::from_secs(2), || async {
            redis_get(env, &key)
                .await
                .is_some_and(|v| v.starts_with("pending:"))
        })
        .await;
        let copy = send(id).await.unwrap();
        assert_eq!(copy.status(), 409, "{id}: never 2xx before the confirm");
        assert!(copy.headers().contains_key("retry-after"));
        if confirmed {
            proxy.unstall();
        }
        let first = first.await.unwrap().unwrap();
        if confirmed {
            assert_eq!(first.status(), 202, "{id}");
            let duplicate = send(id).await.unwrap();
            assert_eq!(duplicate.status(), 200, "{id}: after the confirm");
            let answer: Value = duplicate.json().await.unwrap();
            assert_eq!(answer["status"], "duplicate");
        } else {
            assert_eq!(first.status(), 503, "{id}: no confirm within 2 s");
            proxy.unstall();
            let retry = send(id).await.unwrap();
            assert_eq!(retry.status(), 202, "{id}: the failed claim was released");
        }
    }
    let jobs = env.topology().jobs_queue();
    env.wait_for_count(&jobs, 3, Duration::from_secs(5)).await;
    let landed = event_ids(&env.drain(&jobs).await);
    let distinct: HashSet<&String> = landed.iter().collect();
    assert_eq!(distinct.len(), 3, "{landed:?}");
    assert_eq!(landed.iter().filter(|id| *id == "held-ok").count(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_sigkilled_ingest_leaves_only_pending_claims_and_the_retries_all_land() {
    let proxy = Proxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let secret = webhook::standard_secret();
    let app = ingest_app(&secret).start().await;
    let env = app.env();
    // connect 2 s + confirm 3 s + 2 s margin: pending claims live 7 s.
    let through_proxy = app.settings_with(|settings| {
        settings.amqp.url = proxy.amqp_url();
        settings.amqp.connect_timeout = Duration::from_secs(2);
        settings.amqp.confirm_timeout = Duration::from_secs(3);
    });
    let mut killed = app.spawn_ready(Service::Ingest, &through_proxy).await;
    let client = reqwest::Client::new();

    // Requests in flight: claimed, published, their confirms held by the proxy.
    proxy.stall();
    let ids: Vec<String> = (0..5).map(|i| format!("kill-{i}")).collect();
    let in_flight: Vec<_> = ids
        .iter()
        .map(|id| {
            let url = killed.hook_url("std");
            tokio::spawn(
                webhook::standard_request(&client, &url, &secret, id, &webhook::ticket(id, "x"))
                    .send(),
            )
        })
        .collect();
    for id in &ids {
        let key = seen_key(env, "std", id);
        wait_until(Duration::from_secs(3), || async {
            redis_get(env, &key)
                .await
                .is_some_and(|v| v.starts_with("pending:"))
        })
        .await;
    }
    killed.sigkill().await;
    // The held publishes die with the connection: these events exist nowhere.
    proxy.sever();
    for request in in_flight {
        assert!(
            request.await.unwrap().is_err(),
            "no answer from a killed ingest"
        );
    }

    let fresh = app.ingest();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    for id in &ids {
        // The sender retries as senders do: 409 while the dead claim is pending.
        loop {
            let response = webhook::standard_request(
                &client,
                &fresh.hook_url("std"),
                &secret,
                id,
                &webhook::ticket(id, "x"),
            )
            .send()
            .await
            .unwrap();
            match response.status().as_u16() {
                202 => break,
                409 => assert!(tokio::time::Instant::now() < deadline, "{id} still pending"),
                other => panic!("{id}: unexpected {other}"),
            }
            // The sender's back-off between retries: part of what is tested
            // (retries land once the dead claim expires), not an ordering.
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let jobs = env.topology().jobs_queue();
    env.wait_for_count(&jobs, ids.len() as u32, Duration::from_secs(5))
        .await;
    let landed: HashSet<String> = event_ids(&env.drain(&jobs).await).into_iter().collect();
    for id in &ids {
        assert!(landed.contains(id), "{id} never landed");
    }
    let mut app = app;
    app.stop().await;
}
