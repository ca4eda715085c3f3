//! Ingest's edge: what the public listener serves, the status API's token, slow
//! senders, and the client address behind trusted proxies.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hookfleet_ingest::config::Listener;

use hookfleet_common::signature::SchemeKind;

use hookfleet_tests::env::{STATUS_TOKEN, TestEnv};
use hookfleet_tests::settings::Settings;
use hookfleet_tests::spawn::IngestHandle;
use hookfleet_tests::wait::wait_until;
use hookfleet_tests::webhook::{self, source};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Settings with one `standard` source named `std`, and its secret.
fn with_source(env: &TestEnv) -> (Settings, String) {
    let secret = webhook::standard_secret();
    let mut settings = env.settings.clone();
    settings
        .ingest
        .sources
        .insert("std".into(), source(SchemeKind::Standard, &[&secret]));
    (settings, secret)
}

/// Sends one signed event; returns its message id.
async fn accepted_id(ingest: &IngestHandle, secret: &str, event_id: &str) -> String {
    let client = reqwest::Client::new();
    let body = webhook::ticket(event_id, "hello");
    let response =
        webhook::standard_request(&client, &ingest.hook_url("std"), secret, event_id, &body)
            .send()
            .await
            .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

async fn get_status(url: String, token: Option<&str>) -> u16 {
    let request = reqwest::Client::new().get(url);
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn metrics_and_status_are_not_served_on_the_public_port() {
    let env = TestEnv::new().await;
    let (settings, secret) = with_source(&env);
    let ingest = IngestHandle::start(settings).await;
    let id = accepted_id(&ingest, &secret, "evt-private").await;

    for path in [
        "/metrics".to_owned(),
        format!("/events/{id}"),
        "/events/std/evt-private".to_owned(),
    ] {
        assert_eq!(
            get_status(ingest.url(&path), Some(STATUS_TOKEN)).await,
            404,
            "{path}"
        );
    }
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            get_status(ingest.url(path), None).await,
            200,
            "public {path}"
        );
        assert_eq!(
            get_status(ingest.admin(path), None).await,
            200,
            "admin {path}"
        );
    }
    let metrics = reqwest::get(ingest.admin("/metrics")).await.unwrap();
    assert_eq!(metrics.status(), 200);
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("hookfleet_ingest_requests_total{outcome=\"accepted\",source=\"std\"} 1"),
        "{metrics}"
    );
    ingest.stop().await.unwrap();
}

#[tokio::test]
async fn the_status_api_needs_its_bearer_token() {
    let env = TestEnv::new().await;
    let (settings, secret) = with_source(&env);
    let ingest = IngestHandle::start(settings).await;
    let id = accepted_id(&ingest, &secret, "evt-token").await;

    for path in [format!("/events/{id}"), "/events/std/evt-token".to_owned()] {
        let url = ingest.admin(&path);
        assert_eq!(get_status(url.clone(), None).await, 401, "no token: {path}");
        assert_eq!(get_status(url.clone(), Some("wrong")).await, 401, "{path}");
        let almost = format!("{STATUS_TOKEN}x");
        assert_eq!(get_status(url.clone(), Some(&almost)).await, 401, "{path}");
        let basic = reqwest::Client::new()
            .get(url.clone())
            .basic_auth("user", Some(STATUS_TOKEN))
            .send()
            .await
            .unwrap();
        assert_eq!(basic.status(), 401, "not a bearer token: {path}");
        assert_eq!(get_status(url, Some(STATUS_TOKEN)).await, 200, "{path}");
    }
    let response = ingest
        .status(&format!("/events/{id}"))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], id.as_str());
    ingest.stop().await.unwrap();
}

#[tokio::test]
async fn the_status_api_can_be_public_and_is_off_without_a_token() {
    let env = TestEnv::new().await;
    let (mut settings, secret) = with_source(&env);
    settings.ingest.status_listener = Listener::Public;
    let ingest = IngestHandle::start(settings.clone()).await;
    let id = accepted_id(&ingest, &secret, "evt-public").await;
    let path = format!("/events/{id}");
    assert_eq!(get_status(ingest.url(&path), Some(STATUS_TOKEN)).await, 200);
    assert_eq!(get_status(ingest.url(&path), None).await, 401);
    assert_eq!(
        get_status(ingest.admin(&path), Some(STATUS_TOKEN)).await,
        404
    );
    ingest.stop().await.unwrap();

    settings.ingest.status_token = None;
    let ingest = IngestHandle::start(settings).await;
    for url in [ingest.url(&path), ingest.admin(&path)] {
        assert_eq!(
            get_status(url.clone(), Some(STATUS_TOKEN)).await,
            404,
            "{url}"
        );
        assert_eq!(get_status(url.clone(), None).await, 404, "{url}");
    }
    ingest.stop().await.unwrap();
}

