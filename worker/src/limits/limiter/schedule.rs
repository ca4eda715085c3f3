//! The limiter's arithmetic, in Rust: "GCRA-like virtual scheduling" over two
//! token buckets (requests and tokens) of one model, plus the fleet pause.
//!
//! This is the specification the Lua scripts (`reserve.lua`, `adjust.lua`,
//! `pause.lua`) implement operation for operation in Redis; the limiter tests
//! run both on the same inputs and compare. Nothing here does I/O, and `now` is
//! always an input (µs on the Redis clock).
//!
//! **Virtual scheduling.** A bucket is one number, its *theoretical arrival time*
//! (TAT): the moment it will be full again. A bucket that refills one unit every
//! `interval` µs and holds `burst` units has `tolerance = burst × interval`; at
//! time `t` it holds `(tolerance − max(0, TAT − t)) / interval` units. A request
//! costing `c` units may start once the bucket can pay: at
//! `TAT + c·interval − tolerance` (or, for `c` above the burst, when the bucket is
//! full: at `TAT`). Starting at `s` charges it: `TAT = max(TAT, s) + c·interval`.
//!
//! **Reservations, not retries.** [`State::reserve`] finds the earliest start
//! both buckets allow, no earlier than the pause's end or the previous grant's
//! start, charges the buckets *at that start* and returns it. Every caller learns
//! its own start in one round trip; nobody polls, so nobody stampedes. Starts
//! never decrease in arrival order, so waiters are served first come, first
//! served, whatever they cost and whatever is refunded in between. A start later
//! than `max_wait` is refused and charges nothing.
//!
//! **Debt and refunds.** [`State::adjust`] moves a bucket's TAT by the difference
//! between what was reserved and what was used: more usage pushes it into the
//! future (debt, paid by later callers' waits), less pulls it back, never past
//! "full" (`now`).
//!
//! **Pause.** [`State::pause`] freezes the schedule: every start not yet reached
//! and every bucket not yet full moves later by the pause's extension, and
//! `shift` records the total so a caller already asleep until its start can tell
//! it must sleep that much longer. Overlapping pauses do not add up: only the part
//! past the current pause's end extends it.
//!
//! Rounding is always up (`ceil`) so stored values are whole µs and every
//! rounding error makes the limiter stricter, never looser.

/// µs per minute: the limits are per minute.
const MINUTE_US: f64 = 60_000_000.0;

/// The rate of one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    /// µs to refill one unit (60 s / limit).
    pub interval: f64,
    /// µs to refill the whole burst (`burst × interval`).
    pub tolerance: f64,
}

impl TokenBucket {
    /// A bucket refilling `limit` units per minute that holds `burst` units.
    /// A zero `limit` or `burst` counts as 1.
    pub fn per_minute(limit: u32, burst: u32) -> Self {
        let interval = MINUTE_US / f64::from(limit.max(1));
        Self {
            interval,
            tolerance: f64::from(burst.max(1)) * interval,
        }
    }

    /// Earliest start at which the bucket can pay `cost` units.
    fn earliest(&self, tat: f64, cost: f64) -> f64 {
        let inc = cost * self.interval;
        tat + inc - self.tolerance.max(inc)
    }

    /// The TAT after charging `cost` units at `start`.
    fn charge(&self, tat: f64, start: f64, cost: f64) -> f64 {
        (tat.max(start) + cost * self.interval).ceil()
    }

    /// The TAT after `delta` more (debt) or fewer (refund) units, never fuller
    /// than full.
    fn adjust(&self, tat: f64, now: f64, delta: f64) -> f64 {
        (tat.max(now) + delta * self.interval).ceil().max(now)
    }
}

/// A model's limits: each bucket is `None` when that dimension is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    /// Requests per minute.
    pub requests: Option<TokenBucket>,
    /// Tokens per minute.
    pub tokens: Option<TokenBucket>,
}

impl Rates {
    /// `(interval, tolerance)` of the request and token buckets, `0` when
    /// unlimited: the scripts' arguments.
    pub(crate) fn script_args(&self) -> [f64; 4] {
        let (ri, rt) = self
            .requests
            .map_or((0.0, 0.0), |b| (b.interval, b.tolerance));
        let (ti, tt) = self
            .tokens
            .map_or((0.0, 0.0), |b| (b.interval, b.tolerance));
        [ri, rt, ti, tt]
    }
}

