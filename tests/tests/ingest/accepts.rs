//! A verified webhook becomes exactly one persistent message, body untouched.

use std::time::Duration;

use hookfleet_common::message::{self, EventMeta};
use hookfleet_common::signature::SchemeKind;
use hookfleet_tests::env::TestEnv;
use hookfleet_tests::spawn::IngestHandle;
use hookfleet_tests::webhook::{self, source};
use serde_json::Value;

#[tokio::test]
async fn a_signed_event_is_published_byte_for_byte_with_its_metadata() {
    let env = TestEnv::new().await;
    let secret = webhook::standard_secret();
    let mut settings = env.settings.clone();
    let mut support = source(SchemeKind::Standard, &[&secret]);
    support.forward_headers = vec!["X-Desk-Region".into()];
    settings.ingest.sources.insert("support".into(), support);
    let ingest = IngestHandle::start(settings).await;

    // Odd but valid JSON: spacing, key order, unicode escapes and raw UTF-8 must all
    // survive, because the signature was computed over these exact bytes.
    let body = "{ \"type\":\"ticket.created\",  \"b\": 1,\n\"a\":\"caf\\u00e9 ☕\" }".as_bytes();
    let client = reqwest::Client::new();
    let response =
        webhook::standard_request(&client, &ingest.hook_url("support"), &secret, "msg_1", body)
            .header("x-desk-region", "eu")
            .header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .send()
            .await
            .unwrap();
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["status"], "accepted");
    let id = answer["id"].as_str().unwrap().to_owned();
    assert!(id.parse::<ulid::Ulid>().is_ok(), "{id} is a ULID");

    let jobs = env.topology().jobs_queue();
    env.wait_for_count(&jobs, 1, Duration::from_secs(5)).await;
    let messages = env.drain(&jobs).await;
    assert_eq!(messages.len(), 1);
    let delivery = &messages[0].delivery;
    assert_eq!(delivery.data, body, "body byte-for-byte");
    assert_eq!(delivery.routing_key.as_str(), "support.ticket.created");
    let props = &delivery.properties;
    assert_eq!(props.delivery_mode(), &Some(2), "persistent");
    let meta = EventMeta::from_properties(props).unwrap();
    assert_eq!(meta.message_id, id);
    assert_eq!(meta.source, "support");
    assert_eq!(meta.event_type, "ticket.created");
    assert_eq!(meta.event_id.as_deref(), Some("msg_1"));
    assert_eq!(meta.attempt, 0);
    assert_eq!(meta.content_type.as_deref(), Some("application/json"));
    assert!(meta.traceparent.is_some());
    assert_eq!(meta.forwarded, vec![("x-desk-region".into(), "eu".into())]);
    let headers = props.headers().as_ref().unwrap();
    assert!(message::header_str(headers, message::RECEIVED_AT).is_some());

    assert_eq!(ingest.requests("support", "accepted"), 1);
    ingest.stop().await.unwrap();
}