/// Sends a request head announcing `length` body bytes to `/hooks/std`.
fn head(port: u16, length: usize) -> Vec<u8> {
    format!(
        "POST /hooks/std HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    )
    .into_bytes()
}

/// How a trickling connection ended.
#[derive(Debug, PartialEq)]
enum Ended {
    /// The server answered with this status line's code.
    Answered(u16),
    /// The server closed the connection without an answer.
    Closed,
}

/// Writes `head` at once (or byte by byte when `slow_head`), then the body one
/// byte per `every`, until the server answers or closes. `written` counts the
/// connections that have sent at least 5 trickled bytes.
async fn trickle(port: u16, slow_head: bool, every: Duration, written: Arc<AtomicUsize>) -> Ended {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let head = head(port, 100_000);
    let write = async move {
        let (fast, slow): (&[u8], Vec<u8>) = if slow_head {
            (&[], head.clone())
        } else {
            (&head, vec![b' '; 100_000])
        };
        writer.write_all(fast).await?;
        for (i, byte) in slow.iter().enumerate() {
            writer.write_all(&[*byte]).await?;
            if i == 4 {
                written.fetch_add(1, Ordering::SeqCst);
            }
            tokio::time::sleep(every).await;
        }
        std::io::Result::Ok(())
    };
    let read = async move {
        let mut answer = Vec::new();
        let _ = reader.read_to_end(&mut answer).await;
        answer
    };
    tokio::pin!(write);
    let answer = tokio::select! {
        answer = read => answer,
        _ = &mut write => panic!("the whole trickle was sent without an answer"),
    };
    match std::str::from_utf8(&answer).ok().and_then(|a| a.get(9..12)) {
        Some(code) => Ended::Answered(code.parse().unwrap()),
        None => Ended::Closed,
    }
}

#[tokio::test]
async fn a_body_slower_than_the_read_timeout_gets_408() {
    let env = TestEnv::new().await;
    let (mut settings, _) = with_source(&env);
    settings.ingest.body_read_timeout = Duration::from_millis(500);
    let ingest = IngestHandle::start(settings).await;
    let port = ingest.base_url.rsplit(':').next().unwrap().parse().unwrap();
    let started = tokio::time::Instant::now();
    // A byte every 20 ms never leaves the connection idle for long.
    let ended = trickle(port, false, Duration::from_millis(20), Default::default()).await;
    assert_eq!(ended, Ended::Answered(408));
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(ingest.requests("std", "body_timeout"), 1);
    ingest.stop().await.unwrap();
}

#[tokio::test]
async fn requests_above_the_in_flight_cap_get_503_with_retry_after() {
    let env = TestEnv::new().await;
    let (mut settings, secret) = with_source(&env);
    settings.ingest.max_in_flight = 2;
    let ingest = IngestHandle::start(settings).await;
    let port: u16 = ingest.base_url.rsplit(':').next().unwrap().parse().unwrap();
    let holders: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(trickle(
                port,
                false,
                Duration::from_millis(200),
                Default::default(),
            ))
        })
        .collect();
    let client = reqwest::Client::new();
    let url = ingest.hook_url("std");
    let shed = Arc::new(std::sync::Mutex::new(None));
    wait_until(Duration::from_secs(10), || {
        let request = webhook::standard_request(&client, &url, &secret, "evt-cap", b"{}");
        let shed = shed.clone();
        async move {
            let response = request.send().await.unwrap();
            let is_shed = response.status() == 503;
            if is_shed {
                *shed.lock().unwrap() = Some(response);
            }
            is_shed
        }
    })
    .await;
    let response = shed.lock().unwrap().take().unwrap();
    assert_eq!(response.headers()["retry-after"], "5");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("too many requests"),
        "{body}"
    );
    assert!(ingest.requests("std", "overloaded") >= 1);
    for holder in holders {
        holder.abort();
    }
    // Slots come back as the held requests end.
    wait_until(Duration::from_secs(10), || {
        let request = webhook::standard_request(
            &client,
            &url,
            &secret,
            "evt-after",
            &webhook::ticket("evt-after", "x"),
        );
        async move { request.send().await.unwrap().status() == 202 }
    })
    .await;
    ingest.stop().await.unwrap();
}

