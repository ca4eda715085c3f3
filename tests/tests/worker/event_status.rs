//! `GET /events/{id}`: an accepted event's state, recorded by ingest and the
//! workers in Redis — accepted → processing → retrying → done or dead — never
//! going backwards, and gone after `status.ttl`.

use std::time::Duration;

use hookfleet_common::message::{EventMeta, now_rfc3339};
use hookfleet_common::redis::status::{EventState, Statuses, Update};
use hookfleet_common::signature::SchemeKind;
use hookfleet_tests::app::{TestApp, TestAppBuilder};
use hookfleet_tests::env::TestEnv;
use hookfleet_tests::fleet::{event, pipeline};
use hookfleet_tests::mock_ai::MockConfig;
use hookfleet_tests::spawn::IngestHandle;
use hookfleet_tests::wait::{wait_for, wait_until};
use hookfleet_tests::webhook::{self, source};
use serde_json::Value;

const USER: &str = "Ticket from {{ payload.customer.name }}: {{ payload.ticket.body }}";

/// Ingest with a Standard Webhooks source `support`, pipeline `triage` on the
/// mock answering as `mock` says, and no worker; and the source's secret.
fn builder<'a>(mock: MockConfig) -> (TestAppBuilder<'a>, String) {
    let secret = webhook::standard_secret();
    let builder = TestApp::builder()
        .mock(mock)
        .workers(0)
        .ingest()
        .source("support", source(SchemeKind::Standard, &[&secret]))
        .pipeline(pipeline("triage", "mock", USER));
    (builder, secret)
}

/// Sends a signed ticket; returns the message id of the 202.
async fn send(ingest: &IngestHandle, secret: &str, event_id: &str, text: &str) -> String {
    let body = webhook::ticket(event_id, text);
    let response = webhook::standard_request(
        &reqwest::Client::new(),
        &ingest.hook_url("support"),
        secret,
        event_id,
        &body,
    )
    .send()
    .await
    .expect("ingest answers");
    assert_eq!(response.status(), 202);
    let json: Value = response.json().await.expect("a JSON body");
    json["id"].as_str().expect("an id").to_owned()
}

/// `GET path` → (status code, JSON body).
async fn get(ingest: &IngestHandle, path: &str) -> (u16, Value) {
    let response = ingest.status(path).send().await.expect("ingest answers");
    let code = response.status().as_u16();
    (code, response.json().await.expect("a JSON body"))
}

