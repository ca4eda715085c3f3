//! The limiter as a fleet uses it, on the Redis clock: many instances (each
//! with its own pool, as separate worker replicas have) acquiring at once,
//! arrival order, fleet pauses, abandoned waits and Redis outages.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookfleet_common::config::{FailMode, RedisConfig};

use hookfleet_common::redis::{self as hredis};
use hookfleet_tests::env::TestEnv;
use hookfleet_tests::wait::wait_until;
use hookfleet_worker::config::{LimitsConfig, ModelLimits};
use hookfleet_worker::limits::limiter::{AcquireError, Clock, Limiter};
use tokio::time::Instant;

const P: &str = "openai";
const M: &str = "gpt-4o-mini";

fn limits(
    rpm: Option<u32>,
    tpm: Option<u32>,
    burst_requests: u32,
    burst_tokens: u32,
) -> LimitsConfig {
    LimitsConfig {
        models: vec![ModelLimits {
            provider: P.into(),
            model: M.into(),
            rpm,
            tpm,
            burst_requests: rpm.map(|_| burst_requests),
            burst_tokens: tpm.map(|_| burst_tokens),
            refund_unused: true,
        }],
        ..LimitsConfig::default()
    }
}

/// `n` limiters over `n` separate pools: `n` worker replicas.
fn fleet(env: &TestEnv, config: &LimitsConfig, n: usize) -> Vec<Limiter> {
    (0..n)
        .map(|_| {
            let pool = hredis::pool(&env.settings.redis).unwrap();
            Limiter::new(pool, env.topology(), config, Duration::from_secs(2))
        })
        .collect()
}

/// The most of `times` (µs, sorted) within any span of `window` µs.
fn most_in_any(times: &[u64], window: u64) -> usize {
    let mut best = 0;
    let mut from = 0;
    for (to, &t) in times.iter().enumerate() {
        while t - times[from] >= window {
            from += 1;
        }
        best = best.max(to + 1 - from);
    }
    best
}

#[tokio::test]
async fn two_hundred_concurrent_bookings_never_exceed_the_rate_in_any_window() {
    let env = TestEnv::new().await;
    // 100 requests a second, burst 5.
    let config = limits(Some(6_000), None, 5, 1);
    let limiters = fleet(&env, &config, 4);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let l = limiters[i % 4].clone();
        tasks.push(tokio::spawn(async move {
            l.reserve(P, M, 1, Duration::from_secs(60), Clock::Redis)
                .await
                .unwrap()
        }));
    }
    let mut starts = Vec::new();
    for task in tasks {
        let r = task.await.unwrap();
        assert!(r.granted);
        starts.push(r.start_us);
    }
    starts.sort_unstable();
    // Burst 5 + 100 per second: at most 105 starts in any second, 15 in any
    // 100 ms; and the 200 are spread over (200 - 5) / 100 s.
    assert!(most_in_any(&starts, 1_000_000) <= 105);
    assert!(most_in_any(&starts, 100_000) <= 15);
    let span = starts[199] - starts[0];
    assert!(
        (1_940_000..2_100_000).contains(&span),
        "200 bookings span {span} µs"
    );
}

#[tokio::test]
async fn concurrent_acquisitions_wake_at_the_rate_and_not_before() {
    let env = TestEnv::new().await;
    // 50 requests a second, burst 2; 60 acquisitions from 4 instances.
    let config = limits(Some(3_000), None, 2, 1);
    let limiters = fleet(&env, &config, 4);
    let began = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..60 {
        let l = limiters[i % 4].clone();
        tasks.push(tokio::spawn(async move {
            let permit = l.acquire(P, M, 1).await.unwrap();
            let at = began.elapsed();
            permit.reconcile(1).await.unwrap();
            u64::try_from(at.as_micros()).unwrap()
        }));
    }
    let mut woke = Vec::new();
    for task in tasks {
        woke.push(task.await.unwrap());
    }
    woke.sort_unstable();
    // Local wake-ups trail the Redis schedule by timer slack; one extra in a
    // second allows for it.
    assert!(most_in_any(&woke, 1_000_000) <= 2 + 50 + 1);
    assert!(
        woke[59] >= 1_150_000,
        "60 at 50/s after a burst of 2: {woke:?}"
    );
}

