//! The web console over HTTP: the credential on every page and action, CSRF,
//! `no-store`, escaping of hostile letters, no secret rendered, and actions
//! that act once under a double submit. The browser tests are in
//! `console_browser`.

use crate::dlq_common::{self, Spec, dead_letter, publish_letters, publish_specs};

use std::time::Duration;

use hookfleet_tests::app::TestApp;
use hookfleet_tests::console::{self, ConsoleClient};
use hookfleet_tests::fleet::pipeline;
use reqwest::StatusCode;

const USER: &str = "Ticket: {{ payload.text }}";

/// A worker serving the console, with a pipeline on the healthy mock when
/// `with_pipeline`.
async fn app(token: &str, with_pipeline: bool) -> TestApp {
    let token = token.to_owned();
    let mut builder = TestApp::builder().configure(move |s, _| console::enable(s, &token));
    if with_pipeline {
        builder = builder.pipeline(pipeline("triage", "mock", USER));
    }
    builder.start().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_and_action_needs_the_credential_and_nothing_is_cached() {
    let token = console::fresh_token();
    let app = app(&token, false).await;
    let base = &app.workers[0].admin_url;
    let anonymous = ConsoleClient::anonymous(base);
    let wrong = ConsoleClient::new(base, "not-the-token");
    let operator = ConsoleClient::new(base, &token);
    for path in [
        "/console",
        "/console/overview/panel",
        "/console/events?id=x",
        "/console/dlq",
        "/console/dlq/letter?id=x",
        "/console/pipelines",
        "/console/nowhere",
    ] {
        for client in [&anonymous, &wrong] {
            let page = client.get(path).await;
            assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{path}");
            assert!(page.html.contains("Log in"), "{path}: the login form");
            assert_eq!(page.cache_control.as_deref(), Some("no-store"), "{path}");
        }
        let page = operator.get(path).await;
        let expected = if path == "/console/nowhere" || path.starts_with("/console/dlq/letter") {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        };
        assert_eq!(page.status, expected, "{path}: {}", page.html);
        assert_eq!(page.cache_control.as_deref(), Some("no-store"), "{path}");
        assert!(!page.html.contains(&token), "{path} shows the token");
    }
    for path in [
        "/console/dlq/replay",
        "/console/dlq/purge",
        "/console/logout",
    ] {
        let page = anonymous.post(path, &[("source", "github")]).await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{path}");
        let page = operator
            .post(path, &[("source", "github"), ("csrf", "forged")])
            .await;
        assert_eq!(
            page.status,
            StatusCode::FORBIDDEN,
            "{path} without its CSRF token"
        );
    }
    // The login form sets a session cookie that is not the token.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = http
        .post(format!("{base}/console/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(console::form_body(&[
            ("username", ""),
            ("secret", token.as_str()),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("hf_console=oncall."), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    assert!(!cookie.contains(&token));
    let session = cookie.split(';').next().unwrap();
    let page = http
        .get(format!("{base}/console/dlq"))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let refused = http
        .post(format!("{base}/console/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(console::form_body(&[("username", ""), ("secret", "guess")]))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_off_unless_enabled() {
    let app = TestApp::builder().start().await;
    let page = ConsoleClient::anonymous(&app.workers[0].admin_url)
        .get("/console")
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_letter_text_is_escaped_and_no_secret_is_rendered() {
    let token = console::fresh_token();
    let app = app(&token, true).await;
    let operator = ConsoleClient::new(&app.workers[0].admin_url, &token);
    let spec = Spec {
        error: "ai_http_500: <img src=x onerror=alert(1)>",
        ..Spec::exhausted("github")
    };
    let (properties, _) = dead_letter(&spec, 0);
    let body = br#"{"text":"<script>alert('pwned')</script>"}"#.to_vec();
    let published = publish_letters(app.env(), vec![(properties, body)]).await;
    let id = &published[0].id;

    let list = operator.get("/console/dlq").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.html);
    assert!(list.html.contains(id.as_str()), "the letter is listed");
    assert!(!list.html.contains("<img src=x"), "the error is escaped");
    let letter = operator.get(&format!("/console/dlq/letter?id={id}")).await;
    assert_eq!(letter.status, StatusCode::OK, "{}", letter.html);
    assert!(
        !letter.html.contains("<script>alert"),
        "the body is escaped"
    );
    assert!(
        letter.html.contains("&lt;script&gt;alert("),
        "{}",
        letter.html
    );
    assert!(letter.html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(letter.html.contains("hf-source"), "headers are shown");

    let pipelines = operator.get("/console/pipelines").await;
    assert!(pipelines.html.contains("triage"));
    assert!(
        pipelines.html.contains("[inline]"),
        "the key as a reference"
    );
    for page in [&list, &letter, &pipelines] {
        assert!(
            !page.html.contains("sk-test"),
            "the provider's key is never shown"
        );
        assert!(!page.html.contains(&token));
    }
    // Looking changed nothing: the letter is still there, in place.
    assert_eq!(
        app.env()
            .ready_count(&app.env().topology().dead_queue())
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_submitted_replay_acts_once_and_purge_asks_first() {
    let token = console::fresh_token();
    let app = app(&token, true).await;
    let env = app.env();
    let operator = ConsoleClient::new(&app.workers[0].admin_url, &token);
    let specs: Vec<Spec> = (0..10)
        .map(|i| Spec::exhausted(if i % 2 == 0 { "github" } else { "stripe" }))
        .collect();
    let published = publish_specs(env, &specs).await;
    let dead = env.topology().dead_queue();

    let page = operator.get("/console/dlq?source=github").await;
    assert_eq!(
        page.html.matches("class=\"letter\"").count(),
        5,
        "{}",
        page.html
    );
    let (csrf, nonce) = (page.hidden("csrf"), page.hidden("nonce"));
    let form = [
        ("csrf", csrf.as_str()),
        ("nonce", nonce.as_str()),
        ("source", "github"),
    ];
    let first = operator.post("/console/dlq/replay", &form).await;
    assert!(
        first.html.contains("Replayed 5 dead letters"),
        "{}",
        first.html
    );
    let again = operator.post("/console/dlq/replay", &form).await;
    assert!(again.html.contains("already sent"), "{}", again.html);
    assert_eq!(env.ready_count(&dead).await, 5, "stripe's letters stay");
    let results = app.results(5, Duration::from_secs(30)).await;
    let mut answered: Vec<String> = results
        .iter()
        .map(|r| r["message_id"].as_str().unwrap().to_owned())
        .collect();
    answered.sort();
    let mut github = dlq_common::ids_of(&published, |p| p.source == "github");
    github.sort();
    assert_eq!(
        answered, github,
        "exactly github's letters became results, once"
    );

    // Purge: the first post only counts and asks.
    let page = operator.get("/console/dlq?source=stripe").await;
    let (csrf, nonce) = (page.hidden("csrf"), page.hidden("nonce"));
    let ask = operator
        .post(
            "/console/dlq/purge",
            &[("csrf", &csrf), ("nonce", &nonce), ("source", "stripe")],
        )
        .await;
    assert!(
        ask.html.contains("5 dead letters match source=stripe"),
        "{}",
        ask.html
    );
    assert_eq!(
        env.ready_count(&dead).await,
        5,
        "nothing deleted before the confirmation"
    );
    let confirm = [
        ("csrf", csrf.as_str()),
        ("nonce", nonce.as_str()),
        ("source", "stripe"),
        ("confirm", "yes"),
    ];
    let done = operator.post("/console/dlq/purge", &confirm).await;
    assert!(done.html.contains("Purged 5 dead letters"), "{}", done.html);
    let again = operator.post("/console/dlq/purge", &confirm).await;
    assert!(again.html.contains("already sent"), "{}", again.html);
    assert_eq!(env.ready_count(&dead).await, 0);
    let metrics = reqwest::get(format!("{}/metrics", app.workers[0].admin_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"hookfleet_console_actions_total{action="replay",outcome="done"} 1"#,
        r#"hookfleet_console_actions_total{action="replay",outcome="duplicate"} 1"#,
        r#"hookfleet_console_actions_total{action="purge",outcome="done"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line}");
    }
}

/// Sum of a counter's series in a `/metrics` text.
fn counter_sum(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_replay_loses_nothing_when_the_worker_is_killed_midway() {
    let env = hookfleet_tests::env::TestEnv::new().await;
    let topology = env.topology();
    let specs: Vec<Spec> = (0..100)
        .map(|i| Spec::exhausted(if i % 2 == 0 { "github" } else { "stripe" }))
        .collect();
    let letters = publish_specs(&env, &specs).await;
    let all = dlq_common::distinct(&dlq_common::ids_of(&letters, |_| true));

    // The worker runs as its own process, to be killed with SIGKILL. It has no
    // pipeline and dead-letters what it cannot match, so every replayed job
    // comes back to the DLQ under its own message id, where it can be counted.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "namespace = \"{ns}\"\n[amqp]\nurl = \"{url}\"\nqueue_expires = \"10m\"\n\
         [worker]\nadmin_listen = \"127.0.0.1:{port}\"\nunmatched = \"dead-letter\"\n\
         [worker.console]\nenabled = true\ntoken = {{ secret_env = \"HF_TEST_CONSOLE_TOKEN\" }}\n",
        ns = env.namespace,
        url = hookfleet_tests::env::AMQP_URL,
    );
    std::fs::write(dir.path().join("hookfleet.toml"), config).unwrap();
    let token = console::fresh_token();
    let mut child =
        tokio::process::Command::new(hookfleet_tests::spawn::binary("hookfleet-worker"))
            .args(["run", "--config"])
            .arg(dir.path().join("hookfleet.toml"))
            .env("HF_TEST_CONSOLE_TOKEN", &token)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    hookfleet_tests::wait::wait_until(Duration::from_secs(30), || async {
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let operator = ConsoleClient::new(&base, &token);
    let page = operator.get("/console/dlq?source=github").await;
    let (csrf, nonce) = (page.hidden("csrf"), page.hidden("nonce"));
    let replayer = ConsoleClient::new(&base, &token);
    let replay = tokio::spawn(async move {
        let form = [
            ("csrf", csrf.as_str()),
            ("nonce", nonce.as_str()),
            ("source", "github"),
            ("rate", "20/s"),
        ];
        replayer.post_raw("/console/dlq/replay", &form).await
    });
    // Kill it once about ten letters went round.
    hookfleet_tests::wait::wait_until(Duration::from_secs(20), || async {
        let Ok(response) = http.get(format!("{base}/metrics")).send().await else {
            return false;
        };
        let text = response.text().await.unwrap_or_default();
        counter_sum(&text, "hookfleet_dead_letters_total") >= 10
    })
    .await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert!(replay.await.unwrap().is_err(), "the replay was cut short");

    // The killed connection's unacked letters return to the DLQ; the replayed
    // ones were dead-lettered back or wait in the jobs queue.
    hookfleet_tests::wait::wait_until(Duration::from_secs(20), || async {
        env.ready_count(&topology.dead_queue()).await
            + env.ready_count(&topology.jobs_queue()).await
            >= 100
    })
    .await;
    let dead = dlq_common::ids(&env.drain(&topology.dead_queue()).await);
    let jobs = dlq_common::ids(&env.drain(&topology.jobs_queue()).await);
    let found: std::collections::BTreeSet<String> = dead.iter().chain(&jobs).cloned().collect();
    assert_eq!(found, all, "no letter lost");
    // A kill between a confirm and its ack may duplicate a letter (at least
    // once, as with the CLI); never more than the replays in flight.
    assert!(
        dead.len() + jobs.len() - 100 <= 256,
        "{} copies",
        dead.len() + jobs.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_is_found_by_source_and_event_id_and_shows_its_timeline() {
    use hookfleet_common::signature::SchemeKind;
    use hookfleet_tests::webhook;
    let token = console::fresh_token();
    let configured = token.clone();
    let secret = webhook::standard_secret();
    let app = TestApp::builder()
        .ingest()
        .source("support", webhook::source(SchemeKind::Standard, &[&secret]))
        .pipeline(pipeline(
            "triage",
            "mock",
            "Ticket: {{ payload.ticket.body }}",
        ))
        .configure(move |s, _| console::enable(s, &configured))
        .start()
        .await;
    let ingest = app.ingest.as_ref().expect("ingest");
    let event_id = format!("evt_{}", ulid::Ulid::new());
    let body = webhook::ticket(&event_id, "the <b>printer</b> is on fire");
    let response = webhook::standard_request(
        &reqwest::Client::new(),
        &ingest.hook_url("support"),
        &secret,
        &event_id,
        &body,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.results(1, Duration::from_secs(30)).await;

    let operator = ConsoleClient::new(&app.workers[0].admin_url, &token);
    let path = format!("/console/events?source=support&event_id={event_id}");
    // The worker records `done` right after the result is confirmed.
    hookfleet_tests::wait::wait_until(Duration::from_secs(10), || async {
        operator
            .get(&path)
            .await
            .html
            .contains(r#"id="event-state">done<"#)
    })
    .await;
    let page = operator.get(&path).await;
    assert!(page.html.contains(&id), "found under its message id");
    assert!(
        page.html.contains("pipeline triage answered"),
        "{}",
        page.html
    );
    assert!(page.html.contains("received"));
    let by_id = operator.get(&format!("/console/events?id={id}")).await;
    assert!(by_id.html.contains(r#"id="event-state">done<"#));
    let unknown = operator
        .get("/console/events?source=support&event_id=never-sent")
        .await;
    assert!(
        unknown
            .html
            .contains("No event `never-sent` from `support`"),
        "{}",
        unknown.html
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_sums_the_jobs_in_flight_of_every_worker() {
    use hookfleet_tests::mock_ai::MockConfig;
    let token = console::fresh_token();
    let configured = token.clone();
    // Each worker holds two jobs (its prefetch) for as long as the mock answers.
    let mut app = TestApp::builder()
        .workers(2)
        .mock(MockConfig {
            latency: Duration::from_secs(4),
            ..MockConfig::default()
        })
        .pipeline(pipeline("triage", "mock", USER))
        .configure(move |s, _| {
            console::enable(s, &configured);
            s.worker.concurrency = 2;
            s.worker.heartbeat_interval = Duration::from_millis(200);
        })
        .start()
        .await;
    for i in 0..4 {
        app.publish(
            "support",
            "ticket.created",
            &serde_json::json!({ "text": i }),
        )
        .await;
    }
    let operator = ConsoleClient::new(&app.workers[1].admin_url, &token);
    // Asked of one worker, the overview shows both workers' jobs.
    hookfleet_tests::wait::wait_until(Duration::from_secs(3), || async {
        let html = operator.get("/console/overview/panel").await.html;
        html.contains(r#"id="jobs-unacked">4<"#)
    })
    .await;
    let page = operator.get("/console").await;
    assert!(page.html.contains("of 4 prefetch"), "{}", page.html);
    let rows = page.html.matches("<td>hookfleet-worker-").count();
    assert_eq!(rows, 2, "both workers listed: {}", page.html);
    app.results(4, Duration::from_secs(20)).await;
    // Done: every worker's next beat says so.
    hookfleet_tests::wait::wait_until(Duration::from_secs(3), || async {
        let html = operator.get("/console/overview/panel").await.html;
        html.contains(r#"id="jobs-unacked">0<"#)
    })
    .await;
    // A worker that stops takes its heartbeat with it.
    app.take_worker().stop().await.expect("a clean stop");
    let html = operator.get("/console/overview/panel").await.html;
    assert_eq!(html.matches("<td>hookfleet-worker-").count(), 1, "{html}");
    assert!(html.contains("of 2 prefetch"), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_shows_each_failed_attempt_with_its_error_then_done() {
    use hookfleet_tests::mock_ai::MockConfig;
    let token = console::fresh_token();
    let configured = token.clone();
    let app = TestApp::builder()
        .mock(MockConfig {
            fail_first_attempts: 2,
            ..MockConfig::default()
        })
        .max_attempts(4)
        .pipeline(pipeline("triage", "mock", USER))
        .configure(move |s, _| console::enable(s, &configured))
        .start()
        .await;
    let meta = app
        .publish(
            "support",
            "ticket.created",
            &serde_json::json!({ "text": "<script>alert(1)</script>" }),
        )
        .await;
    app.results(1, Duration::from_secs(30)).await;
    let operator = ConsoleClient::new(&app.workers[0].admin_url, &token);
    let path = format!("/console/events?id={}", meta.message_id);
    hookfleet_tests::wait::wait_until(Duration::from_secs(10), || async {
        operator
            .get(&path)
            .await
            .html
            .contains(r#"id="event-state">done<"#)
    })
    .await;
    let html = operator.get(&path).await.html;
    let timeline = &html[html.find(r#"id="timeline""#).expect("a timeline")..];
    let at = |needle: &str| {
        timeline
            .find(needle)
            .unwrap_or_else(|| panic!("`{needle}` in the timeline:\n{timeline}"))
    };
    let first = at("attempt 1 failed: ai_http_500 at ai in pipeline triage (mock &#x2f; ");
    let second = at("attempt 2 failed: ai_http_500 at ai in pipeline triage (mock &#x2f; ");
    let third = at("processing, attempt 3");
    let answered = at("pipeline triage answered, its sinks delivered");
    let done = at("<strong>done</strong>");
    assert!(first < second && second < third && third < answered && answered < done);
    // Each failure carries its error, and the retry's next attempt.
    let errors = timeline.matches("AI request failed").count();
    assert_eq!(errors, 2, "{timeline}");
    assert_eq!(timeline.matches("next attempt about").count(), 2);
    assert!(!html.contains("<script>alert"), "escaped");
}

/// Peak and current resident memory of process `pid`, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("procfs");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a memory field")
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dlq_page_holds_one_page_of_letters_in_memory_not_the_scan() {
    let env = hookfleet_tests::env::TestEnv::new().await;
    let topology = env.topology();
    // The worker runs as its own process, so its memory is its own.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "namespace = \"{ns}\"\n[amqp]\nurl = \"{url}\"\nqueue_expires = \"10m\"\n\
         [worker]\nadmin_listen = \"127.0.0.1:{port}\"\n\
         [worker.console]\nenabled = true\npage_size = 20\n\
         token = {{ secret_env = \"HF_TEST_CONSOLE_TOKEN\" }}\n",
        ns = env.namespace,
        url = hookfleet_tests::env::AMQP_URL,
    );
    std::fs::write(dir.path().join("hookfleet.toml"), config).unwrap();
    let token = console::fresh_token();
    let mut child =
        tokio::process::Command::new(hookfleet_tests::spawn::binary("hookfleet-worker"))
            .args(["run", "--config"])
            .arg(dir.path().join("hookfleet.toml"))
            .env("HF_TEST_CONSOLE_TOKEN", &token)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the worker starts");
    let pid = child.id().expect("a pid");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    hookfleet_tests::wait::wait_until(Duration::from_secs(30), || async {
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let operator = ConsoleClient::new(&base, &token);
    let large = |source, n| {
        let (properties, _) = dead_letter(&Spec::exhausted(source), n);
        let body = format!(r#"{{"pad":"{}"}}"#, "x".repeat(64 * 1024));
        (properties, body.into_bytes())
    };
    // A read of a few letters first: connections, buffers and allocator arenas
    // are not the page's.
    let mut published = publish_letters(&env, (0..5).map(|n| large("github", n)).collect()).await;
    assert_eq!(operator.get("/console/dlq").await.status, StatusCode::OK);

    // 400 more (25 MiB), none matching: the page reads them all.
    const LETTERS: usize = 400;
    for batch in 0..(LETTERS / 50) {
        let letters = (0..50).map(|i| large("stripe", batch * 50 + i)).collect();
        published.extend(publish_letters(&env, letters).await);
    }
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset the peak");
    let (_, before) = memory_kib(pid);
    let started = std::time::Instant::now();
    let page = operator.get("/console/dlq?source=nobody").await;
    let elapsed = started.elapsed();
    let (peak, _) = memory_kib(pid);
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert!(
        page.html
            .contains(&format!("read {n} of {n}.", n = LETTERS + 5)),
        "{}",
        page.html
    );
    let growth = peak.saturating_sub(before);
    println!(
        "{} letters of 64 KiB scanned in {elapsed:?}; peak RSS +{growth} KiB",
        LETTERS + 5
    );
    // Holding the scan would grow memory by its size at least (the consumer
    // pass that read pages before did); a page's read has a fixed cost (its
    // connection and buffers) and holds one window of letters at most
    // (page_size + 1: 21 here), whatever it scans.
    let scanned_kib = (LETTERS * 64) as u64;
    assert!(growth < scanned_kib / 2, "peak RSS grew {growth} KiB");
    let _ = child.kill().await;
    let after = dlq_common::ids(&env.drain(&topology.dead_queue()).await);
    let before: Vec<String> = published.into_iter().map(|p| p.id).collect();
    assert_eq!(
        after, before,
        "reading a page changed nothing, order included"
    );
}
