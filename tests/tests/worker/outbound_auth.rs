//! Outbound authentication end to end: an OAuth 2.0 token shared by a fleet
//! (one token request per expiry), refreshed when it expires, refreshed once
//! and retried once on a 401; a token endpoint's refusal dead-lettered like
//! any refusal; JWT bearer tokens the receiver verifies; mutual TLS.

use std::time::Duration;

use axum::http::Method;
use hookfleet_common::config::Secret;
use hookfleet_tests::env::TestEnv;
use hookfleet_tests::fleet::{
    JobPublisher, WorkerHandle, header, mock_openai, pipeline, take, worker_settings,
};
use hookfleet_tests::logs::Logs;
use hookfleet_tests::mock_ai::{MockAi, MockConfig};
use hookfleet_tests::settings::Settings;
use hookfleet_tests::stand_in::StandIn;
use hookfleet_tests::stand_ins::oauth::OAuthStandIn;
use hookfleet_tests::stand_ins::tls::{MtlsStandIn, Pki};
use hookfleet_tests::wait::wait_until;
use hookfleet_worker::auth::{OAuth2, TokenStore};
use hookfleet_worker::config::{
    ClientAuth, EnrichStepConfig, HttpAuth, HttpSinkConfig, JwtAlgorithm, JwtAuth,
    OAuth2ClientCredentials, ProviderConfig, ProviderKind, SinkConfig, TlsConfig,
};
use hookfleet_worker::metrics::WorkerMetrics;
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(30);
const CLIENT_ID: &str = "hookfleet-test";
const CLIENT_SECRET: &str = "s3cret/with+symbols";

fn oauth(server: &OAuthStandIn, secret: &str) -> OAuth2ClientCredentials {
    OAuth2ClientCredentials {
        token_url: server.token_url(),
        client_id: CLIENT_ID.into(),
        client_secret: Secret::new(secret),
        scope: Some("orders.read records.write".into()),
        audience: None,
        client_auth: ClientAuth::Body,
        refresh_margin: Duration::from_secs(1),
        timeout: Duration::from_secs(5),
    }
}

fn sink(name: &str, url: String, auth: Option<HttpAuth>) -> HttpSinkConfig {
    HttpSinkConfig {
        name: name.into(),
        method: "PATCH".into(),
        url,
        headers: Default::default(),
        body: None,
        when: None,
        auth,
        tls: None,
        signing_secret: None,
        timeout: Duration::from_secs(5),
        follow_redirects: false,
        success_when: None,
    }
}

/// Settings with one pipeline `p` on the mock whose only sink is `sink`, and
/// optionally an enrichment step.
fn settings_with(
    env: &TestEnv,
    mock: &MockAi,
    sink: HttpSinkConfig,
    enrich: Option<EnrichStepConfig>,
) -> Settings {
    let mut settings = worker_settings(env, 3);
    settings
        .worker
        .providers
        .insert("mock".into(), mock_openai(mock));
    let mut p = pipeline("p", "mock", "Order {{ payload.n }}: thanks, great work");
    p.sinks = vec![SinkConfig::Http(Box::new(sink))];
    p.enrich = enrich.into_iter().collect();
    settings.worker.pipelines = vec![p];
    settings
}

fn enrich_step(url: String, auth: HttpAuth) -> EnrichStepConfig {
    EnrichStepConfig {
        name: "orders".into(),
        method: "GET".into(),
        url,
        headers: Default::default(),
        body: None,
        auth: Some(auth),
        tls: None,
        timeout: Duration::from_secs(5),
        follow_redirects: false,
    }
}

/// The dead letter's `hf-error` starts with `reason`.
fn assert_reason(dead: &lapin::message::BasicGetMessage, reason: &str) {
    let error = header(dead, "hf-error").unwrap_or_default();
    assert!(error.starts_with(&format!("{reason}: ")), "{error}");
}