/// A model's limiter state: the fields of its Redis hash, µs on the Redis clock.
/// All zero is an idle model (both buckets full, not paused).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct State {
    /// TAT of the request bucket (`rq`).
    pub requests_tat: u64,
    /// TAT of the token bucket (`tk`).
    pub tokens_tat: u64,
    /// Start granted to the latest reservation (`last`): nobody after it starts
    /// earlier.
    pub last_start: u64,
    /// End of the fleet pause (`pause`).
    pub paused_until: u64,
    /// Total µs pauses have pushed the schedule back (`shift`); only grows.
    pub shift: u64,
}

/// The answer of [`State::reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Charged: the caller may start at `start`.
    Granted {
        /// Start, µs on the Redis clock.
        start: u64,
    },
    /// The start would be later than `max_wait`; nothing was charged.
    Denied {
        /// The start it would have had.
        start: u64,
    },
}

impl State {
    /// Books one request of `tokens` at `now`, unless it would wait more than
    /// `max_wait` µs.
    pub fn reserve(&mut self, rates: &Rates, now: u64, tokens: u64, max_wait: u64) -> Decision {
        let now_f = now as f64;
        let mut start = now_f
            .max(self.paused_until as f64)
            .max(self.last_start as f64);
        if let Some(b) = rates.requests {
            start = start.max(b.earliest(self.requests_tat as f64, 1.0));
        }
        if let Some(b) = rates.tokens {
            start = start.max(b.earliest(self.tokens_tat as f64, tokens as f64));
        }
        let start = start.ceil();
        let start_us = start as u64;
        if start - now_f > max_wait as f64 {
            return Decision::Denied { start: start_us };
        }
        if rates.requests.is_none() && rates.tokens.is_none() {
            // Nothing to charge: only a pause holds a model without limits, and
            // its state stays as it was (the script writes nothing).
            return Decision::Granted { start: start_us };
        }
        if let Some(b) = rates.requests {
            self.requests_tat = b.charge(self.requests_tat as f64, start, 1.0) as u64;
        }
        if let Some(b) = rates.tokens {
            self.tokens_tat = b.charge(self.tokens_tat as f64, start, tokens as f64) as u64;
        }
        self.last_start = start_us;
        Decision::Granted { start: start_us }
    }

    /// Charges `requests` and `tokens` more (positive: debt) or fewer
    /// (negative: refund, as for a released reservation) at `now`.
    pub fn adjust(&mut self, rates: &Rates, now: u64, requests: i64, tokens: i64) {
        let now_f = now as f64;
        if let Some(b) = rates.requests
            && requests != 0
        {
            self.requests_tat = b.adjust(self.requests_tat as f64, now_f, requests as f64) as u64;
        }
        if let Some(b) = rates.tokens
            && tokens != 0
        {
            self.tokens_tat = b.adjust(self.tokens_tat as f64, now_f, tokens as f64) as u64;
        }
    }

    /// Pauses the model for `duration` µs from `now`; returns the pause's end
    /// (a longer pause already in force is kept).
    pub fn pause(&mut self, now: u64, duration: u64) -> u64 {
        let end = now.saturating_add(duration);
        let current = self.paused_until.max(now);
        if end <= current {
            return current;
        }
        let extension = end - current;
        for at in [
            &mut self.requests_tat,
            &mut self.tokens_tat,
            &mut self.last_start,
        ] {
            if *at > now {
                *at += extension;
            }
        }
        self.shift += extension;
        self.paused_until = end;
        end
    }

