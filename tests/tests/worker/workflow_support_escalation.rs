//! The reference workflow, `examples/support-escalation.toml`, end to end: a signed
//! ticket webhook → ingest → worker → CRM history (enrichment) → mock AI → CRM
//! update and, for negative tickets, one signed chat escalation. The CRM and the
//! chat channel are stand-in servers; the example runs as shipped, with only its
//! hosts pointed at them and its provider at the mock.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::Method;
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use hookfleet_common::config::Sources;
use hookfleet_tests::env::TestEnv;
use hookfleet_tests::fleet::{WorkerHandle, header, mock_openai, take, worker_settings};
use hookfleet_tests::mock_ai::{MockAi, MockConfig};
use hookfleet_tests::settings::Settings;
use hookfleet_tests::spawn::IngestHandle;
use hookfleet_tests::stand_in::{Recorded, StandIn};
use hookfleet_tests::wait::wait_until;
use hookfleet_tests::webhook;
use serde_json::json;

const EXAMPLE: &str = include_str!("../../../examples/support-escalation.toml");
const PIPELINE: &str = "support-escalation";
const SUPPORT_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const CHAT_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const CRM_TOKEN: &str = "crm-token-for-tests";
const HISTORY: &str = "/api/customers/";
const TICKETS: &str = "/api/tickets/";
const CHAT: &str = "/hooks/support-escalations";
const DEADLINE: Duration = Duration::from_secs(30);

/// The workflow running: ingest, one worker, the mock AI and the two stand-ins.
struct Workflow {
    env: TestEnv,
    mock: MockAi,
    crm: StandIn,
    chat: StandIn,
    ingest: IngestHandle,
    worker: WorkerHandle,
    client: reqwest::Client,
}

impl Workflow {
    /// Starts everything with the example config; the CRM and chat answer 200.
    async fn start(max_attempts: u32) -> Self {
        let env = TestEnv::new().await;
        let mock = MockAi::start(MockConfig::default()).await;
        let crm = StandIn::start().await;
        let chat = StandIn::start().await;
        crm.answer(
            Method::GET,
            HISTORY,
            200,
            json!({ "plan": "pro", "tickets": [{ "id": "old-1" }, { "id": "old-2" }] }),
        );
        crm.answer(Method::PATCH, TICKETS, 200, json!({ "updated": true }));
        chat.answer(Method::POST, CHAT, 200, json!({ "ok": true }));

        let example = load_example(crm.url(), chat.url());
        let mut settings = worker_settings(&env, max_attempts);
        settings.ingest.sources = example.ingest.sources;
        settings.worker.pipelines = example.worker.pipelines;
        settings
            .worker
            .providers
            .insert("openai".into(), mock_openai(&mock));
        let ingest = IngestHandle::start(settings.clone()).await;
        let worker = WorkerHandle::start_consuming(settings).await;
        Self {
            env,
            mock,
            crm,
            chat,
            ingest,
            worker,
            client: reqwest::Client::new(),
        }
    }

    /// Sends ticket `id` with `text` as a signed webhook; returns ingest's message id.
    async fn send_ticket(&self, id: &str, text: &str) -> String {
        let body = serde_json::to_vec(&json!({
            "type": "ticket.created",
            "id": id,
            "ticket": { "subject": "Order", "body": text },
            "customer": { "id": "cus_42", "name": "Ada" }
        }))
        .unwrap();
        let response = webhook::standard_request(
            &self.client,
            &self.ingest.hook_url("support"),
            SUPPORT_SECRET,
            id,
            &body,
        )
        .send()
        .await
        .unwrap();
        assert_eq!(response.status(), 202);
        let answer: serde_json::Value = response.json().await.unwrap();
        answer["id"].as_str().unwrap().to_owned()
    }

    /// Waits until the worker counted `n` jobs of the pipeline with `outcome`.
    async fn wait_jobs(&self, outcome: &str, n: u64) {
        wait_until(DEADLINE, || {
            let count = self.worker.jobs(PIPELINE, outcome);
            async move { count >= n }
        })
        .await;
    }

    async fn stop(self) {
        self.worker.stop().await.unwrap();
        self.ingest.stop().await.unwrap();
        self.mock.stop().await.unwrap();
        self.env.cleanup().await;
    }
}

/// The example, with its hosts pointed at the stand-ins and its secrets set.
fn load_example(crm: &str, chat: &str) -> Settings {
    for (name, value) in [
        ("SUPPORT_WEBHOOK_SECRET", SUPPORT_SECRET),
        ("CHAT_SIGNING_SECRET", CHAT_SECRET),
        ("OPENAI_API_KEY", "sk-test"),
        ("CRM_API_TOKEN", CRM_TOKEN),
    ] {
        // SAFETY: nextest runs each test in its own process, and every test of
        // this file sets the same values before anything reads them.
        unsafe { std::env::set_var(name, value) };
    }
    let toml = EXAMPLE
        .replace("https://crm.example.com", crm)
        .replace("https://chat.example.com", chat);
    Settings::load_from(Sources {
        file: None,
        toml: Some(toml),
        env: Some(HashMap::new()),
    })
    .expect("the example loads")
}