#[tokio::test]
async fn waiters_are_served_in_arrival_order_even_behind_a_large_request() {
    let env = TestEnv::new().await;
    // 1,000 tokens a second, burst 1,000.
    let config = limits(None, Some(60_000), 1, 1_000);
    let limiters = fleet(&env, &config, 4);
    let order = Arc::new(Mutex::new(Vec::new()));
    let began = Instant::now();
    let mut tasks = Vec::new();
    // The first takes 2,500 tokens: it starts on the full bucket and leaves
    // 1.5 s of debt; the small ones after it may not overtake.
    for (i, tokens) in [2_500u64, 10, 300, 10, 10, 200, 10, 10]
        .into_iter()
        .enumerate()
    {
        let l = limiters[i % 4].clone();
        let order = Arc::clone(&order);
        let booked_before = limiters[0].state(P, M).await.unwrap().tokens_tat;
        tasks.push(tokio::spawn(async move {
            let permit = l.acquire(P, M, tokens).await.unwrap();
            order.lock().unwrap().push((i, Instant::now()));
            (i, permit.waited(), permit)
        }));
        // Arrival order is what the test sets: each booking moves the token
        // bucket's schedule on, so wait for that before the next arrives.
        wait_until(Duration::from_secs(2), || async {
            limiters[0].state(P, M).await.unwrap().tokens_tat != booked_before
        })
        .await;
    }
    for task in tasks {
        let (i, waited, permit) = task.await.unwrap();
        if i == 1 {
            assert!(waited >= Duration::from_millis(1_400), "waited {waited:?}");
        }
        permit.release().await.unwrap();
    }
    // Served in arrival order: nobody woke before one who arrived earlier, give
    // or take the local timer slack between wake-ups booked 10 ms apart (on a
    // loaded machine two tasks due 10 ms apart may be polled the other way round).
    let mut woke = order.lock().unwrap().clone();
    woke.sort_by_key(|(i, _)| *i);
    assert_eq!(woke.len(), 8);
    for pair in woke.windows(2) {
        let ((earlier, at_earlier), (later, at_later)) = (pair[0], pair[1]);
        assert!(
            at_later + Duration::from_millis(25) >= at_earlier,
            "{later} woke {:?} before {earlier}, which arrived first",
            at_earlier - at_later
        );
    }
    assert!(began.elapsed() >= Duration::from_millis(1_900));
}

#[tokio::test]
async fn a_pause_holds_new_and_already_waiting_acquisitions() {
    let env = TestEnv::new().await;
    // 1 request a second, burst 1.
    let config = limits(Some(60), None, 1, 1);
    let limiters = fleet(&env, &config, 3);
    let began = Instant::now();
    limiters[0]
        .acquire(P, M, 1)
        .await
        .unwrap()
        .release()
        .await
        .ok();
    // Released, so the bucket is full again; take it for real this time.
    let _first = limiters[0].acquire(P, M, 1).await.unwrap();
    // The second is booked for +1 s and sleeps until then ...
    let l = limiters[1].clone();
    let booked_before = limiters[0].state(P, M).await.unwrap().requests_tat;
    let waiter = tokio::spawn(async move {
        let permit = l.acquire(P, M, 1).await.unwrap();
        (Instant::now(), permit)
    });
    wait_until(Duration::from_secs(2), || async {
        limiters[0].state(P, M).await.unwrap().requests_tat != booked_before
    })
    .await;
    // ... when a 429 pauses the model for 2 s: its start moves to +3 s.
    let paused = limiters[2]
        .pause_at(P, M, Duration::from_secs(2), Clock::Redis)
        .await
        .unwrap();
    assert!(paused > Duration::from_millis(1_990));
    let pause_end = Instant::now() + paused;
    // A shorter pause than the one in force (another worker's 429) changes nothing.
    let kept = limiters[0]
        .pause(P, M, Duration::from_millis(10))
        .await
        .unwrap();
    assert!(kept > Duration::from_millis(1_900), "{kept:?}");
    // A new acquisition waits for the pause and for the waiter ahead of it.
    let late = limiters[2].acquire(P, M, 1).await.unwrap();
    let late_at = Instant::now();
    let (waiter_at, _permit) = waiter.await.unwrap();
    assert!(waiter_at >= pause_end, "the waiter ran during the pause");
    let waiter_offset = waiter_at - began;
    assert!(
        waiter_offset >= Duration::from_millis(2_950)
            && waiter_offset < Duration::from_millis(3_500),
        "waiter at {waiter_offset:?}, expected its 1 s slot moved back by 2 s"
    );
    assert!(late_at >= waiter_at, "the newcomer overtook the waiter");
    assert!(late.waited() >= Duration::from_millis(2_500));
}