/// Waits until `GET /events/{id}` answers 200 with state `state`; returns the
/// body. Panics after `deadline`.
async fn wait_for_state(ingest: &IngestHandle, id: &str, state: &str, deadline: Duration) -> Value {
    let path = format!("/events/{id}");
    wait_for(deadline, &format!("{id} {state}"), || async {
        let (code, body) = get(ingest, &path).await;
        (code == 200 && body["state"] == state).then_some(body)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_event_moves_to_done_with_its_summary() {
    let (builder, secret) = builder(MockConfig::default());
    let mut app = builder.start().await;
    let ingest = app.ingest();

    let id = send(ingest, &secret, "tkt-1", "my order arrived broken").await;
    let (code, accepted) = get(ingest, &format!("/events/{id}")).await;
    assert_eq!(code, 200, "{accepted}");
    assert_eq!(accepted["state"], "accepted", "no worker yet: {accepted}");
    assert_eq!(accepted["id"], id.as_str());
    assert_eq!(accepted["source"], "support");
    assert_eq!(accepted["event_id"], "tkt-1");
    assert!(accepted["accepted_at"].is_string());
    let (code, by_event) = get(ingest, "/events/support/tkt-1").await;
    assert_eq!(code, 200);
    assert_eq!(by_event["id"], id.as_str(), "found by source and event id");

    let worker = app.start_worker(app.settings.clone()).await;
    let done = wait_for_state(ingest, &id, "done", Duration::from_secs(15)).await;
    assert_eq!(done["attempts"], 1, "{done}");
    assert!(done["completed_at"].is_string());
    let pipelines = done["pipelines"].as_array().expect("pipelines");
    assert_eq!(pipelines.len(), 1, "{done}");
    let triage = &pipelines[0];
    assert_eq!(triage["pipeline"], "triage");
    assert_eq!(triage["provider"], "mock");
    assert_eq!(triage["model"], "gpt-4o-mini");
    assert_eq!(triage["output_json"]["sentiment"], "negative", "{triage}");
    assert!(triage["completed_at"].is_string());
    let text = done.to_string();
    assert!(
        !text.contains("ada@example.com") && !text.contains(&secret),
        "no payload or secret in the status: {text}"
    );
    worker.stop().await.expect("the worker stops cleanly");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_event_shows_retrying_with_its_attempt_then_dead_with_its_reason() {
    let (builder, secret) = builder(MockConfig {
        fail_marker: Some("FAIL-ALWAYS".into()),
        ..MockConfig::default()
    });
    let mut app = builder.workers(1).start().await;
    let worker = app.take_worker();
    let ingest = app.ingest();

    let id = send(ingest, &secret, "tkt-doomed", "FAIL-ALWAYS please").await;
    // Attempt 2 waits in the 1 s retry tier: plenty of time to see it.
    let retrying = wait_for_state(ingest, &id, "retrying", Duration::from_secs(10)).await;
    let attempt = retrying["attempt"].as_u64().expect("attempt");
    assert!((1..=2).contains(&attempt), "{retrying}");
    let next = retrying["next_attempt_at"]
        .as_str()
        .expect("next_attempt_at");
    humantime::parse_rfc3339(next).expect("an RFC 3339 time");

    let dead = wait_for_state(ingest, &id, "dead", Duration::from_secs(15)).await;
    assert_eq!(dead["class"], "exhausted", "{dead}");
    assert_eq!(dead["reason"], "ai_http_500");
    assert_eq!(dead["stage"], "ai");
    assert_eq!(dead["pipeline"], "triage");
    assert_eq!(dead["attempts"], 3);
    assert!(dead["error"].as_str().unwrap().contains("500"), "{dead}");
    assert!(dead["pipelines"].as_array().unwrap().is_empty());
    worker.stop().await.expect("the worker stops cleanly");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_are_404_with_a_json_error() {
    let (builder, _secret) = builder(MockConfig::default());
    let mut app = builder.start().await;
    let ingest = app.ingest();
    for path in [
        format!("/events/{}", ulid::Ulid::new()),
        "/events/not-an-id".to_owned(),
        "/events/support/never-sent".to_owned(),
        "/events/nosuchsource/x".to_owned(),
    ] {
        let (code, body) = get(ingest, &path).await;
        assert_eq!(code, 404, "{path}");
        assert!(
            body["error"].as_str().unwrap().contains("unknown event"),
            "{body}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_status_is_404() {
    let (builder, secret) = builder(MockConfig::default());
    let mut app = builder
        .configure(|settings, _| settings.status.ttl = Duration::from_secs(1))
        .start()
        .await;
    let ingest = app.ingest();
    let id = send(ingest, &secret, "tkt-short", "hello").await;
    let (code, body) = get(ingest, &format!("/events/{id}")).await;
    assert_eq!((code, &body["state"]), (200, &Value::from("accepted")));
    wait_until(Duration::from_secs(5), || async {
        get(ingest, &format!("/events/{id}")).await.0 == 404
    })
    .await;
    app.stop().await;
}

/// The event statuses of `env`, with a 2 s Redis timeout.
fn statuses(env: &TestEnv) -> Statuses {
    Statuses::new(
        env.redis(),
        env.topology(),
        env.settings.status.clone(),
        Duration::from_secs(2),
    )
}

/// Ingest's `accepted` as plain commands (`Statuses::first_write`, what a
/// one-key event's accept sends): it never covers a worker's state written
/// before it, and a worker's write after it replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_accepted_write_keeps_a_workers_state_and_yields_to_the_next() {
    let env = TestEnv::new().await;
    let statuses = statuses(&env);
    let accept = async |meta: &EventMeta| {
        let update = Update::accepted(meta);
        let mut pipe = deadpool_redis::redis::pipe();
        pipe.atomic();
        assert!(
            statuses.first_write(&update, &mut pipe),
            "accepted is a first write"
        );
        let mut conn = env.redis().get().await.unwrap();
        pipe.query_async::<()>(&mut conn).await.unwrap();
    };
    let processing = |meta| Update {
        event: meta,
        attempt: 1,
        state: EventState::Processing {
            attempt: 1,
            started_at: now_rfc3339(),
        },
        pipelines: Vec::new(),
        cause: None,
    };
    let state = async |meta: &EventMeta| statuses.get(&meta.message_id).await.unwrap().unwrap();

    // A worker got there first: its state stays, the history has both.
    let early = event("support", "ticket.created");
    assert!(statuses.record(&processing(&early)).await.unwrap());
    accept(&early).await;
    let status = state(&early).await;
    assert!(
        matches!(status.state, EventState::Processing { .. }),
        "{status:?}"
    );
    assert_eq!(status.event.unwrap().source, "support");
    let history = statuses.history(&early.message_id).await.unwrap();
    assert!(
        matches!(history[1].state, EventState::Accepted { .. }),
        "{history:?}"
    );

    // Accepted first: shown as such, then replaced by the worker's write.
    let late = event("support", "ticket.created");
    accept(&late).await;
    let status = state(&late).await;
    assert!(
        matches!(status.state, EventState::Accepted { .. }),
        "{status:?}"
    );
    assert_eq!(
        (status.replays, status.event.unwrap().source.as_str()),
        (0, "support")
    );
    assert!(statuses.record(&processing(&late)).await.unwrap());
    assert!(matches!(
        state(&late).await.state,
        EventState::Processing { .. }
    ));

    // Anything but the lowest rank is not a first write.
    let mut pipe = deadpool_redis::redis::pipe();
    assert!(!statuses.first_write(&processing(&late), &mut pipe));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_never_goes_backwards() {
    let env = TestEnv::new().await;
    let statuses = statuses(&env);
    let mut meta = event("support", "ticket.created");
    let write = |attempt: u32, state: EventState| Update {
        event: &meta,
        attempt,
        state,
        pipelines: Vec::new(),
        cause: None,
    };
    let processing = |attempt| EventState::Processing {
        attempt,
        started_at: now_rfc3339(),
    };
    let retrying = |attempt| EventState::Retrying {
        attempt,
        next_attempt_at: now_rfc3339(),
    };
    let done = EventState::Done {
        attempts: 2,
        completed_at: now_rfc3339(),
    };
    let accepted = EventState::Accepted {
        accepted_at: now_rfc3339(),
    };
    // A worker got there before ingest's `accepted`.
    assert!(statuses.record(&write(1, processing(1))).await.unwrap());
    assert!(!statuses.record(&write(0, accepted)).await.unwrap());
    // A limiter deferral: retrying and processing again within one attempt.
    assert!(statuses.record(&write(1, retrying(0))).await.unwrap());
    assert!(statuses.record(&write(1, processing(1))).await.unwrap());
    assert!(statuses.record(&write(1, retrying(1))).await.unwrap());
    // The retry copy started on another worker before... then a late write.
    assert!(statuses.record(&write(2, processing(2))).await.unwrap());
    assert!(!statuses.record(&write(1, retrying(1))).await.unwrap());
    assert!(statuses.record(&write(2, done.clone())).await.unwrap());
    // A late redelivered copy of the same attempt, and a second final write.
    assert!(!statuses.record(&write(2, processing(2))).await.unwrap());
    assert!(!statuses.record(&write(2, done.clone())).await.unwrap());
    let status = statuses.get(&meta.message_id).await.unwrap().unwrap();
    assert_eq!(status.state, done);
    // The history keeps every write, late ones too, but one final state per rank.
    let history = statuses.history(&meta.message_id).await.unwrap();
    let states: Vec<&EventState> = history.iter().map(|t| &t.state).collect();
    assert_eq!(states.len(), 9, "{states:?}");
    assert!(matches!(states[1], EventState::Accepted { .. }));
    assert!(matches!(states[6], EventState::Retrying { attempt: 1, .. }));
    assert_eq!(states[7], &done);
    assert!(matches!(
        states[8],
        EventState::Processing { attempt: 2, .. }
    ));
    // A DLQ replay starts over, and may leave a final state.
    meta.replays = 1;
    let replayed = Update {
        event: &meta,
        attempt: 1,
        state: processing(1),
        pipelines: Vec::new(),
        cause: None,
    };
    assert!(statuses.record(&replayed).await.unwrap());
    let status = statuses.get(&meta.message_id).await.unwrap().unwrap();
    assert_eq!(status.replays, 1);
    assert!(matches!(status.state, EventState::Processing { .. }));
}
