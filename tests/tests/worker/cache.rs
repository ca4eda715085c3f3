//! The response cache seen through real workers (issue 4, items 4 and 5): a hit
//! costs neither the limiter nor the provider, entries live for the pipeline's
//! TTL, sampling requests are cached only when the pipeline opts in, cache
//! namespaces keep pipelines apart, and identical jobs across a fleet make one
//! provider call — even when the worker making it is killed mid-call.
//!
//! Provider calls are counted by the mock, per prompt; cache outcomes by each
//! worker's `cache_requests_total{result}`.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use hookfleet_common::redis::{self as hredis, redis};
use hookfleet_tests::env::{AMQP_URL, REDIS_URL, TestEnv};
use hookfleet_tests::fleet::{
    JobPublisher, WorkerHandle, json_body, mock_openai, pending_jobs, pipeline, take,
    worker_settings,
};
use hookfleet_tests::mock_ai::{MockAi, MockConfig};
use hookfleet_tests::settings::Settings;
use hookfleet_tests::wait::wait_until;
use hookfleet_worker::config::{CacheConfig, CacheSettings, ModelLimits, PipelineConfig};
use lapin::message::BasicGetMessage;
use serde_json::json;

const MODEL: &str = "gpt-4o-mini";
/// The prompt is the ticket body alone, so equal bodies are equal requests
/// whatever the message id.
const USER: &str = "{{ payload.ticket.body }}";

fn settings(env: &TestEnv, mock: &MockAi, pipelines: Vec<PipelineConfig>) -> Settings {
    let mut settings = worker_settings(env, 3);
    settings
        .worker
        .providers
        .insert("mock".into(), mock_openai(mock));
    settings.worker.pipelines = pipelines;
    settings.worker.limits.models = vec![ModelLimits {
        provider: "mock".into(),
        model: MODEL.into(),
        rpm: Some(60_000),
        tpm: None,
        burst_requests: None,
        burst_tokens: None,
        refund_unused: true,
    }];
    settings
}

fn cached(settings: CacheSettings) -> CacheConfig {
    CacheConfig::On(settings)
}

fn ticket(body: &str) -> serde_json::Value {
    json!({ "ticket": { "body": body } })
}