    /// The latest time anything in the state refers to: after it, the state is
    /// the same as no state (full buckets, no pause), so the hash may expire.
    pub fn horizon(&self) -> u64 {
        self.requests_tat
            .max(self.tokens_tat)
            .max(self.last_start)
            .max(self.paused_until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000;
    const NEVER: u64 = u64::MAX / 4;
    const T0: u64 = 1_700_000_000 * SEC;

    /// 60 rpm (one a second), burst 3; 600 tpm (10 a second), burst 100.
    fn rates() -> Rates {
        Rates {
            requests: Some(TokenBucket::per_minute(60, 3)),
            tokens: Some(TokenBucket::per_minute(600, 100)),
        }
    }

    fn start(state: &mut State, now: u64, tokens: u64) -> u64 {
        match state.reserve(&rates(), now, tokens, NEVER) {
            Decision::Granted { start } => start,
            Decision::Denied { .. } => panic!("denied"),
        }
    }

    #[test]
    fn a_full_bucket_serves_its_burst_at_once_then_one_per_interval() {
        let mut s = State::default();
        let starts: Vec<u64> = (0..6).map(|_| start(&mut s, T0, 1) - T0).collect();
        assert_eq!(starts, [0, 0, 0, SEC, 2 * SEC, 3 * SEC]);
    }

    #[test]
    fn a_model_without_limits_is_held_only_by_a_pause_and_charged_nothing() {
        let unlimited = Rates {
            requests: None,
            tokens: None,
        };
        let mut s = State::default();
        let granted = |start| Decision::Granted { start };
        assert_eq!(s.reserve(&unlimited, T0, 500, 0), granted(T0));
        assert_eq!(s, State::default(), "nothing stored");
        s.pause(T0, 2 * SEC);
        let paused = s;
        assert_eq!(
            s.reserve(&unlimited, T0 + SEC, 500, NEVER),
            granted(T0 + 2 * SEC)
        );
        assert_eq!(
            s.reserve(&unlimited, T0 + SEC, 500, SEC / 2),
            Decision::Denied {
                start: T0 + 2 * SEC
            }
        );
        assert_eq!(s, paused, "a pause is read, not charged");
    }

    #[test]
    fn an_idle_bucket_refills_up_to_its_burst_only() {
        let mut s = State::default();
        for _ in 0..3 {
            start(&mut s, T0, 1);
        }
        // An hour later the bucket holds 3, not 3600.
        let later = T0 + 3600 * SEC;
        let starts: Vec<u64> = (0..4).map(|_| start(&mut s, later, 1) - later).collect();
        assert_eq!(starts, [0, 0, 0, SEC]);
    }

    #[test]
    fn starts_follow_arrival_order_whatever_the_cost() {
        let mut s = State::default();
        let big = start(&mut s, T0, 100); // empties the token bucket
        let small = start(&mut s, T0, 1); // tokens for it come 0.1 s later
        let next = start(&mut s, T0, 1);
        assert_eq!(big, T0);
        assert_eq!(small, T0 + SEC / 10);
        assert!(next >= small);
    }

    #[test]
    fn a_request_larger_than_the_burst_starts_when_the_bucket_is_full_and_leaves_debt() {
        let mut s = State::default();
        // 300 tokens against a burst of 100: starts at once, on a full bucket ...
        assert_eq!(start(&mut s, T0, 300), T0);
        // ... and the 200 over the burst are paid back before anyone else starts:
        // the next token is there 20.1 s later (30 s of refill minus the burst).
        assert_eq!(start(&mut s, T0, 1), T0 + 20 * SEC + SEC / 10);
        // While the bucket is not full, another oversized request waits for it.
        let mut s = State::default();
        start(&mut s, T0, 50);
        assert_eq!(start(&mut s, T0, 300), T0 + 5 * SEC);
    }

    #[test]
    fn usage_above_the_reservation_is_debt_and_below_it_a_refund() {
        let mut debt = State::default();
        start(&mut debt, T0, 100);
        debt.adjust(&rates(), T0, 0, 50); // used 150
        assert_eq!(start(&mut debt, T0, 100), T0 + 15 * SEC);

        let mut refund = State::default();
        start(&mut refund, T0, 100);
        refund.adjust(&rates(), T0, 0, -60); // used 40
        assert_eq!(start(&mut refund, T0, 100), T0 + 4 * SEC);

        // A refund never fills the bucket past full.
        let mut full = State::default();
        full.adjust(&rates(), T0, -1, -1_000);
        assert_eq!(full.requests_tat, T0);
        assert_eq!(full.tokens_tat, T0);
        let starts: Vec<u64> = (0..4).map(|_| start(&mut full, T0, 1) - T0).collect();
        assert_eq!(starts, [0, 0, 0, SEC]);
    }

    #[test]
    fn a_refund_never_lets_a_newcomer_overtake_a_waiter() {
        let mut s = State::default();
        for _ in 0..3 {
            start(&mut s, T0, 1);
        }
        let waiter = start(&mut s, T0, 1);
        assert_eq!(waiter, T0 + SEC);
        // Two earlier requests are released: the bucket has room at once, but
        // the newcomer still starts no earlier than the waiter before it.
        s.adjust(&rates(), T0, -2, -2);
        assert_eq!(start(&mut s, T0, 1), waiter);
    }

    #[test]
    fn a_request_that_would_wait_too_long_is_refused_without_being_charged() {
        let mut s = State::default();
        for _ in 0..3 {
            start(&mut s, T0, 1);
        }
        let before = s;
        let decision = s.reserve(&rates(), T0, 1, SEC / 2);
        assert_eq!(decision, Decision::Denied { start: T0 + SEC });
        assert_eq!(s, before);
        assert_eq!(
            s.reserve(&rates(), T0, 1, SEC),
            Decision::Granted { start: T0 + SEC }
        );
    }

    #[test]
    fn a_pause_holds_new_requests_and_pushes_booked_ones_back() {
        let mut s = State::default();
        for _ in 0..3 {
            start(&mut s, T0, 1);
        }
        let booked = start(&mut s, T0, 1);
        assert_eq!(s.pause(T0, 5 * SEC), T0 + 5 * SEC);
        assert_eq!(s.shift, 5 * SEC);
        assert_eq!(s.last_start, booked + 5 * SEC);
        // The next one comes after the pushed-back one, one interval later.
        assert_eq!(start(&mut s, T0, 1), booked + 6 * SEC);
        // A shorter pause changes nothing; a longer one extends by the difference.
        let before = s;
        assert_eq!(s.pause(T0 + SEC, 2 * SEC), T0 + 5 * SEC);
        assert_eq!(s, before);
        assert_eq!(s.pause(T0 + SEC, 6 * SEC), T0 + 7 * SEC);
        assert_eq!(s.shift, 7 * SEC);
    }

    #[test]
    fn after_a_pause_an_idle_model_resumes_with_one_burst_at_most() {
        let mut s = State::default();
        s.pause(T0, 10 * SEC);
        let end = T0 + 10 * SEC;
        let starts: Vec<u64> = (0..5).map(|_| start(&mut s, T0, 1)).collect();
        assert_eq!(starts, [end, end, end, end + SEC, end + 2 * SEC]);
    }

    #[test]
    fn an_unlimited_model_only_waits_for_pauses() {
        let unlimited = Rates::default();
        let mut s = State::default();
        for _ in 0..100 {
            assert_eq!(
                s.reserve(&unlimited, T0, 1_000_000, 0),
                Decision::Granted { start: T0 }
            );
        }
        s.pause(T0, SEC);
        assert_eq!(
            s.reserve(&unlimited, T0, 1, NEVER),
            Decision::Granted { start: T0 + SEC }
        );
    }

    #[test]
    fn grants_never_exceed_burst_plus_rate_in_any_window() {
        // Pseudo-random arrivals and costs, a fixed seed: the property that
        // matters, checked over many steps.
        let rates = Rates {
            requests: Some(TokenBucket::per_minute(600, 5)),
            tokens: Some(TokenBucket::per_minute(60_000, 2_000)),
        };
        let mut s = State::default();
        let mut grants = Vec::new();
        let mut now = T0;
        let mut x: u64 = 42;
        for _ in 0..2_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            now += (x >> 33) % 50_000;
            let tokens = 1 + (x >> 20) % 400;
            if let Decision::Granted { start } = s.reserve(&rates, now, tokens, NEVER) {
                grants.push((start, tokens));
            }
        }
        for (i, &(from, _)) in grants.iter().enumerate() {
            let window: Vec<_> = grants[i..]
                .iter()
                .take_while(|(t, _)| *t < from + SEC)
                .collect();
            // 600 rpm = 10/s, burst 5; 60k tpm = 1000/s, burst 2000 (+ one request).
            assert!(window.len() <= 5 + 10, "{} requests in 1 s", window.len());
            let tokens: u64 = window.iter().map(|(_, t)| t).sum();
            assert!(tokens <= 2_000 + 1_000 + 400, "{tokens} tokens in 1 s");
        }
    }
}