#[tokio::test]
async fn a_repeated_event_id_is_accepted_once() {
    let env = TestEnv::new().await;
    let secret = webhook::plain_secret();
    let mut settings = env.settings.clone();
    settings
        .ingest
        .sources
        .insert("stripe".into(), source(SchemeKind::Stripe, &[&secret]));
    let ingest = IngestHandle::start(settings).await;
    let client = reqwest::Client::new();
    let body = webhook::ticket("evt_dup", "hello");

    let first = webhook::stripe_request(
        &client,
        &ingest.hook_url("stripe"),
        &secret,
        webhook::unix_now(0),
        &body,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    // Stripe signs a new timestamp on its retry; the event id is what dedups.
    let second = webhook::stripe_request(
        &client,
        &ingest.hook_url("stripe"),
        &secret,
        webhook::unix_now(1),
        &body,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(second.status(), 200);
    let second: Value = second.json().await.unwrap();
    assert_eq!(second["status"], "duplicate");
    assert_eq!(
        second["id"], first["id"],
        "the duplicate names the first message"
    );

    let jobs = env.topology().jobs_queue();
    env.wait_for_count(&jobs, 1, Duration::from_secs(5)).await;
    assert_eq!(env.drain(&jobs).await.len(), 1);
    ingest.stop().await.unwrap();
}

#[tokio::test]
async fn slack_url_verification_is_answered_and_not_published() {
    let env = TestEnv::new().await;
    let secret = webhook::plain_secret();
    let mut settings = env.settings.clone();
    settings
        .ingest
        .sources
        .insert("slack".into(), source(SchemeKind::Slack, &[&secret]));
    let ingest = IngestHandle::start(settings).await;
    let body = br#"{"token":"x","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let ts = webhook::unix_now(0);
    let response = reqwest::Client::new()
        .post(ingest.hook_url("slack"))
        .header("content-type", "application/json")
        .header("x-slack-request-timestamp", ts.to_string())
        .header(
            "x-slack-signature",
            hookfleet_common::signature::slack::sign(&secret, ts, body),
        )
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    assert_eq!(env.ready_count(&env.topology().jobs_queue()).await, 0);
    ingest.stop().await.unwrap();
}

#[tokio::test]
async fn github_events_take_their_type_and_id_from_headers() {
    let env = TestEnv::new().await;
    let secret = webhook::plain_secret();
    let mut settings = env.settings.clone();
    settings
        .ingest
        .sources
        .insert("gh".into(), source(SchemeKind::Github, &[&secret]));
    let ingest = IngestHandle::start(settings).await;
    let response = webhook::github_request(
        &reqwest::Client::new(),
        &ingest.hook_url("gh"),
        &secret,
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "issues",
        br#"{"action":"opened"}"#,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 202);
    let jobs = env.topology().jobs_queue();
    env.wait_for_count(&jobs, 1, Duration::from_secs(5)).await;
    let messages = env.drain(&jobs).await;
    let meta = EventMeta::from_properties(&messages[0].delivery.properties).unwrap();
    assert_eq!(meta.event_type, "issues");
    assert_eq!(
        meta.event_id.as_deref(),
        Some("72d3162e-cc78-11e3-81ab-4c9367dc0958")
    );
    ingest.stop().await.unwrap();
}

#[tokio::test]
async fn a_request_signed_by_the_svix_library_is_accepted_and_deduplicated() {
    // The vector published with the svix libraries' tests and the Standard
    // Webhooks specification, sent with Svix's header names.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    let env = TestEnv::new().await;
    let mut settings = env.settings.clone();
    let mut svix = source(SchemeKind::Standard, &[SECRET]);
    // Signed in 2021: widen the window so the fixed bytes are still fresh.
    svix.tolerance = Duration::from_secs((webhook::unix_now(0) - TIMESTAMP + 600) as u64);
    settings.ingest.sources.insert("svix".into(), svix);
    let ingest = IngestHandle::start(settings).await;
    let client = reqwest::Client::new();
    let send = || {
        client
            .post(ingest.hook_url("svix"))
            .header("content-type", "application/json")
            .header("svix-id", ID)
            .header("svix-timestamp", TIMESTAMP.to_string())
            .header("svix-signature", SIGNATURE)
            .body(BODY)
            .send()
    };

    let first = send().await.unwrap();
    assert_eq!(first.status(), 202, "{:?}", first.text().await);
    let again = send().await.unwrap();
    assert_eq!(again.status(), 200);
    let answer: Value = again.json().await.unwrap();
    assert_eq!(answer["status"], "duplicate");

    let jobs = env.topology().jobs_queue();
    env.wait_for_count(&jobs, 1, Duration::from_secs(5)).await;
    let messages = env.drain(&jobs).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].delivery.data, BODY);
    let meta = EventMeta::from_properties(&messages[0].delivery.properties).unwrap();
    assert_eq!(meta.event_id.as_deref(), Some(ID), "the id is svix-id");
    ingest.stop().await.unwrap();
}

#[tokio::test]
async fn a_github_delivery_replayed_under_a_fresh_delivery_id_is_a_duplicate() {
    let env = TestEnv::new().await;
    let secret = webhook::plain_secret();
    let mut settings = env.settings.clone();
    settings
        .ingest
        .sources
        .insert("gh".into(), source(SchemeKind::Github, &[&secret]));
    let mut opted_out = source(SchemeKind::Github, &[&secret]);
    opted_out.dedup_body = Some(false);
    settings.ingest.sources.insert("gh-any".into(), opted_out);
    let ingest = IngestHandle::start(settings).await;
    let client = reqwest::Client::new();
    let send = |source: &str, delivery: &str, body: &[u8]| {
        webhook::github_request(
            &client,
            &ingest.hook_url(source),
            &secret,
            delivery,
            "issues",
            body,
        )
        .send()
    };
    let captured = br#"{"action":"opened","issue":{"number":1}}"#;

    let original = send("gh", "d-1", captured).await.unwrap();
    assert_eq!(original.status(), 202);
    let first: Value = original.json().await.unwrap();
    let replay = send("gh", "d-2", captured).await.unwrap();
    assert_eq!(replay.status(), 200, "same bytes, fresh delivery id");
    let answer: Value = replay.json().await.unwrap();
    assert_eq!(answer["status"], "duplicate");
    assert_eq!(answer["id"], first["id"]);
    let other = send("gh", "d-3", br#"{"action":"closed"}"#).await.unwrap();
    assert_eq!(other.status(), 202, "different bytes are a new event");
    // Per source: the same bytes to another source, or with the option off, land.
    assert_eq!(send("gh-any", "d-1", captured).await.unwrap().status(), 202);
    assert_eq!(send("gh-any", "d-4", captured).await.unwrap().status(), 202);

    let jobs = env.topology().jobs_queue();
    env.wait_for_count(&jobs, 4, Duration::from_secs(5)).await;
    assert_eq!(env.drain(&jobs).await.len(), 4);
    ingest.stop().await.unwrap();
}
