//! The response cache and its fleet-wide single flight, against the real Redis:
//! identical concurrent requests from several "workers" (separate `Cache`
//! instances over separate pools) make one provider call; a leader that dies
//! or fails hands over; Redis trouble is reported as a cache error, apart from
//! the computation's own errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hookfleet_worker::config::CacheSettings;

use hookfleet_common::config::RedisConfig;
use hookfleet_common::redis::{self as hredis, redis};
use hookfleet_tests::env::TestEnv;
use hookfleet_tests::mock_ai::{MockAi, MockConfig, Prompt};
use hookfleet_tests::wait::wait_until;
use hookfleet_worker::limits::cache::{
    Cache, CacheError, CacheKey, CacheOutcome, CachedCompletion, FlightError, Lookup,
};
use serde_json::{Value, json};
use tokio::sync::Barrier;
use tokio::time::Instant;

fn caches(env: &TestEnv, n: usize) -> Vec<Cache> {
    (0..n)
        .map(|_| {
            let pool = hredis::pool(&env.settings.redis).unwrap();
            Cache::new(pool, env.topology(), Duration::from_secs(2))
        })
        .collect()
}

fn settings(lease: Duration) -> CacheSettings {
    CacheSettings {
        ttl: Duration::from_secs(60),
        lease,
        max_wait: Duration::from_secs(10),
        ..CacheSettings::default()
    }
}

fn request(user: &str) -> Value {
    json!({
        "messages": [{"role": "user", "content": user}],
        "temperature": 0.0,
        "max_tokens": 64,
    })
}

fn key(namespace: &str, user: &str) -> CacheKey {
    CacheKey::new(namespace, "mock", "gpt-4o-mini", &request(user)).unwrap()
}

fn answer(text: &str) -> CachedCompletion {
    CachedCompletion {
        text: text.into(),
        input_tokens: 3,
        output_tokens: 5,
        model: Some("gpt-4o-mini".into()),
    }
}

/// One call to the mock, as a worker's provider would make it.
async fn call_mock(client: &reqwest::Client, mock_url: &str, user: &str) -> CachedCompletion {
    let body: Value = client
        .post(mock_url)
        .bearer_auth("sk-test")
        .json(&json!({
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": user}],
            "temperature": 0,
            "max_tokens": 64,
        }))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    CachedCompletion {
        text: body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .into(),
        input_tokens: body["usage"]["prompt_tokens"].as_u64().unwrap(),
        output_tokens: body["usage"]["completion_tokens"].as_u64().unwrap(),
        model: body["model"].as_str().map(Into::into),
    }
}

#[tokio::test]
async fn fifty_identical_requests_across_four_workers_make_one_provider_call() {
    let env = TestEnv::new().await;
    let mock = MockAi::start(MockConfig {
        latency: Duration::from_millis(300),
        ..MockConfig::default()
    })
    .await;
    let user = "Summarise ticket 4711: the parcel arrived broken.";
    let k = key("tenant-a", user);
    let workers = caches(&env, 4);
    let start = Arc::new(Barrier::new(50));
    let client = reqwest::Client::new();
    let url = mock.url("/v1/chat/completions");
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (cache, k, start) = (workers[i % 4].clone(), k.clone(), Arc::clone(&start));
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            cache
                .get_or_compute(&k, &settings(Duration::from_secs(5)), || async {
                    Ok::<_, std::convert::Infallible>(call_mock(&client, &url, user).await)
                })
                .await
                .unwrap()
        }));
    }
    let mut outcomes = Vec::new();
    let mut texts = Vec::new();
    for task in tasks {
        let (value, outcome) = task.await.unwrap();
        outcomes.push(outcome);
        texts.push(value.text);
    }
    let prompt = Prompt::from_pairs(&[("user", user)]);
    assert_eq!(mock.counters().calls_for_prompt(&prompt.hash()), 1);
    assert_eq!(texts.len(), 50);
    assert!(texts.iter().all(|t| t == &texts[0]));
    let count = |o| outcomes.iter().filter(|&&x| x == o).count();
    assert_eq!(count(CacheOutcome::Miss), 1);
    assert_eq!(
        count(CacheOutcome::Coalesced) + count(CacheOutcome::Hit),
        49
    );
    assert!(count(CacheOutcome::Coalesced) > 0);

    // Later: a plain hit, on any worker, with no call.
    let (again, outcome) = workers[3]
        .get_or_compute(&k, &settings(Duration::from_secs(5)), || async {
            Err::<CachedCompletion, _>("must not compute")
        })
        .await
        .unwrap();
    assert_eq!(outcome, CacheOutcome::Hit);
    assert_eq!(again.text, texts[0]);
    assert_eq!(mock.counters().calls_for_prompt(&prompt.hash()), 1);
    mock.stop().await.unwrap();
}

#[tokio::test]
async fn a_dead_leaders_claim_lapses_after_its_lease_and_a_waiter_takes_over() {
    let env = TestEnv::new().await;
    let [dead, alive]: [Cache; 2] = caches(&env, 2).try_into().unwrap();
    let k = key("t", "dead leader");
    let lease = Duration::from_millis(600);
    let Lookup::Leader(guard) = dead.lookup(&k, lease).await.unwrap() else {
        panic!("the first lookup leads");
    };
    // The process holding it dies: no fill, no release, no renewal.
    std::mem::forget(guard);
    let began = Instant::now();
    let computed = AtomicUsize::new(0);
    let (value, outcome) = alive
        .get_or_compute(&k, &settings(lease), || async {
            computed.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::convert::Infallible>(answer("recovered"))
        })
        .await
        .unwrap();
    assert_eq!(outcome, CacheOutcome::Miss);
    assert_eq!(value.text, "recovered");
    assert_eq!(computed.load(Ordering::SeqCst), 1);
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1_500),
        "took over after {took:?}"
    );
}

