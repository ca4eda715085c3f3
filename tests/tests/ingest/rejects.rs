//! Every bad input gets a clear JSON error and changes nothing: no message, no
//! dedup claim.

use std::time::Duration;

use hookfleet_ingest::config::RateLimit;

use hookfleet_common::redis::{self as hredis, redis};
use hookfleet_common::signature::SchemeKind;
use hookfleet_tests::env::TestEnv;
use hookfleet_tests::spawn::IngestHandle;
use hookfleet_tests::webhook::{self, source};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Case {
    name: &'static str,
    request: reqwest::RequestBuilder,
    status: u16,
    error_contains: &'static str,
}

#[tokio::test]
async fn bad_requests_are_refused_with_a_json_error_and_change_nothing() {
    let env = TestEnv::new().await;
    let stripe_secret = webhook::plain_secret();
    let std_secret = webhook::standard_secret();
    let mut settings = env.settings.clone();
    let mut stripe = source(SchemeKind::Stripe, &[&stripe_secret]);
    stripe.max_body_bytes = 2048;
    settings.ingest.sources.insert("stripe".into(), stripe);
    settings
        .ingest
        .sources
        .insert("std".into(), source(SchemeKind::Standard, &[&std_secret]));
    let mut fenced = source(SchemeKind::Standard, &[&std_secret]);
    fenced.allow_ips = vec!["10.0.0.0/8".into()];
    settings.ingest.sources.insert("fenced".into(), fenced);
    let ingest = IngestHandle::start(settings).await;
    let client = reqwest::Client::new();
    let url = ingest.hook_url("stripe");
    let body = webhook::ticket("evt_bad", "hello");
    let now = webhook::unix_now(0);

    let mut tampered = body.clone();
    tampered[10] ^= 1;
    let big = vec![b' '; 4096];
    let cases = vec![
        Case {
            name: "unknown source",
            request: webhook::stripe_request(
                &client,
                &ingest.hook_url("nope"),
                &stripe_secret,
                now,
                &body,
            ),
            status: 404,
            error_contains: "unknown source",
        },
        Case {
            name: "missing signature",
            request: client.post(&url).body(body.clone()),
            status: 401,
            error_contains: "",
        },
        Case {
            name: "wrong secret",
            request: webhook::stripe_request(&client, &url, &webhook::plain_secret(), now, &body),
            status: 401,
            error_contains: "",
        },
        Case {
            name: "tampered body",
            request: client
                .post(&url)
                .header(
                    "stripe-signature",
                    hookfleet_common::signature::stripe::sign(&stripe_secret, now, &body),
                )
                .body(tampered),
            status: 401,
            error_contains: "",
        },
        Case {
            name: "stale timestamp",
            request: webhook::stripe_request(&client, &url, &stripe_secret, now - 3600, &body),
            status: 401,
            error_contains: "",
        },
        Case {
            name: "malformed signature header",
            request: client
                .post(&url)
                .header("stripe-signature", "garbage")
                .body(body.clone()),
            status: 400,
            error_contains: "",
        },
        Case {
            name: "declared body over the limit",
            request: webhook::stripe_request(&client, &url, &stripe_secret, now, &big),
            status: 413,
            error_contains: "2048",
        },
        Case {
            name: "not JSON",
            request: webhook::stripe_request(
                &client,
                &url,
                &stripe_secret,
                now,
                b"id=evt_1&type=x",
            ),
            status: 400,
            error_contains: "JSON",
        },
        Case {
            name: "JSON without the event id",
            request: webhook::stripe_request(
                &client,
                &url,
                &stripe_secret,
                now,
                br#"{"type":"x"}"#,
            ),
            status: 400,
            error_contains: "/id",
        },
        Case {
            name: "standard webhook without its headers",
            request: client.post(ingest.hook_url("std")).body(body.clone()),
            status: 401,
            error_contains: "",
        },
        Case {
            name: "client address outside allow_ips",
            request: webhook::standard_request(
                &client,
                &ingest.hook_url("fenced"),
                &std_secret,
                "m1",
                &body,
            ),
            status: 403,
            error_contains: "not allowed",
        },
    ];
    for case in cases {
        let response = case.request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(status, case.status, "{}: {text}", case.name);
        let json: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{}: error body is JSON: {text}", case.name));
        let error = json["error"].as_str().unwrap_or_default();
        assert!(!error.is_empty(), "{}: {text}", case.name);
        assert!(error.contains(case.error_contains), "{}: {text}", case.name);
        for secret in [&stripe_secret, &std_secret] {
            assert!(
                !text.contains(secret.as_str()),
                "{}: leaks a secret",
                case.name
            );
        }
    }

    // Nothing published, nothing claimed.
    assert_eq!(env.ready_count(&env.topology().jobs_queue()).await, 0);
    let keys: Vec<String> = hredis::run(
        &env.redis(),
        Duration::from_secs(2),
        redis::cmd("KEYS").arg(format!("{}:*", env.namespace)),
    )
    .await
    .unwrap();
    assert!(keys.is_empty(), "no Redis keys: {keys:?}");
    assert_eq!(ingest.requests("unknown", "unknown_source"), 1);
    assert_eq!(ingest.requests("stripe", "bad_signature"), 4);
    ingest.stop().await.unwrap();
}