#[tokio::test]
async fn an_abandoned_wait_gives_its_reservation_back() {
    let env = TestEnv::new().await;
    let config = limits(Some(60), None, 1, 1);
    let limiters = fleet(&env, &config, 2);
    let _first = limiters[0].acquire(P, M, 1).await.unwrap();
    let booked = limiters[0].state(P, M).await.unwrap().requests_tat;
    // A job waits for the next slot, then is cancelled (shutdown, say).
    let l = limiters[1].clone();
    let wait = tokio::spawn(async move { l.acquire(P, M, 1).await });
    wait_until(Duration::from_secs(2), || async {
        limiters[0].state(P, M).await.unwrap().requests_tat > booked
    })
    .await;
    wait.abort();
    assert!(wait.await.unwrap_err().is_cancelled());
    // The slot is given back: the bucket is as it was before the booking.
    wait_until(Duration::from_secs(2), || async {
        limiters[0].state(P, M).await.unwrap().requests_tat <= booked
    })
    .await;
}

#[tokio::test]
async fn reconciling_charges_debt_and_refunds_unused_tokens() {
    let env = TestEnv::new().await;
    // Three models of 1,000 tokens a second, burst 1,000; one keeps what is
    // reserved (as OpenAI counts max_tokens at admission).
    let mut config = limits(None, Some(60_000), 1, 1_000);
    let model = config.models[0].clone();
    config.models = ["debt", "refund", "no-refund"]
        .into_iter()
        .map(|name| ModelLimits {
            model: name.into(),
            refund_unused: name != "no-refund",
            ..model.clone()
        })
        .collect();
    let l = fleet(&env, &config, 1).remove(0);
    // How long a booking of `tokens` would wait now (refused, so uncharged).
    let wait_for = async |model: &str, tokens: u64| {
        let r = l
            .reserve(P, model, tokens, Duration::ZERO, Clock::Redis)
            .await
            .unwrap();
        assert!(r.wait.is_zero() || !r.granted);
        r.wait
    };

    // Used 3,000 of 1,000 reserved: 2 s of debt.
    let permit = l.acquire(P, "debt", 1_000).await.unwrap();
    permit.reconcile(3_000).await.unwrap();
    let debt = wait_for("debt", 1).await;
    assert!(
        debt > Duration::from_millis(1_900) && debt <= Duration::from_millis(2_001),
        "{debt:?}"
    );

    // Used 100 of 1,000: 900 come back at once ...
    let permit = l.acquire(P, "refund", 1_000).await.unwrap();
    permit.reconcile(100).await.unwrap();
    let refunded = wait_for("refund", 1_000).await;
    assert!(refunded <= Duration::from_millis(101), "{refunded:?}");

    // ... unless the model keeps them.
    let permit = l.acquire(P, "no-refund", 1_000).await.unwrap();
    permit.reconcile(100).await.unwrap();
    let kept = wait_for("no-refund", 1_000).await;
    assert!(kept > Duration::from_millis(900), "{kept:?}");
}