#[tokio::test]
async fn a_leader_slower_than_its_lease_keeps_its_claim_by_renewing_it() {
    let env = TestEnv::new().await;
    let workers = caches(&env, 2);
    let k = key("t", "slow leader");
    let lease = Duration::from_millis(300);
    let computed = Arc::new(AtomicUsize::new(0));
    let run = |cache: Cache, computed: Arc<AtomicUsize>, k: CacheKey| async move {
        cache
            .get_or_compute(&k, &settings(lease), || async {
                computed.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1_200)).await;
                Ok::<_, std::convert::Infallible>(answer("slow"))
            })
            .await
            .unwrap()
    };
    let leader = tokio::spawn(run(workers[0].clone(), Arc::clone(&computed), k.clone()));
    // The leader holds the claim once it computes; only then does the waiter come.
    wait_until(Duration::from_secs(2), || {
        let started = computed.load(Ordering::SeqCst) == 1;
        async move { started }
    })
    .await;
    let waiter = tokio::spawn(run(workers[1].clone(), Arc::clone(&computed), k.clone()));
    assert_eq!(leader.await.unwrap().1, CacheOutcome::Miss);
    assert_eq!(waiter.await.unwrap().1, CacheOutcome::Coalesced);
    assert_eq!(computed.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failed_leader_releases_at_once_and_the_next_waiter_computes() {
    let env = TestEnv::new().await;
    let workers = caches(&env, 3);
    let k = key("t", "failing leader");
    let attempts = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(6));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (cache, k) = (workers[i % 3].clone(), k.clone());
        let (attempts, start) = (Arc::clone(&attempts), Arc::clone(&start));
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let began = Instant::now();
            let result = cache
                .get_or_compute(&k, &settings(Duration::from_secs(30)), || async {
                    let n = attempts.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if n == 0 {
                        Err("provider answered 500")
                    } else {
                        Ok(answer("second time lucky"))
                    }
                })
                .await;
            (result, began.elapsed())
        }));
    }
    let mut failed = 0;
    let mut outcomes = Vec::new();
    for task in tasks {
        let (result, took) = task.await.unwrap();
        // Nobody waited for the 30 s lease: the failure released the claim.
        assert!(took < Duration::from_secs(2), "{took:?}");
        match result {
            Err(FlightError::Compute(e)) => {
                assert_eq!(e, "provider answered 500");
                failed += 1;
            }
            Ok((value, outcome)) => {
                assert_eq!(value.text, "second time lucky");
                outcomes.push(outcome);
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(failed, 1);
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert_eq!(
        outcomes
            .iter()
            .filter(|&&o| o == CacheOutcome::Miss)
            .count(),
        1
    );
}

#[tokio::test]
async fn entries_are_per_namespace_expire_with_their_ttl_and_survive_bad_data() {
    let env = TestEnv::new().await;
    let cache = caches(&env, 1).remove(0);
    let tenant_a = key("tenant-a", "same prompt");
    let tenant_b = key("tenant-b", "same prompt");
    cache
        .put(&tenant_a, &answer("for a"), Duration::from_millis(1_500))
        .await
        .unwrap();
    assert_eq!(cache.get(&tenant_a).await.unwrap(), Some(answer("for a")));
    assert_eq!(cache.get(&tenant_b).await.unwrap(), None);

    let pool = env.redis();
    let mut pttl = redis::cmd("PTTL");
    pttl.arg(cache.value_key(&tenant_a));
    let left: i64 = hredis::run(&pool, Duration::from_secs(2), &pttl)
        .await
        .unwrap();
    assert!((1..=1_500).contains(&left), "PTTL {left}");
    assert!(
        cache
            .value_key(&tenant_a)
            .ends_with(&format!("{{{tenant_a}}}")),
        "hash-tagged with its lock: {}",
        cache.value_key(&tenant_a)
    );

    // An entry this version cannot read is dropped and recomputed.
    let mut set = redis::cmd("SET");
    set.arg(cache.value_key(&tenant_b)).arg("{not json");
    hredis::run::<()>(&pool, Duration::from_secs(2), &set)
        .await
        .unwrap();
    let (value, outcome) = cache
        .get_or_compute(&tenant_b, &settings(Duration::from_secs(5)), || async {
            Ok::<_, std::convert::Infallible>(answer("for b"))
        })
        .await
        .unwrap();
    assert_eq!(
        (value.text.as_str(), outcome),
        ("for b", CacheOutcome::Miss)
    );
}

#[tokio::test]
async fn with_redis_down_the_cache_reports_its_own_error_and_computes_nothing() {
    let env = TestEnv::new().await;
    let config = RedisConfig {
        url: "redis://127.0.0.1:1".into(),
        pool_size: 2,
        timeout: Duration::from_millis(200),
    };
    let cache = Cache::new(
        hredis::pool(&config).unwrap(),
        env.topology(),
        config.timeout,
    );
    let began = Instant::now();
    let computed = AtomicUsize::new(0);
    let result = cache
        .get_or_compute(
            &key("t", "x"),
            &settings(Duration::from_secs(5)),
            || async {
                computed.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::convert::Infallible>(answer("x"))
            },
        )
        .await;
    assert!(
        matches!(result, Err(FlightError::Cache(CacheError::Redis(_)))),
        "{result:?}"
    );
    assert_eq!(
        computed.load(Ordering::SeqCst),
        0,
        "the worker decides to bypass"
    );
    assert!(began.elapsed() < Duration::from_secs(1));
}
