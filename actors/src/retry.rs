//! The retry policy (STYLE R9), the only place that touches the `backoff` crate.
//!
//! * API 409/429/5xx and transport errors: exponential backoff with jitter, then re-trigger.
//! * Invalid spec or missing app: a Warning event and wait for a change (no timer).
//! * Everything else: a bounded requeue.
//!
//! Attempt counts live in the owner's state ([`Retrier`] is one value per cluster), never in a
//! global map.

use std::time::Duration;

use backoff::{backoff::Backoff, ExponentialBackoff, ExponentialBackoffBuilder};

/// First delay after a transient failure.
pub const INITIAL_INTERVAL: Duration = Duration::from_millis(200);
/// Longest delay between attempts.
pub const MAX_INTERVAL: Duration = Duration::from_secs(60);
/// Requeue delay for errors that are neither transient nor waiting for a change.
pub const BOUNDED_REQUEUE: Duration = Duration::from_secs(30);

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again after this delay (exponential, jittered).
    Backoff(Duration),
    /// Do nothing until the object (or something it depends on) changes.
    AwaitChange,
    /// Try again after a fixed delay.
    Requeue(Duration),
}

/// How a failure should be treated, as classified by the caller's error type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// 409/429/5xx/transport.
    Transient,
    /// Invalid spec, missing app: user action needed.
    NeedsChange,
    /// Anything else.
    Other,
}

/// Per-object retry state: an exponential backoff with jitter plus an attempt counter.
#[derive(Debug)]
pub struct Retrier {
    backoff: ExponentialBackoff,
    attempts: u32,
}

impl Default for Retrier {
    fn default() -> Self {
        Self::new()
    }
}

impl Retrier {
    /// A retrier with the default intervals.
    pub fn new() -> Self {
        Self::with_intervals(INITIAL_INTERVAL, MAX_INTERVAL)
    }

    /// A retrier with custom intervals (tests use short ones).
    pub fn with_intervals(initial: Duration, max: Duration) -> Self {
        let backoff = ExponentialBackoffBuilder::new()
            .with_initial_interval(initial)
            .with_max_interval(max)
            .with_multiplier(2.0)
            .with_randomization_factor(0.3)
            .with_max_elapsed_time(None)
            .build();
        Self { backoff, attempts: 0 }
    }

    /// Consecutive failures since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Records a failure and returns what to do.
    pub fn on_failure(&mut self, class: FailureClass) -> RetryDecision {
        self.attempts = self.attempts.saturating_add(1);
        match class {
            FailureClass::Transient => {
                let d = self.backoff.next_backoff().unwrap_or(MAX_INTERVAL);
                RetryDecision::Backoff(d)
            }
            FailureClass::NeedsChange => RetryDecision::AwaitChange,
            FailureClass::Other => RetryDecision::Requeue(BOUNDED_REQUEUE),
        }
    }

    /// Records a success: the next failure starts from the initial interval again.
    pub fn on_success(&mut self) {
        self.attempts = 0;
        self.backoff.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delay(d: RetryDecision) -> Duration {
        match d {
            RetryDecision::Backoff(d) => d,
            other => panic!("expected backoff, got {other:?}"),
        }
    }

    #[test]
    fn transient_failures_back_off_exponentially_with_jitter_and_cap() {
        let mut r = Retrier::with_intervals(Duration::from_millis(100), Duration::from_secs(1));
        let first = delay(r.on_failure(FailureClass::Transient));
        assert!(
            first >= Duration::from_millis(70) && first <= Duration::from_millis(130),
            "{first:?}"
        );
        let second = delay(r.on_failure(FailureClass::Transient));
        assert!(
            second >= Duration::from_millis(140) && second <= Duration::from_millis(260),
            "{second:?}"
        );
        for _ in 0..10 {
            let d = delay(r.on_failure(FailureClass::Transient));
            assert!(d <= Duration::from_millis(1300), "{d:?}");
        }
        assert_eq!(r.attempts(), 12);
    }

    #[test]
    fn success_resets_the_backoff() {
        let mut r = Retrier::with_intervals(Duration::from_millis(100), Duration::from_secs(10));
        for _ in 0..5 {
            r.on_failure(FailureClass::Transient);
        }
        r.on_success();
        assert_eq!(r.attempts(), 0);
        let d = delay(r.on_failure(FailureClass::Transient));
        assert!(d <= Duration::from_millis(130), "{d:?}");
    }

    #[test]
    fn invalid_input_waits_for_a_change_and_other_errors_requeue() {
        let mut r = Retrier::new();
        assert_eq!(
            r.on_failure(FailureClass::NeedsChange),
            RetryDecision::AwaitChange
        );
        assert_eq!(
            r.on_failure(FailureClass::Other),
            RetryDecision::Requeue(BOUNDED_REQUEUE)
        );
    }
}
