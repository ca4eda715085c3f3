//! `--rate`: how fast a replay feeds the jobs queue, so a backlog replayed after
//! an outage does not hit the AI provider all at once.
//!
//! Evenly spaced, no burst: the n-th replay starts no earlier than n / rate after
//! the first. Only replays are paced; letters a pass merely puts back at the tail
//! of the DLQ go at full speed.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tokio::time::Instant;

/// Messages per second, parsed from `50`, `50/s`, `3000/m` or `0.5/s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    per_second: f64,
}

impl Rate {
    /// `n` messages per second.
    pub fn per_second(n: f64) -> Self {
        Self { per_second: n }
    }

    /// Messages per second.
    pub fn as_per_second(self) -> f64 {
        self.per_second
    }

    fn interval(self) -> Duration {
        Duration::from_secs_f64(1.0 / self.per_second)
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (count, unit) = text.split_once('/').unwrap_or((text, "s"));
        let count: f64 = count
            .trim()
            .parse()
            .map_err(|_| format!("`{text}`: expected a number, e.g. 50/s or 3000/m"))?;
        let seconds = match unit.trim() {
            "s" | "sec" | "second" => 1.0,
            "m" | "min" | "minute" => 60.0,
            "h" | "hour" => 3600.0,
            other => return Err(format!("`{other}`: the unit is s, m or h")),
        };
        let per_second = count / seconds;
        if !per_second.is_finite() || per_second <= 0.0 || per_second > 1_000_000.0 {
            return Err(format!("`{text}`: must be above 0 and at most 1000000/s"));
        }
        Ok(Self { per_second })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s", self.per_second)
    }
}

/// When the next paced replay may start.
#[derive(Debug)]
pub struct Pace {
    interval: Option<Duration>,
    next: Instant,
}

impl Pace {
    /// Paced at `rate`, or not at all.
    pub fn new(rate: Option<Rate>) -> Self {
        Self {
            interval: rate.map(Rate::interval),
            next: Instant::now(),
        }
    }

    /// When the next replay may start (now, when unpaced).
    pub fn next(&self) -> Instant {
        self.next
    }

    /// Whether a replay may start at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        self.interval.is_none() || now >= self.next
    }

    /// Records that a replay started at `now`.
    pub fn taken(&mut self, now: Instant) {
        if let Some(interval) = self.interval {
            // From the later of the schedule and now: time spent idle (waiting for
            // deliveries) is not banked as a burst.
            self.next = self.next.max(now) + interval;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_in_any_unit() {
        assert_eq!("50".parse(), Ok(Rate::per_second(50.0)));
        assert_eq!("50/s".parse(), Ok(Rate::per_second(50.0)));
        assert_eq!("3000/m".parse(), Ok(Rate::per_second(50.0)));
        assert_eq!("0.5/s".parse(), Ok(Rate::per_second(0.5)));
        for bad in ["0/s", "-1", "fast", "5/week"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn replays_are_evenly_spaced_without_bursts() {
        let mut pace = Pace::new(Some(Rate::per_second(10.0)));
        let start = Instant::now();
        assert!(pace.ready(start));
        pace.taken(start);
        assert!(!pace.ready(start + Duration::from_millis(99)));
        assert!(pace.ready(start + Duration::from_millis(100)));
        // Idle for a second: the next one may go at once, the one after 100 ms later.
        let later = start + Duration::from_secs(1);
        pace.taken(later);
        assert_eq!(pace.next(), later + Duration::from_millis(100));
    }

    #[test]
    fn without_a_rate_everything_is_ready() {
        let mut pace = Pace::new(None);
        let now = Instant::now();
        pace.taken(now);
        pace.taken(now);
        assert!(pace.ready(now));
    }
}
