//! The request-body rule: how long the proxy waits for the bytes of a body.
//!
//! nginx's `client_body_timeout` bounds the time between two reads, which a client sending one
//! byte every 59 seconds never exceeds. Apache's mod_reqtimeout (`body=20,MinRate=500`) is the
//! stronger rule taken here: the body may keep the proxy waiting `timeout` in all, plus one second
//! for every `min_rate` bytes it has delivered. Only time spent waiting on the client counts: while
//! the app is not reading (its backpressure), the client is not at fault.

use std::time::Duration;

use tokio::time::Instant;

/// The rule's parameters (`limits.request_body_timeout`, `limits.request_body_min_rate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BodyRate {
    /// Waiting allowed before any byte counts.
    pub timeout: Duration,
    /// Bytes that earn one more second of waiting; 0: none.
    pub min_rate: u64,
}

/// One body's account under a [`BodyRate`].
#[derive(Debug, Default)]
pub(crate) struct BodyClock {
    /// Waiting already spent, not counting the current wait.
    waited: Duration,
    /// Bytes received.
    received: u64,
    /// Since when the body has been asked for a frame it did not have.
    waiting_since: Option<Instant>,
}

impl BodyClock {
    /// The body had nothing to give at `now`: the client's turn (again).
    pub(crate) fn waiting(&mut self, now: Instant) {
        self.waiting_since.get_or_insert(now);
    }

    /// The body gave `len` bytes (or a frame without data) at `now`.
    pub(crate) fn received(&mut self, now: Instant, len: usize) {
        if let Some(since) = self.waiting_since.take() {
            self.waited += now.saturating_duration_since(since);
        }
        self.received = self.received.saturating_add(len as u64);
    }

    /// When the current wait must end, if the body is waiting. Never earlier than an earlier
    /// answer for the same wait, and later after each delivery: a deadline set once can be kept
    /// until it passes, then looked up again.
    pub(crate) fn deadline(&self, rate: BodyRate) -> Option<Instant> {
        let since = self.waiting_since?;
        let earned = match rate.min_rate {
            0 => Duration::ZERO,
            rate => Duration::from_secs_f64(self.received as f64 / rate as f64),
        };
        Some(since + (rate.timeout + earned).saturating_sub(self.waited))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: BodyRate = BodyRate { timeout: Duration::from_secs(20), min_rate: 500 };

    #[test]
    fn a_body_gets_its_timeout_then_a_second_per_min_rate_bytes() {
        let t0 = Instant::now();
        let mut clock = BodyClock::default();
        assert_eq!(clock.deadline(RATE), None, "not waiting");
        clock.waiting(t0);
        assert_eq!(clock.deadline(RATE), Some(t0 + Duration::from_secs(20)));
        // 5,000 bytes after 10 s of waiting: 10 s left, plus 10 s earned.
        clock.received(t0 + Duration::from_secs(10), 5000);
        clock.waiting(t0 + Duration::from_secs(12));
        assert_eq!(clock.deadline(RATE), Some(t0 + Duration::from_secs(12 + 20)));
    }

    #[test]
    fn a_trickle_below_the_rate_runs_out_and_time_the_app_holds_the_body_does_not_count() {
        let t0 = Instant::now();
        let mut clock = BodyClock::default();
        let mut now = t0;
        // One byte every 10 s: each earns 2 ms, each wait costs 10 s.
        let mut trickled = 0;
        loop {
            clock.waiting(now);
            let deadline = clock.deadline(RATE).unwrap();
            if deadline <= now + Duration::from_secs(10) {
                break;
            }
            now += Duration::from_secs(10);
            clock.received(now, 1);
            trickled += 1;
        }
        assert_eq!(trickled, 2, "cut during the third wait, after 20 s of waiting in all");

        // The app not reading for an hour (nobody asks the body) costs the client nothing.
        let mut clock = BodyClock::default();
        clock.waiting(t0);
        clock.received(t0 + Duration::from_secs(1), 100);
        clock.waiting(t0 + Duration::from_secs(3600));
        assert_eq!(clock.deadline(RATE), Some(t0 + Duration::from_secs(3600) + Duration::from_millis(19_200)));
    }

    #[test]
    fn deadlines_never_move_earlier() {
        let t0 = Instant::now();
        let mut clock = BodyClock::default();
        let mut last = None;
        for step in 0..50u64 {
            let now = t0 + Duration::from_millis(step * 700);
            if step % 3 == 0 {
                clock.received(now, (step * 37 % 900) as usize);
            } else {
                clock.waiting(now);
                let deadline = clock.deadline(RATE);
                assert!(deadline >= last, "step {step}");
                last = deadline;
            }
        }
    }
}