async fn publish_and_wait(jobs: &JobPublisher, workers: &[&WorkerHandle], from: u64, to: u64) {
    for n in from..to {
        jobs.publish("shop", "orders.create", &json!({ "n": n }))
            .await;
    }
    wait_until(DEADLINE, || {
        let done: u64 = workers.iter().map(|w| w.jobs("p", "succeeded")).sum();
        async move { done >= to - 1 }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_workers_and_many_jobs_share_one_oauth_token() {
    let env = TestEnv::new().await;
    let mock = MockAi::start(MockConfig::default()).await;
    let server = OAuthStandIn::start(CLIENT_ID, CLIENT_SECRET, Duration::from_secs(3600)).await;
    let auth = HttpAuth::OAuth2ClientCredentials(Box::new(oauth(&server, CLIENT_SECRET)));
    let settings = settings_with(
        &env,
        &mock,
        sink(
            "crm",
            format!("{}/api/records/{{{{ payload.n }}}}", server.url()),
            Some(auth.clone()),
        ),
        Some(enrich_step(
            format!("{}/api/orders/{{{{ payload.n }}}}", server.url()),
            auth,
        )),
    );
    let a = WorkerHandle::start_consuming(settings.clone()).await;
    let b = WorkerHandle::start_consuming(settings.clone()).await;
    let c = WorkerHandle::start_consuming(settings).await;
    let jobs = JobPublisher::new(&env).await;

    publish_and_wait(&jobs, &[&a, &b, &c], 1, 31).await;

    let tokens = server.token_requests();
    assert_eq!(tokens.len(), 1, "one token request for the whole fleet");
    let counted: u64 = [&a, &b, &c]
        .iter()
        .map(|w| w.oauth_token_requests("issued"))
        .sum();
    assert_eq!(
        counted, 1,
        "the one request is counted by the worker that made it"
    );
    let form = &tokens[0];
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["client_id"], CLIENT_ID);
    assert_eq!(form["client_secret"], CLIENT_SECRET);
    assert_eq!(form["scope"], "orders.read records.write");
    let api = server.api_requests();
    assert_eq!(api.len(), 60, "an enrichment and a sink request per job");
    assert!(
        api.iter()
            .all(|r| r.token.as_deref() == Some("tok-1") && r.status == 200)
    );
    assert!(api.iter().any(|r| r.method == Method::PATCH));
    jobs.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_replaced_by_a_fresh_one() {
    let env = TestEnv::new().await;
    let mock = MockAi::start(MockConfig::default()).await;
    // Two seconds of life, one of margin: the worker keeps it one second.
    let server = OAuthStandIn::start(CLIENT_ID, CLIENT_SECRET, Duration::from_secs(2)).await;
    let config = oauth(&server, CLIENT_SECRET);
    let auth = HttpAuth::OAuth2ClientCredentials(Box::new(config.clone()));
    let settings = settings_with(
        &env,
        &mock,
        sink("crm", format!("{}/api/records/1", server.url()), Some(auth)),
        None,
    );
    let worker = WorkerHandle::start_consuming(settings.clone()).await;
    let jobs = JobPublisher::new(&env).await;
    publish_and_wait(&jobs, &[&worker], 1, 2).await;

    // The token lapses from the fleet's store on its own.
    let store = TokenStore::new(
        env.redis(),
        env.topology(),
        settings.redis.timeout,
        WorkerMetrics::new().unwrap(),
    );
    let grant = OAuth2::new(&config, reqwest::Client::new(), None, store.clone()).unwrap();
    wait_until(Duration::from_secs(10), || {
        let store = store.clone();
        let key = grant.key().clone();
        async move { !store.is_stored(&key).await }
    })
    .await;
    publish_and_wait(&jobs, &[&worker], 2, 3).await;

    assert_eq!(server.token_requests().len(), 2);
    let api = server.api_requests();
    let used: Vec<_> = api.iter().map(|r| r.token.clone().unwrap()).collect();
    assert_eq!(used, ["tok-1", "tok-2"]);
    assert!(api.iter().all(|r| r.status == 200));
    jobs.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refreshed_once_and_the_request_retried_once() {
    let env = TestEnv::new().await;
    let mock = MockAi::start(MockConfig::default()).await;
    let server = OAuthStandIn::start(CLIENT_ID, CLIENT_SECRET, Duration::from_secs(3600)).await;
    let auth = HttpAuth::OAuth2ClientCredentials(Box::new(oauth(&server, CLIENT_SECRET)));
    let settings = settings_with(
        &env,
        &mock,
        sink("crm", format!("{}/api/records/1", server.url()), Some(auth)),
        None,
    );
    let worker = WorkerHandle::start_consuming(settings).await;
    let jobs = JobPublisher::new(&env).await;
    publish_and_wait(&jobs, &[&worker], 1, 2).await;

    server.revoke_issued();
    publish_and_wait(&jobs, &[&worker], 2, 3).await;

    assert_eq!(server.token_requests().len(), 2, "one refresh");
    let api = server.api_requests();
    let seen: Vec<_> = api
        .iter()
        .map(|r| (r.token.clone().unwrap(), r.status))
        .collect();
    assert_eq!(
        seen,
        [
            ("tok-1".to_owned(), 200),
            ("tok-1".to_owned(), 401),
            ("tok-2".to_owned(), 200)
        ],
        "one retry, with the fresh token"
    );
    assert_eq!(worker.jobs("p", "succeeded"), 2);
    jobs.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_still_refused_after_one_refresh_fails_the_job_permanently() {
    let logs = Logs::capture();
    let env = TestEnv::new().await;
    let mock = MockAi::start(MockConfig::default()).await;
    let server = OAuthStandIn::start(CLIENT_ID, CLIENT_SECRET, Duration::from_secs(3600)).await;
    server.refuse_all();
    let auth = HttpAuth::OAuth2ClientCredentials(Box::new(oauth(&server, CLIENT_SECRET)));
    let settings = settings_with(
        &env,
        &mock,
        sink("crm", format!("{}/api/records/1", server.url()), Some(auth)),
        None,
    );
    let _worker = WorkerHandle::start_consuming(settings).await;
    let jobs = JobPublisher::new(&env).await;
    jobs.publish("shop", "orders.create", &json!({ "n": 1 }))
        .await;

    let dead = take(&env, &env.topology().dead_queue(), 1, DEADLINE).await;
    assert_reason(&dead[0], "sink_http_401");
    assert_eq!(
        header(&dead[0], "hf-error-class").as_deref(),
        Some("permanent")
    );
    assert_eq!(
        server.token_requests().len(),
        2,
        "the first token and one refresh"
    );
    let statuses: Vec<_> = server.api_requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [401, 401], "one request and one retry");
    let logged = logs.text();
    assert!(logged.contains("sink_http_401"), "the failure is logged");
    for secret in ["tok-1", "tok-2", CLIENT_SECRET, "s3cret%2Fwith"] {
        assert!(!logged.contains(secret), "{secret} was logged");
    }
    jobs.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_refusing_the_client_dead_letters_without_calling_the_api() {
    let env = TestEnv::new().await;
    let mock = MockAi::start(MockConfig::default()).await;
    let server = OAuthStandIn::start(CLIENT_ID, CLIENT_SECRET, Duration::from_secs(3600)).await;
    let auth = HttpAuth::OAuth2ClientCredentials(Box::new(oauth(&server, "wrong-secret")));
    let settings = settings_with(
        &env,
        &mock,
        sink("crm", format!("{}/api/records/1", server.url()), Some(auth)),
        None,
    );
    let worker = WorkerHandle::start_consuming(settings).await;
    let jobs = JobPublisher::new(&env).await;
    jobs.publish("shop", "orders.create", &json!({ "n": 1 }))
        .await;

    let dead = take(&env, &env.topology().dead_queue(), 1, DEADLINE).await;
    assert_reason(&dead[0], "sink_token_http_401");
    assert_eq!(worker.oauth_token_requests("failed"), 1);
    assert_eq!(worker.oauth_token_requests("issued"), 0);
    let error = header(&dead[0], "hf-error").unwrap_or_default();
    assert!(!error.contains("wrong-secret"), "{error}");
    assert_eq!(server.token_requests().len(), 1);
    assert!(server.api_requests().is_empty());
    jobs.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_jwt_verifies_at_the_receiver_with_its_claims() {
    let env = TestEnv::new().await;
    let mock = MockAi::start(MockConfig::default()).await;
    let target = StandIn::start().await;
    target.answer(Method::PATCH, "/", 204, json!(null));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let jwt = JwtAuth {
        algorithm: JwtAlgorithm::RS256,
        key: Secret::new(key.serialize_pem()),
        issuer: Some("hookfleet".into()),
        audience: Some("https://api.example.com".into()),
        subject: Some("orders-bot".into()),
        lifetime: Duration::from_secs(120),
        key_id: Some("k1".into()),
        claims: [("tenant".to_owned(), json!("acme"))].into(),
    };
    let settings = settings_with(
        &env,
        &mock,
        sink(
            "api",
            format!("{}/records/1", target.url()),
            Some(HttpAuth::Jwt(Box::new(jwt))),
        ),
        None,
    );
    let worker = WorkerHandle::start_consuming(settings).await;
    let jobs = JobPublisher::new(&env).await;
    publish_and_wait(&jobs, &[&worker], 1, 2).await;

    let request = &target.requests_to(&Method::PATCH, "/records/1")[0];
    let token = request
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&["hookfleet"]);
    validation.set_audience(&["https://api.example.com"]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let decoding =
        jsonwebtoken::DecodingKey::from_rsa_pem(key.public_key_pem().as_bytes()).unwrap();
    let verified =
        jsonwebtoken::decode::<serde_json::Value>(token, &decoding, &validation).unwrap();
    assert_eq!(verified.header.kid.as_deref(), Some("k1"));
    assert_eq!(verified.claims["sub"], "orders-bot");
    assert_eq!(verified.claims["tenant"], "acme");
    let lifetime =
        verified.claims["exp"].as_u64().unwrap() - verified.claims["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 120);
    jobs.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_succeeds_with_the_client_certificate_and_fails_permanently_without() {
    let env = TestEnv::new().await;
    let mock = MockAi::start(MockConfig::default()).await;
    let pki = Pki::generate();
    let server = MtlsStandIn::start(&pki).await;
    let with_cert = TlsConfig {
        client_cert: Some(pki.client_cert.clone()),
        client_key: Some(Secret::new(hookfleet_tests::stand_ins::tls::read(
            &pki.client_key,
        ))),
        ca: Some(pki.ca.clone()),
    };
    let without_cert = TlsConfig {
        ca: Some(pki.ca.clone()),
        ..TlsConfig::default()
    };
    let mut good = sink("good", format!("{}/records/1", server.url()), None);
    good.tls = Some(with_cert);
    let mut bad = sink("bad", format!("{}/records/1", server.url()), None);
    bad.tls = Some(without_cert);
    let mut settings = settings_with(&env, &mock, good, None);
    let mut q = pipeline("q", "mock", "Order {{ payload.n }}");
    q.sinks = vec![SinkConfig::Http(Box::new(bad))];
    settings.worker.pipelines.push(q);
    let worker = WorkerHandle::start_consuming(settings).await;
    let jobs = JobPublisher::new(&env).await;
    jobs.publish("shop", "orders.create", &json!({ "n": 1 }))
        .await;

    let dead = take(&env, &env.topology().dead_queue(), 1, DEADLINE).await;
    assert_eq!(header(&dead[0], "hf-pipeline").as_deref(), Some("q"));
    assert_reason(&dead[0], "sink_tls");
    assert_eq!(
        header(&dead[0], "hf-error-class").as_deref(),
        Some("permanent")
    );
    let error = header(&dead[0], "hf-error").unwrap_or_default();
    assert!(error.contains("TLS with `https://127.0.0.1:"), "{error}");
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    wait_until(DEADLINE, || {
        let done = worker.jobs("p", "succeeded");
        async move { done >= 1 }
    })
    .await;
    assert_eq!(
        server.served(),
        1,
        "only the request with the certificate is served"
    );
    assert!(server.refused() >= 1);
    jobs.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_key_reaches_the_api_and_a_provider_sends_its_key_in_a_named_header() {
    let env = TestEnv::new().await;
    let api = StandIn::start().await;
    api.answer(Method::PATCH, "/", 204, json!(null));
    // An Azure OpenAI-style deployment: the key in `api-key`, no bearer.
    api.answer(
        Method::POST,
        "/openai/",
        200,
        json!({
            "model": "gpt-4o-mini",
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": "{\"ok\":true}" } }],
            "usage": { "prompt_tokens": 5, "completion_tokens": 3 }
        }),
    );
    let mut settings = worker_settings(&env, 3);
    let azure = ProviderConfig {
        kind: ProviderKind::Openai,
        base_url: Some(format!("{}/openai/deployments/gpt4o", api.url())),
        api_key: Some(Secret::new("azure-key-1")),
        timeout: Duration::from_secs(5),
        anthropic_version: "2023-06-01".into(),
        api_key_header: Some("api-key".into()),
        auth: None,
        tls: None,
    };
    settings.worker.providers.insert("azure".into(), azure);
    let query = HttpAuth::Query {
        name: "api_key".into(),
        value: Secret::new("q&key"),
    };
    let mut p = pipeline("p", "azure", "Order {{ payload.n }}");
    p.sinks = vec![SinkConfig::Http(Box::new(sink(
        "crm",
        format!("{}/records/{{{{ payload.n }}}}?fields=tags", api.url()),
        Some(query),
    )))];
    settings.worker.pipelines = vec![p];
    let worker = WorkerHandle::start_consuming(settings).await;
    let jobs = JobPublisher::new(&env).await;
    publish_and_wait(&jobs, &[&worker], 1, 2).await;

    let ai = &api.requests_to(&Method::POST, "/openai/deployments/gpt4o/chat/completions")[0];
    assert_eq!(ai.header("api-key"), Some("azure-key-1"));
    assert_eq!(ai.header("authorization"), None);
    let crm = &api.requests_to(&Method::PATCH, "/records/1")[0];
    assert_eq!(crm.query.as_deref(), Some("fields=tags&api_key=q%26key"));
    jobs.close().await;
}

/// An OpenAI chat completion answering `{"ok":true}`.
fn completion() -> serde_json::Value {
    json!({
        "model": "gpt-4o-mini",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": "{\"ok\":true}" } }],
        "usage": { "prompt_tokens": 5, "completion_tokens": 3 }
    })
}

/// An OpenAI-style provider at `base_url` with `auth` and `tls`, no API key.
fn provider(base_url: String, auth: Option<HttpAuth>, tls: Option<TlsConfig>) -> ProviderConfig {
    ProviderConfig {
        kind: ProviderKind::Openai,
        base_url: Some(base_url),
        api_key: None,
        timeout: Duration::from_secs(5),
        anthropic_version: "2023-06-01".into(),
        api_key_header: None,
        auth,
        tls,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_behind_oauth_gets_the_shared_token_and_refreshes_it_on_a_401() {
    let env = TestEnv::new().await;
    let gateway = OAuthStandIn::start(CLIENT_ID, CLIENT_SECRET, Duration::from_secs(3600)).await;
    gateway.answer(completion());
    let auth = HttpAuth::OAuth2ClientCredentials(Box::new(oauth(&gateway, CLIENT_SECRET)));
    let mut settings = worker_settings(&env, 3);
    settings.worker.providers.insert(
        "gateway".into(),
        provider(format!("{}/v1", gateway.url()), Some(auth), None),
    );
    let mut p = pipeline("p", "gateway", "Order {{ payload.n }}");
    p.cache = hookfleet_worker::config::CacheConfig::Off;
    settings.worker.pipelines = vec![p];
    let worker = WorkerHandle::start_consuming(settings).await;
    let jobs = JobPublisher::new(&env).await;
    publish_and_wait(&jobs, &[&worker], 1, 3).await;
    gateway.revoke_issued();
    publish_and_wait(&jobs, &[&worker], 3, 4).await;

    assert_eq!(gateway.token_requests().len(), 2, "one token, one refresh");
    let seen: Vec<_> = gateway
        .api_requests()
        .iter()
        .map(|r| (r.path.clone(), r.token.clone().unwrap(), r.status))
        .collect();
    let completions = "/v1/chat/completions".to_owned();
    assert_eq!(
        seen,
        [
            (completions.clone(), "tok-1".to_owned(), 200),
            (completions.clone(), "tok-1".to_owned(), 200),
            (completions.clone(), "tok-1".to_owned(), 401),
            (completions, "tok-2".to_owned(), 200),
        ]
    );
    jobs.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_behind_mutual_tls_answers_with_the_certificate_and_fails_permanently_without() {
    let env = TestEnv::new().await;
    let pki = Pki::generate();
    let gateway = MtlsStandIn::answering(&pki, completion()).await;
    let with_cert = TlsConfig {
        client_cert: Some(pki.client_cert.clone()),
        client_key: Some(Secret::new(hookfleet_tests::stand_ins::tls::read(
            &pki.client_key,
        ))),
        ca: Some(pki.ca.clone()),
    };
    let without_cert = TlsConfig {
        ca: Some(pki.ca.clone()),
        ..TlsConfig::default()
    };
    let base_url = format!("{}/v1", gateway.url());
    let mut settings = worker_settings(&env, 3);
    settings.worker.providers.insert(
        "good".into(),
        provider(base_url.clone(), None, Some(with_cert)),
    );
    settings
        .worker
        .providers
        .insert("bad".into(), provider(base_url, None, Some(without_cert)));
    let mut p = pipeline("p", "good", "Order {{ payload.n }}");
    p.cache = hookfleet_worker::config::CacheConfig::Off;
    let mut q = pipeline("q", "bad", "Order {{ payload.n }}");
    q.cache = hookfleet_worker::config::CacheConfig::Off;
    settings.worker.pipelines = vec![p, q];
    let worker = WorkerHandle::start_consuming(settings).await;
    let jobs = JobPublisher::new(&env).await;
    jobs.publish("shop", "orders.create", &json!({ "n": 1 }))
        .await;

    let dead = take(&env, &env.topology().dead_queue(), 1, DEADLINE).await;
    assert_eq!(header(&dead[0], "hf-pipeline").as_deref(), Some("q"));
    assert_reason(&dead[0], "ai_tls");
    assert_eq!(
        header(&dead[0], "hf-error-class").as_deref(),
        Some("permanent")
    );
    wait_until(DEADLINE, || {
        let done = worker.jobs("p", "succeeded");
        async move { done >= 1 }
    })
    .await;
    assert_eq!(gateway.served(), 1);
    jobs.close().await;
}