/// Checks a Standard Webhooks signature independently of hookfleet's signer:
/// HMAC-SHA256 over `{id}.{timestamp}.{body}` with the base64-decoded key.
fn assert_signed(request: &Recorded, secret: &str) {
    let id = request.header("webhook-id").expect("webhook-id");
    let timestamp = request
        .header("webhook-timestamp")
        .expect("webhook-timestamp");
    let signature = request
        .header("webhook-signature")
        .expect("webhook-signature");
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&request.body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(signature, format!("v1,{expected}"));
    let age = webhook::unix_now(0) - timestamp.parse::<i64>().unwrap();
    assert!((0..60).contains(&age), "a fresh timestamp ({age} s old)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negative_ticket_updates_the_crm_and_posts_one_signed_escalation() {
    let flow = Workflow::start(3).await;
    let id = flow
        .send_ticket("tkt-neg", "My order arrived broken, I want a refund.")
        .await;
    flow.wait_jobs("succeeded", 1).await;

    let history = flow.crm.requests_to(&Method::GET, HISTORY);
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].path, "/api/customers/cus_42/history");
    let bearer = format!("Bearer {CRM_TOKEN}");
    assert_eq!(history[0].header("authorization"), Some(bearer.as_str()));

    let updates = flow.crm.requests_to(&Method::PATCH, TICKETS);
    assert_eq!(updates.len(), 1, "the CRM is updated once");
    assert_eq!(updates[0].path, "/api/tickets/tkt-neg");
    assert_eq!(updates[0].header("authorization"), Some(bearer.as_str()));
    let update = updates[0].json();
    assert_eq!(update["ai_insight"]["sentiment"], "negative", "{update}");
    assert!(update["ai_insight"]["category"].is_string(), "{update}");
    assert_eq!(update["hookfleet_message_id"], id.as_str());
    assert!(
        updates[0].header("webhook-signature").is_none(),
        "no secret, no signature"
    );

    let posts = flow.chat.requests_to(&Method::POST, CHAT);
    assert_eq!(posts.len(), 1, "exactly one escalation");
    assert_signed(&posts[0], CHAT_SECRET);
    assert_eq!(
        posts[0].header("webhook-id"),
        Some(format!("msg_{id}_{PIPELINE}_chat-escalation").as_str())
    );
    let message = posts[0].json();
    let text = message["text"].as_str().unwrap();
    assert!(
        text.starts_with("Escalation: unhappy customer Ada on ticket tkt-neg (pro plan): "),
        "{text}"
    );
    assert_eq!(message["ticket"], "tkt-neg");

    // The prompt saw the CRM's history, and the results exchange has the answer.
    assert_eq!(
        flow.mock
            .calls_for_prompt_containing("Customer: Ada, pro plan, 2 earlier tickets."),
        1
    );
    let topology = flow.env.topology();
    let results = take(&flow.env, &topology.results_queue(), 1, DEADLINE).await;
    assert_eq!(results.len(), 1);
    flow.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_positive_ticket_updates_the_crm_only() {
    let flow = Workflow::start(3).await;
    flow.send_ticket("tkt-pos", "Thanks, the new dashboard is great.")
        .await;
    flow.wait_jobs("succeeded", 1).await;

    let updates = flow.crm.requests_to(&Method::PATCH, TICKETS);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].json()["ai_insight"]["sentiment"], "positive");
    // The job is done (every sink settled), so no escalation can still come.
    assert!(flow.chat.requests().is_empty(), "no escalation");
    flow.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_outage_retries_then_dead_letters_without_a_second_escalation() {
    let flow = Workflow::start(3).await;
    flow.crm.answer(
        Method::PATCH,
        TICKETS,
        503,
        json!({ "error": "maintenance" }),
    );
    let id = flow
        .send_ticket("tkt-out", "Terrible service, the parcel is broken.")
        .await;
    let topology = flow.env.topology();
    let dead = take(&flow.env, &topology.dead_queue(), 1, DEADLINE).await;

    assert_eq!(dead.len(), 1);
    let letter = &dead[0];
    assert_eq!(
        letter
            .delivery
            .properties
            .message_id()
            .as_ref()
            .unwrap()
            .as_str(),
        id
    );
    assert_eq!(header(letter, "hf-stage").as_deref(), Some("sink"));
    assert_eq!(
        header(letter, "hf-error-class").as_deref(),
        Some("exhausted")
    );
    let error = header(letter, "hf-error").unwrap();
    assert!(error.starts_with("sink_http_503"), "{error}");
    assert!(error.contains("sink `crm` failed"), "{error}");

    assert_eq!(
        flow.crm.requests_to(&Method::PATCH, TICKETS).len(),
        3,
        "the CRM update was tried on every attempt"
    );
    assert_eq!(
        flow.chat.requests_to(&Method::POST, CHAT).len(),
        1,
        "the escalation went out once, on the first attempt"
    );
    // Temperature 0: the retries reused the cached answer.
    assert_eq!(
        flow.mock
            .calls_for_prompt_containing("Terrible service, the parcel is broken."),
        1
    );
    // The results exchange got the result once, too.
    let results = flow.env.drain(&topology.results_queue()).await;
    assert_eq!(results.len(), 1);
    flow.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_outage_that_ends_delivers_the_update_late_and_the_escalation_once() {
    let flow = Workflow::start(10).await;
    flow.crm.answer(
        Method::PATCH,
        TICKETS,
        502,
        json!({ "error": "bad gateway" }),
    );
    flow.send_ticket("tkt-heal", "Angry: still no reply.").await;
    flow.crm.wait_for(Method::PATCH, TICKETS, 2, DEADLINE).await;
    flow.crm
        .answer(Method::PATCH, TICKETS, 200, json!({ "updated": true }));
    flow.wait_jobs("succeeded", 1).await;

    let updates = flow.crm.requests_to(&Method::PATCH, TICKETS);
    assert_eq!(updates.last().unwrap().status, 200);
    assert_eq!(updates.iter().filter(|r| r.status == 200).count(), 1);
    assert_eq!(flow.chat.requests_to(&Method::POST, CHAT).len(), 1);
    assert!(flow.worker.jobs(PIPELINE, "retried") >= 2);
    flow.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_history_outage_dead_letters_at_the_enrich_stage_before_any_ai_call() {
    let flow = Workflow::start(3).await;
    flow.crm
        .answer(Method::GET, HISTORY, 503, json!({ "error": "down" }));
    flow.send_ticket("tkt-enrich", "Broken again.").await;
    let topology = flow.env.topology();
    let dead = take(&flow.env, &topology.dead_queue(), 1, DEADLINE).await;

    assert_eq!(header(&dead[0], "hf-stage").as_deref(), Some("enrich"));
    assert_eq!(
        header(&dead[0], "hf-error-class").as_deref(),
        Some("exhausted")
    );
    let error = header(&dead[0], "hf-error").unwrap();
    assert!(error.starts_with("enrich_http_503"), "{error}");
    assert_eq!(flow.crm.requests_to(&Method::GET, HISTORY).len(), 3);
    assert_eq!(flow.mock.calls_for_prompt_containing("Broken again."), 0);
    assert!(flow.crm.requests_to(&Method::PATCH, TICKETS).is_empty());
    assert!(flow.chat.requests().is_empty());
    flow.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_customer_dead_letters_at_once_as_permanent() {
    let flow = Workflow::start(3).await;
    flow.crm.answer(
        Method::GET,
        HISTORY,
        404,
        json!({ "error": "no such customer" }),
    );
    flow.send_ticket("tkt-404", "Where is my order?").await;
    let topology = flow.env.topology();
    let dead = take(&flow.env, &topology.dead_queue(), 1, DEADLINE).await;

    assert_eq!(header(&dead[0], "hf-stage").as_deref(), Some("enrich"));
    assert_eq!(
        header(&dead[0], "hf-error-class").as_deref(),
        Some("permanent")
    );
    let error = header(&dead[0], "hf-error").unwrap();
    assert!(error.starts_with("enrich_http_404"), "{error}");
    assert!(error.contains("no such customer"), "{error}");
    assert_eq!(flow.crm.requests_to(&Method::GET, HISTORY).len(), 1);
    flow.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_that_is_not_json_is_retried_then_dead_lettered() {
    let flow = Workflow::start(2).await;
    flow.crm
        .answer_raw(Method::GET, HISTORY, 200, "<html>maintenance</html>");
    flow.send_ticket("tkt-html", "Where is my order?").await;
    let topology = flow.env.topology();
    let dead = take(&flow.env, &topology.dead_queue(), 1, DEADLINE).await;

    assert_eq!(header(&dead[0], "hf-stage").as_deref(), Some("enrich"));
    assert_eq!(
        header(&dead[0], "hf-error-class").as_deref(),
        Some("exhausted")
    );
    let error = header(&dead[0], "hf-error").unwrap();
    assert!(error.starts_with("enrich_not_json"), "{error}");
    assert_eq!(flow.crm.requests_to(&Method::GET, HISTORY).len(), 2);
    flow.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_id_with_path_syntax_reaches_the_crm_as_one_encoded_segment() {
    let flow = Workflow::start(3).await;
    flow.send_ticket(
        "../../admin?x=1",
        "My order arrived broken, I want a refund.",
    )
    .await;
    flow.wait_jobs("succeeded", 1).await;

    let updates = flow.crm.requests_to(&Method::PATCH, TICKETS);
    assert_eq!(updates.len(), 1, "{:?}", flow.crm.requests());
    assert_eq!(updates[0].path, "/api/tickets/..%2F..%2Fadmin%3Fx%3D1");
    assert!(
        flow.crm
            .requests()
            .iter()
            .all(|r| !r.path.starts_with("/admin")),
        "nothing escaped the tickets path"
    );
    // The JSON body is not a URL: the id is written as is there.
    let posts = flow.chat.requests_to(&Method::POST, CHAT);
    assert_eq!(posts[0].json()["ticket"], "../../admin?x=1");
    flow.stop().await;
}