fn dead_redis(env: &TestEnv, fail_mode: FailMode, max_wait: Duration) -> Limiter {
    let config = RedisConfig {
        url: "redis://127.0.0.1:1".into(),
        pool_size: 2,
        timeout: Duration::from_millis(200),
    };
    let limits = LimitsConfig {
        redis_failure: fail_mode,
        max_wait,
        ..limits(Some(60), None, 1, 1)
    };
    Limiter::new(
        hredis::pool(&config).unwrap(),
        env.topology(),
        &limits,
        config.timeout,
    )
}

#[tokio::test]
async fn with_redis_down_fail_open_proceeds_unlimited_and_fail_closed_gives_up_after_max_wait() {
    let env = TestEnv::new().await;
    let open = dead_redis(&env, FailMode::Open, Duration::from_secs(5));
    let began = Instant::now();
    let permit = open.acquire_with_policy(P, M, 10).await.unwrap();
    assert!(permit.is_bypassed());
    assert!(began.elapsed() < Duration::from_secs(1));
    permit.reconcile(20).await.unwrap();

    let closed = dead_redis(&env, FailMode::Closed, Duration::from_millis(1_500));
    let began = Instant::now();
    let err = closed.acquire_with_policy(P, M, 10).await.unwrap_err();
    assert!(matches!(err, AcquireError::Unavailable(_)), "{err}");
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took <= Duration::from_millis(1_800),
        "{took:?}"
    );
    // Without the policy, the error comes back at once.
    assert!(matches!(
        closed.acquire(P, M, 10).await,
        Err(AcquireError::Unavailable(_))
    ));
}

#[tokio::test]
async fn a_job_that_would_wait_past_max_wait_is_refused_and_charges_nothing() {
    let env = TestEnv::new().await;
    let config = LimitsConfig {
        max_wait: Duration::from_millis(500),
        ..limits(Some(60), None, 1, 1)
    };
    let l = &fleet(&env, &config, 1)[0];
    let _first = l.acquire(P, M, 1).await.unwrap();
    let before = l.state(P, M).await.unwrap();
    match l.acquire(P, M, 1).await {
        Err(AcquireError::Saturated { wait, .. }) => {
            assert!(wait > Duration::from_millis(900), "{wait:?}")
        }
        other => panic!("expected Saturated, got {other:?}"),
    }
    assert_eq!(l.state(P, M).await.unwrap(), before);
}

#[tokio::test]
async fn a_pause_set_while_a_caller_waits_never_keeps_it_past_its_max_wait() {
    let env = TestEnv::new().await;
    // One request a second, a burst of one.
    let config = limits(Some(60), None, 1, 1);
    let l = fleet(&env, &config, 1).remove(0);
    let first = l.acquire(P, M, 1).await.unwrap();
    let booked_before = l.state(P, M).await.unwrap().requests_tat;
    let waiter = l.clone();
    let began = Instant::now();
    let waiting =
        tokio::spawn(async move { waiter.acquire_within(P, M, 1, Duration::from_secs(3)).await });
    // Once the second caller is booked (about a second ahead), a daily quota's
    // 429 pauses the model: cut to max_retry_after, still far past max_wait.
    wait_until(Duration::from_secs(5), || {
        let l = &l;
        async move { l.state(P, M).await.unwrap().requests_tat > booked_before }
    })
    .await;
    let paused = l.pause(P, M, Duration::from_secs(21_600)).await.unwrap();
    assert!(
        paused > Duration::from_secs(590) && paused <= Duration::from_secs(601),
        "{paused:?}"
    );
    let outcome = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the caller gives up by its max_wait")
        .unwrap();
    assert!(
        matches!(&outcome, Err(AcquireError::Saturated { wait, .. }) if *wait > Duration::from_secs(60)),
        "{outcome:?}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    first.release().await.unwrap();
}
