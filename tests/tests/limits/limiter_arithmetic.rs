//! The limiter's Lua scripts, run in the real Redis with an injected clock
//! (`Clock::At`), against the Rust specification in `limiter::schedule`: the
//! same operations give the same starts and the same stored state. Plus the
//! behaviours the issue names — oversize requests, debt, refunds, FIFO, refusals
//! that charge nothing — checked through Redis.

use std::time::Duration;

use hookfleet_common::redis::{self as hredis, redis};
use hookfleet_tests::env::TestEnv;
use hookfleet_worker::config::{LimitsConfig, ModelLimits};
use hookfleet_worker::limits::limiter::{Clock, Decision, Limiter, State};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEC: u64 = 1_000_000;
const T0: u64 = 1_700_000_000 * SEC;
const NEVER: Duration = Duration::from_secs(24 * 3600);

fn limits(
    rpm: Option<u32>,
    tpm: Option<u32>,
    burst_requests: u32,
    burst_tokens: u32,
) -> LimitsConfig {
    LimitsConfig {
        models: vec![ModelLimits {
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
            rpm,
            tpm,
            burst_requests: rpm.map(|_| burst_requests),
            burst_tokens: tpm.map(|_| burst_tokens),
            refund_unused: true,
        }],
        ..LimitsConfig::default()
    }
}

fn limiter(env: &TestEnv, config: &LimitsConfig) -> Limiter {
    Limiter::new(env.redis(), env.topology(), config, Duration::from_secs(2))
}

/// Books at `now` and returns the start offset from `now` (µs), panicking if refused.
async fn start(l: &Limiter, now: u64, tokens: u64) -> u64 {
    let r = l
        .reserve("openai", "gpt-4o-mini", tokens, NEVER, Clock::At(now))
        .await
        .unwrap();
    assert!(r.granted);
    assert_eq!(r.now_us, now);
    r.start_us - now
}

#[tokio::test]
async fn the_scripts_compute_exactly_what_the_rust_schedule_specifies() {
    let env = TestEnv::new().await;
    scripts_follow_the_schedule(&env, &limits(Some(600), Some(40_000), 7, 3_000)).await;
}

#[tokio::test]
async fn for_a_model_without_limits_too_which_only_a_pause_holds() {
    let env = TestEnv::new().await;
    scripts_follow_the_schedule(&env, &limits(None, None, 0, 0)).await;
}

/// 1,500 random reserves, adjustments and pauses, each checked against
/// [`State`] (decision, shift and the stored state after every step).
async fn scripts_follow_the_schedule(env: &TestEnv, config: &LimitsConfig) {
    let l = limiter(env, config);
    let rates = l.rates("openai", "gpt-4o-mini");
    let mut spec = State::default();
    let mut rng = StdRng::seed_from_u64(7);
    let mut now = T0;
    for step in 0..1_500 {
        now += rng.random_range(0..200_000);
        match rng.random_range(0..10) {
            0..=6 => {
                let tokens = rng.random_range(0..6_000);
                let max_wait = rng.random_range(0..20 * SEC);
                let want = spec.reserve(&rates, now, tokens, max_wait);
                let got = l
                    .reserve(
                        "openai",
                        "gpt-4o-mini",
                        tokens,
                        Duration::from_micros(max_wait),
                        Clock::At(now),
                    )
                    .await
                    .unwrap();
                let got_decision = if got.granted {
                    Decision::Granted {
                        start: got.start_us,
                    }
                } else {
                    Decision::Denied {
                        start: got.start_us,
                    }
                };
                assert_eq!(got_decision, want, "step {step}: reserve");
                assert_eq!(got.shift_us, spec.shift, "step {step}: shift");
            }
            7 | 8 => {
                let requests = rng.random_range(-1..=0);
                let tokens = rng.random_range(-3_000..3_000);
                spec.adjust(&rates, now, requests, tokens);
                l.adjust("openai", "gpt-4o-mini", requests, tokens, Clock::At(now))
                    .await
                    .unwrap();
            }
            _ => {
                let duration = rng.random_range(1..3 * SEC);
                let want = spec.pause(now, duration) - now;
                let got = l
                    .pause_at(
                        "openai",
                        "gpt-4o-mini",
                        Duration::from_micros(duration),
                        Clock::At(now),
                    )
                    .await
                    .unwrap();
                assert_eq!(got, Duration::from_micros(want), "step {step}: pause");
            }
        }
        let stored = l.state("openai", "gpt-4o-mini").await.unwrap();
        assert_eq!(stored, spec, "step {step}: state");
    }
}

