//! Retry pacing for a cluster that does not answer: 1 s, 2 s, 4 s … up to 60 s, so an
//! unreachable cluster is retried without a log flood or a busy loop.

use std::time::Duration;

#[derive(Debug, Default)]
pub struct Backoff {
    /// Failed attempts since the last success.
    pub attempt: u32,
}

impl Backoff {
    /// The wait before the next attempt (and counts this failure).
    pub fn next_wait(&mut self) -> Duration {
        let secs = (1u64 << self.attempt.min(6)).min(60);
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_secs(secs)
    }

    /// An attempt succeeded: the next failure waits 1 s again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_a_minute_and_start_over_after_a_success() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..9).map(|_| b.next_wait().as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.attempt, 9);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_secs(1));
    }
}