#[tokio::test]
async fn a_chunked_body_without_content_length_is_cut_off_at_the_limit() {
    let env = TestEnv::new().await;
    let secret = webhook::plain_secret();
    let mut settings = env.settings.clone();
    let mut stripe = source(SchemeKind::Stripe, &[&secret]);
    stripe.max_body_bytes = 1024;
    settings.ingest.sources.insert("stripe".into(), stripe);
    let ingest = IngestHandle::start(settings).await;
    let addr = ingest.base_url.trim_start_matches("http://").to_owned();

    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /hooks/stripe HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nStripe-Signature: t=1,v1=00\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'x'; 512];
    // 8 KiB in 512-byte chunks; ingest must answer 413 without waiting for it all.
    for _ in 0..16 {
        let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        if stream.write_all(&frame).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"error\""), "{answer}");
    assert_eq!(env.ready_count(&env.topology().jobs_queue()).await, 0);
    ingest.stop().await.unwrap();
}

#[tokio::test]
async fn a_source_over_its_rate_limit_gets_429_with_retry_after() {
    let env = TestEnv::new().await;
    let secret = webhook::standard_secret();
    let mut settings = env.settings.clone();
    let mut limited = source(SchemeKind::Standard, &[&secret]);
    limited.rate_limit = Some(RateLimit {
        per_second: 1,
        burst: 2,
    });
    settings.ingest.sources.insert("limited".into(), limited);
    let ingest = IngestHandle::start(settings).await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for i in 0..4 {
        let body = webhook::ticket(&format!("e{i}"), "x");
        let response = webhook::standard_request(
            &client,
            &ingest.hook_url("limited"),
            &secret,
            &format!("m{i}"),
            &body,
        )
        .send()
        .await
        .unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
        }
    }
    assert_eq!(&statuses[..2], &[202, 202], "{statuses:?}");
    assert!(statuses[2..].contains(&429), "{statuses:?}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    let jobs = env.topology().jobs_queue();
    let accepted = statuses.iter().filter(|s| **s == 202).count() as u32;
    env.wait_for_count(&jobs, accepted, Duration::from_secs(5))
        .await;
    assert_eq!(env.ready_count(&jobs).await, accepted);
    ingest.stop().await.unwrap();
}

#[tokio::test]
async fn an_event_id_over_256_bytes_is_refused_saying_so() {
    let env = TestEnv::new().await;
    let std_secret = webhook::standard_secret();
    let stripe_secret = webhook::plain_secret();
    let mut settings = env.settings.clone();
    settings
        .ingest
        .sources
        .insert("std".into(), source(SchemeKind::Standard, &[&std_secret]));
    settings.ingest.sources.insert(
        "stripe".into(),
        source(SchemeKind::Stripe, &[&stripe_secret]),
    );
    let ingest = IngestHandle::start(settings).await;
    let client = reqwest::Client::new();
    let std_send = |id: &str| {
        webhook::standard_request(
            &client,
            &ingest.hook_url("std"),
            &std_secret,
            id,
            &webhook::ticket("t", "x"),
        )
        .send()
    };

    let at_limit = "a".repeat(256);
    assert_eq!(std_send(&at_limit).await.unwrap().status(), 202);
    for (name, response) in [
        ("header", std_send(&"a".repeat(257)).await.unwrap()),
        (
            "JSON body",
            webhook::stripe_request(
                &client,
                &ingest.hook_url("stripe"),
                &stripe_secret,
                webhook::unix_now(0),
                &webhook::ticket(&"e".repeat(1000), "x"),
            )
            .send()
            .await
            .unwrap(),
        ),
    ] {
        assert_eq!(response.status(), 400, "{name}");
        let error: Value = response.json().await.unwrap();
        let error = error["error"].as_str().unwrap();
        assert!(
            error.contains("longer than the limit of 256 bytes"),
            "{name}: {error}"
        );
        assert!(!error.contains("not found"), "{name}: {error}");
    }
    assert_eq!(ingest.requests("std", "event_id_too_long"), 1);
    assert_eq!(ingest.requests("stripe", "event_id_too_long"), 1);
    ingest.stop().await.unwrap();
}
