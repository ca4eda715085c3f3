//! Property tests of the request → message path against a real ingest, broker
//! and Redis: arbitrary header bytes and bodies, signed or not, never make
//! ingest panic (a dropped connection) or answer 5xx. Signed requests reach
//! everything after verification — event ids and types from headers and JSON,
//! carried headers, the claim and the publish. Case counts are bounded so the
//! file runs in a few seconds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hookfleet_ingest::config::FieldSource;

use hookfleet_common::signature::SchemeKind;
use hookfleet_common::signature::{github, stripe};
use hookfleet_tests::env::TestEnv;
use hookfleet_tests::spawn::IngestHandle;
use hookfleet_tests::webhook::{self, source};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestRunner};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::runtime::Runtime;

const CASES: u32 = 150;

/// Tokens of real headers, JSON and ids, recombined at random.
const TOKENS: &[&str] = &[
    "application/json",
    ";",
    " charset=",
    "utf-8",
    "t=",
    "v1=",
    "v1,",
    "sha256=",
    ",",
    " ",
    "=",
    "é",
    "☕",
    "\t",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "\"",
    "\\",
    "{",
    "}",
    "/",
    "..",
    "%00",
    "1700000000",
];

struct Fixture {
    runtime: Runtime,
    env: TestEnv,
    ingest: IngestHandle,
    client: reqwest::Client,
    secret: String,
}

impl Fixture {
    fn start() -> Self {
        let runtime = Runtime::new().unwrap();
        let secret = webhook::plain_secret();
        let (env, ingest) = runtime.block_on(async {
            let env = TestEnv::new().await;
            let mut settings = env.settings.clone();
            let mut gh = source(SchemeKind::Github, &[&secret]);
            gh.require_json = false;
            gh.forward_headers = vec!["x-fwd".into()];
            settings.ingest.sources.insert("gh".into(), gh);
            let mut stripe = source(SchemeKind::Stripe, &[&secret]);
            stripe.event_type = Some(FieldSource::JsonPointer("/type".into()));
            settings.ingest.sources.insert("stripe".into(), stripe);
            let ingest = IngestHandle::start(settings).await;
            (env, ingest)
        });
        Self {
            runtime,
            env,
            ingest,
            client: reqwest::Client::new(),
            secret,
        }
    }

    /// Posts and returns the status; a dropped connection fails the case.
    fn post(&self, source: &str, headers: HeaderMap, body: Vec<u8>) -> Result<u16, TestCaseError> {
        let request = self
            .client
            .post(self.ingest.hook_url(source))
            .headers(headers)
            .body(body)
            .timeout(Duration::from_secs(10));
        self.runtime
            .block_on(async { request.send().await })
            .map(|r| r.status().as_u16())
            .map_err(|e| TestCaseError::fail(format!("no answer (a panic?): {e}")))
    }

    fn stop(self) {
        self.runtime.block_on(async {
            self.ingest.stop().await.unwrap();
            self.env.cleanup().await;
        });
    }
}

/// Arbitrary bytes that HTTP can carry as a header value, or scheme tokens.
fn value() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300)
            .prop_filter_map("not a header value", |b| HeaderValue::from_bytes(&b).ok()),
        proptest::collection::vec(select(TOKENS), 0..10)
            .prop_filter_map("not a header value", |p| HeaderValue::from_str(&p.concat())
                .ok()),
        (1usize..6000).prop_map(|n| HeaderValue::from_str(&"x".repeat(n)).unwrap()),
    ]
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    })
}

/// No 5xx; counts the 202s so a test can show its inputs got through.
fn check(status: u16, accepted: &AtomicUsize) -> Result<(), TestCaseError> {
    prop_assert!(status < 500, "answered {status}");
    if status == 202 {
        accepted.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

#[test]
fn signed_requests_with_arbitrary_headers_and_bodies_never_get_a_5xx() {
    let fixture = Fixture::start();
    let names = [
        "x-github-delivery",
        "x-github-event",
        "content-type",
        "traceparent",
        "x-fwd",
    ];
    let inputs = (
        proptest::collection::vec(proptest::option::of(value()), names.len()),
        proptest::collection::vec(any::<u8>(), 0..512),
    );
    let accepted = AtomicUsize::new(0);
    runner()
        .run(&inputs, |(values, body)| {
            let mut headers = HeaderMap::new();
            for (name, value) in names.iter().zip(values) {
                if let Some(value) = value {
                    headers.insert(HeaderName::from_static(name), value);
                }
            }
            let signature = github::sign(&fixture.secret, &body);
            headers.insert("x-hub-signature-256", signature.parse().unwrap());
            check(fixture.post("gh", headers, body)?, &accepted)
        })
        .unwrap();
    assert!(accepted.into_inner() > 0, "no input reached the publish");
    fixture.stop();
}

#[test]
fn signed_json_with_arbitrary_ids_and_types_never_gets_a_5xx() {
    let fixture = Fixture::start();
    let text = prop_oneof![
        any::<String>(),
        proptest::collection::vec(select(TOKENS), 0..10).prop_map(|p| p.concat()),
        (200usize..1200).prop_map(|n| "i".repeat(n)),
    ];
    let number = any::<i64>().prop_map(serde_json::Value::from);
    let field = prop_oneof![text.prop_map(serde_json::Value::from), number];
    let accepted = AtomicUsize::new(0);
    runner()
        .run(&(field.clone(), field), |(id, kind)| {
            let body = serde_json::to_vec(&serde_json::json!({ "id": id, "type": kind })).unwrap();
            let mut headers = HeaderMap::new();
            let signature = stripe::sign(&fixture.secret, webhook::unix_now(0), &body);
            headers.insert("stripe-signature", signature.parse().unwrap());
            headers.insert("content-type", "application/json".parse().unwrap());
            check(fixture.post("stripe", headers, body)?, &accepted)
        })
        .unwrap();
    assert!(accepted.into_inner() > 0, "no input reached the publish");
    fixture.stop();
}

#[test]
fn unsigned_requests_with_arbitrary_headers_never_get_a_5xx() {
    let fixture = Fixture::start();
    let names = ["stripe-signature", "x-hub-signature-256", "content-type"];
    let inputs = (
        select(&["gh", "stripe"][..]),
        proptest::collection::vec(proptest::option::of(value()), names.len()),
        proptest::collection::vec(any::<u8>(), 0..512),
    );
    runner()
        .run(&inputs, |(source, values, body)| {
            let mut headers = HeaderMap::new();
            for (name, value) in names.iter().zip(values) {
                if let Some(value) = value {
                    headers.insert(HeaderName::from_static(name), value);
                }
            }
            let status = fixture.post(source, headers, body)?;
            prop_assert!((400..500).contains(&status), "answered {status}");
            Ok(())
        })
        .unwrap();
    fixture.stop();
}
