//! The retry schedule: data, not code. Each failed attempt waits the next delay, with
//! ±20 % jitter so many failing subscriptions do not retry in lockstep.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    pub delays: Vec<Duration>,
}

impl Default for RetrySchedule {
    /// About 3 days 3 hours in all: 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, 4 h, 8 h,
    /// 12 h, 24 h, 24 h, 24 h.
    fn default() -> Self {
        let secs = [
            5, 30, 120, 600, 1800, 3600, 7200, 14_400, 28_800, 43_200, 86_400, 86_400, 86_400,
        ];
        Self {
            delays: secs.into_iter().map(Duration::from_secs).collect(),
        }
    }
}

impl RetrySchedule {
    /// Delay before retry number `attempt` (1 = first retry), or `None` when exhausted.
    /// `retry_after` from the endpoint is honoured within [delay, 2 × delay].
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        let base = *self
            .delays
            .get(usize::try_from(attempt.checked_sub(1)?).ok()?)?;
        if let Some(asked) = retry_after {
            return Some(asked.clamp(base, base * 2));
        }
        let jitter = rand::rng().random_range(0.8..=1.2);
        Some(base.mul_f64(jitter))
    }

    pub fn total(&self) -> Duration {
        self.delays.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_spans_more_than_three_days() {
        assert!(RetrySchedule::default().total() > Duration::from_secs(3 * 24 * 3600));
    }

    #[test]
    fn delays_are_jittered_within_twenty_percent_and_end() {
        let schedule = RetrySchedule::default();
        for _ in 0..200 {
            let d = schedule.delay(1, None).expect("first retry");
            assert!(
                d >= Duration::from_secs(4) && d <= Duration::from_secs(6),
                "{d:?}"
            );
        }
        assert_eq!(schedule.delay(0, None), None);
        assert_eq!(schedule.delay(14, None), None, "exhausted");
    }

    #[test]
    fn retry_after_is_clamped() {
        let schedule = RetrySchedule::default();
        assert_eq!(
            schedule.delay(1, Some(Duration::from_secs(1))),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            schedule.delay(1, Some(Duration::from_secs(7))),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            schedule.delay(1, Some(Duration::from_secs(3600))),
            Some(Duration::from_secs(10))
        );
    }
}