#[tokio::test]
async fn an_oversized_request_starts_on_a_full_bucket_and_leaves_debt() {
    let env = TestEnv::new().await;
    // 600 tokens a minute = 10/s, burst 100.
    let l = limiter(&env, &limits(None, Some(600), 1, 100));
    assert_eq!(start(&l, T0, 300).await, 0, "full bucket: admitted at once");
    // 200 tokens of debt + 1 token at 10/s.
    assert_eq!(start(&l, T0, 1).await, 20 * SEC + SEC / 10);
    // It never starves: a bigger one waits only for the bucket to be full.
    let later = T0 + 60 * SEC;
    assert_eq!(start(&l, later, 10_000).await, 0);
}

#[tokio::test]
async fn usage_above_the_reservation_is_charged_as_debt_and_below_it_refunded() {
    let env = TestEnv::new().await;
    let l = limiter(&env, &limits(None, Some(600), 1, 100));
    start(&l, T0, 100).await;
    l.adjust("openai", "gpt-4o-mini", 0, 50, Clock::At(T0))
        .await
        .unwrap();
    assert_eq!(start(&l, T0, 100).await, 15 * SEC, "150 used: 5 s of debt");

    let l2 = limiter(&env, &limits(None, Some(600), 1, 100));
    let other = T0 + 3600 * SEC;
    start(&l2, other, 100).await;
    l.adjust("openai", "gpt-4o-mini", 0, -60, Clock::At(other))
        .await
        .unwrap();
    assert_eq!(start(&l2, other, 100).await, 4 * SEC, "40 used: 60 back");
}

#[tokio::test]
async fn starts_follow_arrival_order_across_instances_and_refunds() {
    let env = TestEnv::new().await;
    let config = limits(Some(60), Some(600), 2, 100);
    let instances: Vec<Limiter> = (0..3).map(|_| limiter(&env, &config)).collect();
    let costs = [100, 1, 250, 5, 5, 90, 1, 1, 400, 2];
    let mut previous = 0;
    for (i, cost) in costs.into_iter().enumerate() {
        let now = T0 + i as u64 * 1_000;
        if i == 5 {
            // Two earlier bookings are given back: capacity frees up, yet no
            // newcomer may start before those already waiting.
            instances[0]
                .adjust("openai", "gpt-4o-mini", -2, -251, Clock::At(now))
                .await
                .unwrap();
        }
        let s = now + start(&instances[i % 3], now, cost).await;
        assert!(s >= previous, "booking {i} starts before booking {}", i - 1);
        previous = s;
    }
}

#[tokio::test]
async fn a_refused_booking_charges_nothing() {
    let env = TestEnv::new().await;
    let l = limiter(&env, &limits(Some(60), None, 1, 1));
    start(&l, T0, 1).await;
    let before = l.state("openai", "gpt-4o-mini").await.unwrap();
    let refused = l
        .reserve(
            "openai",
            "gpt-4o-mini",
            1,
            Duration::from_millis(500),
            Clock::At(T0),
        )
        .await
        .unwrap();
    assert!(!refused.granted);
    assert_eq!(refused.wait, Duration::from_secs(1));
    assert_eq!(l.state("openai", "gpt-4o-mini").await.unwrap(), before);
}

#[tokio::test]
async fn a_models_state_is_one_hash_tagged_key_that_expires() {
    let env = TestEnv::new().await;
    let l = limiter(&env, &limits(Some(60), Some(6_000), 1, 100));
    let key = l.key("openai", "gpt-4o-mini");
    assert_eq!(key, format!("{}:rl:{{openai:gpt-4o-mini}}", env.namespace));
    assert_eq!(
        l.key("p{x}", "m}"),
        format!("{}:rl:{{p(x):m)}}", env.namespace),
        "braces in names cannot end the hash tag early"
    );
    l.reserve("openai", "gpt-4o-mini", 10, NEVER, Clock::Redis)
        .await
        .unwrap();
    let mut cmd = redis::cmd("PTTL");
    cmd.arg(&key);
    let pttl: i64 = hredis::run(&env.redis(), Duration::from_secs(2), &cmd)
        .await
        .unwrap();
    // The idle expiry (60 s) plus at most the 1 s the bucket needs to refill.
    assert!((59_000..=61_100).contains(&pttl), "PTTL {pttl}");
}