/// Publishes one job and returns its single result.
async fn one_result(env: &TestEnv, jobs: &JobPublisher, body: &str) -> BasicGetMessage {
    jobs.publish("support", "ticket.created", &ticket(body))
        .await;
    let mut results = take(
        env,
        &env.topology().results_queue(),
        1,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(results.len(), 1);
    results.remove(0)
}

fn is_cached(result: &BasicGetMessage) -> bool {
    json_body(result)["cached"]
        .as_bool()
        .expect("`cached` in the result")
}

fn cache_count(worker: &WorkerHandle, result: &str) -> u64 {
    worker
        .metrics
        .cache_requests
        .with_label_values(&[result])
        .get()
}

fn limiter_acquisitions(worker: &WorkerHandle) -> u64 {
    worker
        .metrics
        .ratelimit_wait
        .with_label_values(&["mock", MODEL])
        .get_sample_count()
}

/// Stored answers of the namespace (`{ns}:cache:{…}`, not the flight locks).
async fn stored_answers(env: &TestEnv) -> usize {
    let mut cmd = redis::cmd("KEYS");
    cmd.arg(format!("{}:cache:*", env.namespace));
    let keys: Vec<String> = hredis::run(&env.redis(), Duration::from_secs(2), &cmd)
        .await
        .unwrap();
    keys.iter().filter(|k| !k.ends_with(":lock")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_hit_skips_the_limiter_and_the_provider() {
    let env = TestEnv::new().await;
    let mock = MockAi::start(MockConfig::default()).await;
    let worker = WorkerHandle::start_consuming(settings(
        &env,
        &mock,
        vec![pipeline("triage", "mock", USER)],
    ))
    .await;
    let jobs = JobPublisher::new(&env).await;

    let first = one_result(&env, &jobs, "My parcel is late").await;
    assert!(!is_cached(&first));
    assert_eq!(mock.counters().requests, 1);
    assert_eq!(limiter_acquisitions(&worker), 1);

    let second = one_result(&env, &jobs, "My parcel is late").await;
    assert!(is_cached(&second), "the second identical job is a hit");
    assert_eq!(json_body(&second)["output"], json_body(&first)["output"]);
    assert_eq!(mock.counters().requests, 1, "the provider was not called");
    assert_eq!(limiter_acquisitions(&worker), 1, "nor the limiter asked");
    assert_eq!(cache_count(&worker, "miss"), 1);
    assert_eq!(cache_count(&worker, "hit"), 1);
    assert_eq!(cache_count(&worker, "bypassed"), 0);

    worker.stop().await.unwrap();
    jobs.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_answer_expires_after_the_pipelines_ttl() {
    let env = TestEnv::new().await;
    let mock = MockAi::start(MockConfig::default()).await;
    let triage = PipelineConfig {
        cache: cached(CacheSettings {
            ttl: Duration::from_secs(1),
            ..CacheSettings::default()
        }),
        ..pipeline("triage", "mock", USER)
    };
    let worker = WorkerHandle::start_consuming(settings(&env, &mock, vec![triage])).await;
    let jobs = JobPublisher::new(&env).await;

    assert!(!is_cached(&one_result(&env, &jobs, "Refund please").await));
    assert_eq!(stored_answers(&env).await, 1);
    wait_until(Duration::from_secs(5), || async {
        stored_answers(&env).await == 0
    })
    .await;
    let again = one_result(&env, &jobs, "Refund please").await;
    assert!(!is_cached(&again), "the entry expired: a fresh call");
    assert_eq!(mock.counters().requests, 2);
    assert_eq!(cache_count(&worker, "miss"), 2);
    assert_eq!(cache_count(&worker, "hit"), 0);

    worker.stop().await.unwrap();
    jobs.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_requests_are_cached_only_when_the_pipeline_opts_in() {
    let env = TestEnv::new().await;
    let mock = MockAi::start(MockConfig::default()).await;
    // Two pipelines at temperature 0.7, told apart by event type: one with the
    // default cache (deterministic requests only), one opting in.
    let sampling = PipelineConfig {
        event_types: vec!["ticket.sampled".into()],
        temperature: Some(0.7),
        ..pipeline("sampling", "mock", USER)
    };
    let opted_in = PipelineConfig {
        event_types: vec!["ticket.opted".into()],
        temperature: Some(0.7),
        cache: cached(CacheSettings {
            nondeterministic: true,
            ..CacheSettings::default()
        }),
        ..pipeline("opted-in", "mock", USER)
    };
    let worker =
        WorkerHandle::start_consuming(settings(&env, &mock, vec![sampling, opted_in])).await;
    let jobs = JobPublisher::new(&env).await;
    let results = env.topology().results_queue();

    for _ in 0..2 {
        jobs.publish("support", "ticket.sampled", &ticket("Sampled A"))
            .await;
    }
    let sampled = take(&env, &results, 2, Duration::from_secs(15)).await;
    assert!(sampled.iter().all(|r| !is_cached(r)));
    assert_eq!(mock.calls_for_prompt_containing("Sampled A"), 2);
    assert_eq!(
        cache_count(&worker, "miss") + cache_count(&worker, "hit"),
        0,
        "not cached, so not looked up"
    );

    for _ in 0..2 {
        jobs.publish("support", "ticket.opted", &ticket("Opted B"))
            .await;
        // One after the other, so the second is a plain hit.
        wait_until(Duration::from_secs(15), || {
            let done = worker.jobs("opted-in", "succeeded");
            async move { done >= 1 }
        })
        .await;
    }
    let opted = take(&env, &results, 2, Duration::from_secs(15)).await;
    assert_eq!(
        opted.iter().filter(|r| is_cached(r)).count(),
        1,
        "the opted-in pipeline caches a sampling request"
    );
    assert_eq!(mock.calls_for_prompt_containing("Opted B"), 1);
    assert_eq!(cache_count(&worker, "miss"), 1);
    assert_eq!(cache_count(&worker, "hit"), 1);

    worker.stop().await.unwrap();
    jobs.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_with_different_cache_namespaces_do_not_share_answers() {
    let env = TestEnv::new().await;
    let mock = MockAi::start(MockConfig::default()).await;
    // The same request from three pipelines: two share namespace `tenant-a`,
    // one has `tenant-b`.
    let in_namespace = |name: &str, namespace: &str| PipelineConfig {
        cache: cached(CacheSettings {
            namespace: Some(namespace.into()),
            ..CacheSettings::default()
        }),
        ..pipeline(name, "mock", USER)
    };
    let pipelines = vec![
        in_namespace("a-one", "tenant-a"),
        in_namespace("a-two", "tenant-a"),
        in_namespace("b-one", "tenant-b"),
    ];
    let worker = WorkerHandle::start_consuming(settings(&env, &mock, pipelines)).await;
    let jobs = JobPublisher::new(&env).await;
    let results = env.topology().results_queue();

    jobs.publish("support", "ticket.created", &ticket("Shared words"))
        .await;
    let first = take(&env, &results, 3, Duration::from_secs(15)).await;
    assert_eq!(first.len(), 3, "one result per pipeline");
    assert_eq!(
        mock.calls_for_prompt_containing("Shared words"),
        2,
        "one call per namespace"
    );
    jobs.publish("support", "ticket.created", &ticket("Shared words"))
        .await;
    let second = take(&env, &results, 3, Duration::from_secs(15)).await;
    assert!(second.iter().all(is_cached));
    assert_eq!(mock.calls_for_prompt_containing("Shared words"), 2);
    assert_eq!(cache_count(&worker, "miss"), 2);
    assert_eq!(
        cache_count(&worker, "hit") + cache_count(&worker, "coalesced"),
        4
    );

    worker.stop().await.unwrap();
    jobs.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_identical_jobs_across_four_workers_make_one_provider_call() {
    const JOBS: usize = 50;
    let env = TestEnv::new().await;
    let mock = MockAi::start(MockConfig {
        latency: Duration::from_secs(1),
        ..MockConfig::default()
    })
    .await;
    let mut workers = Vec::new();
    for _ in 0..4 {
        let settings = settings(&env, &mock, vec![pipeline("triage", "mock", USER)]);
        workers.push(WorkerHandle::start_consuming(settings).await);
    }
    let jobs = JobPublisher::new(&env).await;
    let ids: BTreeSet<String> = futures::stream::iter(0..JOBS)
        .map(|_| async {
            jobs.publish("support", "ticket.created", &ticket("Same question"))
                .await
                .message_id
        })
        .buffer_unordered(JOBS)
        .collect()
        .await;

    let n = u32::try_from(JOBS).unwrap();
    let results = take(
        &env,
        &env.topology().results_queue(),
        n,
        Duration::from_secs(30),
    )
    .await;
    let got: BTreeSet<String> = results
        .iter()
        .map(|r| json_body(r)["message_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(results.len(), JOBS);
    assert_eq!(got, ids, "a result for every job");
    assert_eq!(mock.counters().requests, 1, "exactly one provider call");
    assert_eq!(results.iter().filter(|r| !is_cached(r)).count(), 1);
    let total = |result: &str| workers.iter().map(|w| cache_count(w, result)).sum::<u64>();
    assert_eq!(total("miss"), 1);
    assert_eq!(total("hit") + total("coalesced"), JOBS as u64 - 1);
    assert!(
        total("coalesced") >= 1,
        "jobs arriving during the call waited for it"
    );
    assert!(
        workers
            .iter()
            .filter(|w| w.jobs("triage", "succeeded") > 0)
            .count()
            > 1,
        "the jobs were spread over the fleet"
    );

    for worker in workers {
        worker.stop().await.unwrap();
    }
    jobs.close().await;
}

/// A real worker process leads a flight and is SIGKILLed mid-call. Its cache
/// lock is no longer renewed, so once its `lease` (1 s) lapses the other worker,
/// waiting on the same request, makes the call itself; the killed worker's job
/// comes back from the broker and, once its job lease (`worker.lease_ttl`, 5 s)
/// lapses too, is answered from the cache. (The job lease must outlast the
/// provider's `timeout` plus the limiter's `max_wait`, or the worker refuses
/// the config.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_flight_leader_is_taken_over_when_its_lock_expires() {
    let env = TestEnv::new().await;
    let mock = MockAi::start(MockConfig {
        latency: Duration::from_secs(30),
        ..MockConfig::default()
    })
    .await;
    let lease = CacheSettings {
        lease: Duration::from_secs(1),
        ..CacheSettings::default()
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Removed when dropped, also when the test panics.
    let dir = tempfile::Builder::new()
        .prefix(&format!("hf-{}-", env.namespace))
        .tempdir()
        .unwrap();
    std::fs::write(dir.path().join("api-key"), "sk-test").unwrap();
    // The same pipeline as `pipeline("triage", "mock", USER)` below, so both
    // workers compute the same cache key.
    let config = format!(
        r#"namespace = "{ns}"
[amqp]
url = "{AMQP_URL}"
queue_expires = "10m"
retry_tiers = ["200ms", "1s"]
[redis]
url = "{REDIS_URL}"
[worker]
admin_listen = "127.0.0.1:{port}"
lease_ttl = "5s"
# Prefetch 1: the second job cannot queue up behind the first in this process.
concurrency = 1
[worker.limits]
max_wait = "500ms"
[worker.providers.mock]
kind = "openai"
base_url = "{base}/v1"
api_key = {{ secret_file = "{key}" }}
timeout = "4s"
[[worker.pipelines]]
name = "triage"
sources = ["*"]
event_types = ["*"]
provider = "mock"
model = "{MODEL}"
temperature = 0.0
max_tokens = 128
response_format = "json"
system = "You triage support tickets. Answer in JSON."
user = "{{{{ payload.ticket.body }}}}"
cache = {{ lease = "1s" }}
"#,
        ns = env.namespace,
        base = mock.base_url(),
        key = dir.path().join("api-key").display(),
    );
    let path = dir.path().join("hookfleet.toml");
    std::fs::write(&path, config).unwrap();
    let mut leader =
        tokio::process::Command::new(hookfleet_tests::spawn::binary("hookfleet-worker"))
            .arg("--config")
            .arg(&path)
            .arg("run")
            .stdout(std::fs::File::create(dir.path().join("worker.log")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("worker.err")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
    let client = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{port}/readyz");
    wait_until(Duration::from_secs(30), || async {
        client
            .get(&ready)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let jobs = JobPublisher::new(&env).await;
    let first = jobs
        .publish("support", "ticket.created", &ticket("Crash test"))
        .await;
    // Counted on arrival (`requests` counts answers, which take 30 s here).
    let arrived = || mock.calls_for_prompt_containing("Crash test");
    wait_until(Duration::from_secs(10), || {
        let calls = arrived();
        async move { calls >= 1 }
    })
    .await;

    // The second worker takes an identical job while the process's call is in
    // flight: it waits on the flight instead of calling.
    let mut settings = settings(
        &env,
        &mock,
        vec![PipelineConfig {
            cache: cached(lease),
            ..pipeline("triage", "mock", USER)
        }],
    );
    settings.worker.lease_ttl = Duration::from_secs(5);
    settings.worker.limits.max_wait = Duration::from_millis(500);
    if let Some(provider) = settings.worker.providers.get_mut("mock") {
        provider.timeout = Duration::from_secs(4);
    }
    let follower = WorkerHandle::start_consuming(settings).await;
    let second = jobs
        .publish("support", "ticket.created", &ticket("Crash test"))
        .await;
    wait_until(Duration::from_secs(10), || {
        let inflight = follower.inflight();
        async move { inflight >= 1 }
    })
    .await;
    assert_eq!(arrived(), 1, "the follower waits on the flight");

    leader.start_kill().unwrap();
    leader.wait().await.unwrap();
    mock.update_config(|c| c.latency = Duration::ZERO);

    let results = take(
        &env,
        &env.topology().results_queue(),
        2,
        Duration::from_secs(20),
    )
    .await;
    let got: BTreeSet<String> = results
        .iter()
        .map(|r| json_body(r)["message_id"].as_str().unwrap().to_owned())
        .collect();
    let want: BTreeSet<String> = [first.message_id, second.message_id].into();
    assert_eq!(
        got, want,
        "both jobs answered, the killed worker's included"
    );
    assert_eq!(
        mock.calls_for_prompt_containing("Crash test"),
        2,
        "the killed call, and the follower's once the lock expired"
    );
    assert_eq!(cache_count(&follower, "miss"), 1);
    assert_eq!(
        cache_count(&follower, "hit") + cache_count(&follower, "coalesced"),
        1
    );
    assert_eq!(env.ready_count(&env.topology().dead_queue()).await, 0);
    assert_eq!(pending_jobs(&env).await, 0);

    follower.stop().await.unwrap();
    jobs.close().await;
    drop(mock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_fails_the_output_check_is_not_cached_and_the_retry_asks_again() {
    let env = TestEnv::new().await;
    // The first answer to each prompt is prose although JSON was asked for.
    let mock = MockAi::start(MockConfig {
        prose_first_attempts: 1,
        ..MockConfig::default()
    })
    .await;
    let worker = WorkerHandle::start_consuming(settings(
        &env,
        &mock,
        vec![pipeline("triage", "mock", USER)],
    ))
    .await;
    let jobs = JobPublisher::new(&env).await;

    let result = one_result(&env, &jobs, "Is my order lost?").await;
    let body = json_body(&result);
    assert!(body["output_json"].is_object(), "{body}");
    assert_eq!(body["attempts"], 2, "the second attempt succeeded: {body}");
    assert!(!is_cached(&result), "the retry was a fresh call");
    assert_eq!(
        mock.counters().requests,
        2,
        "the retry called the provider again"
    );
    assert_eq!(worker.jobs("triage", "retried"), 1);
    assert_eq!(cache_count(&worker, "hit"), 0, "the prose was never stored");
    assert_eq!(stored_answers(&env).await, 1, "only the JSON answer is");
    assert_eq!(pending_jobs(&env).await, 0);

    worker.stop().await.unwrap();
    jobs.close().await;
}
