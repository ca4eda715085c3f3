//! The console in a real browser (headless Chromium through chromedriver): the
//! on-call story of issue 19. The AI is down, four events die; the operator
//! logs in, finds one event by its id and sees it dead on its timeline, filters
//! the DLQ to one source, replays it once the AI is back, and sees those events
//! turn into results — while the other source's letters stay.
//!
//! With `HOOKFLEET_CONSOLE_SCREENSHOTS=docs/console` set, each page's
//! screenshot is written there (how docs/console/*.png are made).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, Locator};
use hookfleet_tests::app::TestApp;
use hookfleet_tests::browser::Browser;
use hookfleet_tests::console;
use hookfleet_tests::fleet::pipeline;
use hookfleet_tests::mock_ai::MockConfig;
use hookfleet_tests::wait::wait_until;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

async fn text(client: &Client, css: &str) -> String {
    client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no `{css}` on the page: {e}"))
        .text()
        .await
        .expect("its text")
}

async fn fill(client: &Client, id: &str, value: &str) {
    let input = client.find(Locator::Id(id)).await.expect(id);
    input.clear().await.expect("cleared");
    input.send_keys(value).await.expect("typed");
}

async fn click(client: &Client, id: &str) {
    client
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("no #{id}: {e}"))
        .click()
        .await
        .expect("clicked");
}

/// Writes the page's screenshot as `name`.png when asked to (module docs).
async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    if let Ok(dir) = std::env::var("HOOKFLEET_CONSOLE_SCREENSHOTS") {
        // Tests run in tests/; the variable is relative to the repository.
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(dir);
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot written");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_a_dead_event_and_replays_its_source_in_a_browser() {
    let token = console::fresh_token();
    let configured = token.clone();
    let app = TestApp::builder()
        .mock(MockConfig {
            fail_5xx_rate: 1.0,
            seed: Some(19),
            ..MockConfig::default()
        })
        .max_attempts(1)
        .pipeline(pipeline("triage", "mock", "Ticket: {{ payload.text }}"))
        .configure(move |s, _| console::enable(s, &configured))
        .start()
        .await;
    let mut github = BTreeSet::new();
    for i in 0..4 {
        let source = if i % 2 == 0 { "github" } else { "stripe" };
        let body = json!({ "text": format!("case {i} <b>from</b> {source}") });
        let meta = app.publish(source, "issue.opened", &body).await;
        if source == "github" {
            github.insert(meta.message_id);
        }
    }
    let dead = app.env().topology().dead_queue();
    assert_eq!(
        app.env()
            .wait_for_count(&dead, 4, Duration::from_secs(30))
            .await,
        4
    );
    let base = format!("{}/console", app.workers[0].admin_url);
    let browser = Browser::start().await;
    let c = &browser.client;

    // Log in.
    c.goto(&base).await.expect("the console");
    fill(c, "secret", &token).await;
    click(c, "login").await;
    assert_eq!(text(c, "#dlq-depth").await, "4");
    assert_eq!(text(c, "#operator").await, "oncall");
    screenshot(c, "overview").await;

    // Find one event by its id: dead, on its timeline.
    let one = github.iter().next().expect("a github event").clone();
    c.goto(&format!("{base}/events")).await.expect("events");
    fill(c, "event-id", &one).await;
    click(c, "find-event").await;
    assert_eq!(text(c, "#event-state").await, "dead");
    let timeline = text(c, "#timeline").await;
    assert!(timeline.contains("dead: exhausted at ai"), "{timeline}");
    screenshot(c, "event").await;

    // Filter the DLQ to one source.
    c.goto(&format!("{base}/dlq")).await.expect("dlq");
    fill(c, "f-source", "github").await;
    click(c, "apply-filter").await;
    // The unfiltered page has a summary too: wait for the filtered one to load,
    // or the summary found may be the old page's, gone by the time it is read.
    wait_until(WAIT, || async {
        let url = c.current_url().await.expect("the page's URL");
        url.query().is_some_and(|q| q.contains("source=github"))
    })
    .await;
    let summary = text(c, "#dlq-summary").await;
    assert!(summary.starts_with("Showing 2 letters"), "{summary}");
    screenshot(c, "dead-letters").await;

    // One letter, escaped.
    c.goto(&format!("{base}/dlq/letter?id={one}"))
        .await
        .expect("letter");
    let body = text(c, "#letter-body").await;
    assert!(
        body.contains("<b>from</b>"),
        "shown as text, not markup: {body}"
    );
    screenshot(c, "letter").await;

    // The AI is back: replay github's letters and see them become results.
    app.mock.heal();
    c.goto(&format!("{base}/dlq?source=github"))
        .await
        .expect("dlq");
    click(c, "replay").await;
    let result = text(c, "#action-result").await;
    assert!(result.starts_with("Replayed 2 dead letters"), "{result}");
    let results = app.results(2, Duration::from_secs(30)).await;
    let answered: BTreeSet<String> = results
        .iter()
        .map(|r| r["message_id"].as_str().expect("an id").to_owned())
        .collect();
    assert_eq!(answered, github);
    assert_eq!(
        app.env().ready_count(&dead).await,
        2,
        "stripe's letters stay"
    );
    // The status turns `done` just after the result is confirmed: reload until then.
    let event = format!("{base}/events?id={one}");
    wait_until(WAIT, || async {
        c.goto(&event).await.expect("event");
        text(c, "#event-state").await == "done"
    })
    .await;

    c.goto(&format!("{base}/pipelines"))
        .await
        .expect("pipelines");
    assert!(text(c, "#pipelines").await.contains("triage"));
    screenshot(c, "pipelines").await;
    browser.close().await;
}