/// Resident memory of process `pid`, from `/proc/{pid}/status`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The RSS bound of `slow_senders_do_not_grow_memory_or_delay_others`: 300 held
/// connections may add at most this much to ingest's resident memory (a copy of
/// `max_body_bytes` per connection would be 300 MiB).
const TRICKLE_RSS_BOUND_KIB: u64 = 32 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_senders_do_not_grow_memory_or_delay_others() {
    let env = TestEnv::new().await;
    let binary = hookfleet_tests::spawn::binary("hookfleet-ingest");
    let free_port = || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (port, admin_port) = (free_port(), free_port());
    let dir = tempfile::Builder::new()
        .prefix(&format!("hf-{}-", env.namespace))
        .tempdir()
        .unwrap();
    let secret = webhook::standard_secret();
    std::fs::write(dir.path().join("secret"), &secret).unwrap();
    let config = format!(
        "namespace = \"{ns}\"\n[amqp]\nqueue_expires = \"10m\"\nretry_tiers = [\"200ms\", \"1s\"]\n\
         [ingest]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\n\
         drain_delay = \"100ms\"\nheader_read_timeout = \"3s\"\nbody_read_timeout = \"4s\"\n\
         max_in_flight = 1000\n\
         [ingest.sources.std]\nscheme = \"standard\"\nsecrets = [{{ secret_file = \"{secret}\" }}]\n",
        ns = env.namespace,
        secret = dir.path().join("secret").display(),
    );
    std::fs::write(dir.path().join("hookfleet.toml"), config).unwrap();
    let child = tokio::process::Command::new(binary)
        .arg("--config")
        .arg(dir.path().join("hookfleet.toml"))
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/hooks/std");
    wait_until(Duration::from_secs(20), || async {
        client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let warm = webhook::standard_request(
        &client,
        &url,
        &secret,
        "warm",
        &webhook::ticket("warm", "x"),
    );
    assert_eq!(warm.send().await.unwrap().status(), 202);
    let baseline = rss_kib(pid);

    // 150 connections trickle their head, 150 their body, a byte per 100 ms.
    let written = Arc::new(AtomicUsize::new(0));
    let slow: Vec<_> = (0..300)
        .map(|i| {
            let every = Duration::from_millis(100);
            tokio::spawn(trickle(port, i % 2 == 0, every, written.clone()))
        })
        .collect();
    wait_until(Duration::from_secs(10), || async {
        written.load(Ordering::SeqCst) == 300
    })
    .await;
    let started = tokio::time::Instant::now();
    let normal = webhook::standard_request(
        &client,
        &url,
        &secret,
        "normal",
        &webhook::ticket("normal", "x"),
    );
    assert_eq!(normal.send().await.unwrap().status(), 202);
    let took = started.elapsed();
    let held = rss_kib(pid);
    assert!(
        took < Duration::from_secs(1),
        "a normal request took {took:?}"
    );
    assert!(
        held < baseline + TRICKLE_RSS_BOUND_KIB,
        "RSS grew from {baseline} KiB to {held} KiB with 300 slow senders"
    );

    // Then the timeouts end them all: slow heads are cut off, slow bodies get 408.
    let mut ended = Vec::new();
    for task in slow {
        ended.push(
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    for (i, end) in ended.iter().enumerate() {
        let expected = if i % 2 == 0 {
            Ended::Closed
        } else {
            Ended::Answered(408)
        };
        assert_eq!(*end, expected, "connection {i}");
    }
    eprintln!("RSS: {baseline} KiB at rest, {held} KiB with 300 slow senders");
    drop(child);
}

#[tokio::test]
async fn allow_ips_sees_the_client_behind_a_trusted_proxy_only() {
    let env = TestEnv::new().await;
    let (mut settings, secret) = with_source(&env);
    if let Some(std) = settings.ingest.sources.get_mut("std") {
        std.allow_ips = vec!["203.0.113.0/24".into()];
    }
    let client = reqwest::Client::new();
    let send = |ingest: &IngestHandle, id: &str, forwarded: Option<&str>| {
        let request = webhook::standard_request(
            &client,
            &ingest.hook_url("std"),
            &secret,
            id,
            &webhook::ticket(id, "x"),
        );
        let request = match forwarded {
            Some(chain) => request.header("x-forwarded-for", chain),
            None => request,
        };
        async move { request.send().await.unwrap().status().as_u16() }
    };

    // The test connects from 127.0.0.1: not trusted, so its header is ignored.
    let untrusted = IngestHandle::start(settings.clone()).await;
    assert_eq!(
        send(&untrusted, "e1", Some("203.0.113.5")).await,
        403,
        "spoofed"
    );
    assert_eq!(send(&untrusted, "e2", None).await, 403);
    untrusted.stop().await.unwrap();

    settings.ingest.trusted_proxies = vec!["127.0.0.0/8".into(), "10.0.0.0/8".into()];
    let behind = IngestHandle::start(settings).await;
    assert_eq!(send(&behind, "e3", Some("203.0.113.5")).await, 202);
    assert_eq!(
        send(&behind, "e4", Some("203.0.113.5, 10.1.1.1")).await,
        202,
        "two hops"
    );
    assert_eq!(
        send(&behind, "e5", None).await,
        403,
        "the proxy itself is not allowed"
    );
    assert_eq!(
        send(&behind, "e6", Some("203.0.113.5, 198.51.100.1")).await,
        403,
        "a forged left part changes nothing"
    );
    assert_eq!(send(&behind, "e7", Some("198.51.100.1")).await, 403);
    behind.stop().await.unwrap();
}

#[tokio::test]
async fn a_request_head_over_max_header_bytes_gets_431() {
    let env = TestEnv::new().await;
    let (mut settings, _) = with_source(&env);
    settings.ingest.max_header_bytes = 16 * 1024;
    let ingest = IngestHandle::start(settings).await;
    let port: u16 = ingest.base_url.rsplit(':').next().unwrap().parse().unwrap();
    let send = |padding: usize| async move {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let request = format!(
            "POST /hooks/std HTTP/1.1\r\nhost: x\r\nx-padding: {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            "a".repeat(padding)
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer)
            .get(9..12)
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(send(20 * 1024).await, "431");
    // Under the limit the head is read, and the request fails on its missing signature.
    assert_eq!(send(8 * 1024).await, "401");
    ingest.stop().await.unwrap();
}
