//! librdkafka's own log lines, rate-limited. A client that cannot reach or log in to a cluster
//! logs a FAIL line and a "Global error" line every reconnect (about every half second, per
//! client; a flow has several): the outage is news once, not twice a second. This layer lets
//! the first line of each kind through, drops its repeats for a period, and then says how many
//! were dropped. Ferry's own reports (per flow, per cluster) are not touched.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// The targets rdkafka logs librdkafka's lines and error events under.
const TARGETS: &[&str] = &["librdkafka", "rdkafka::client"];
/// Kinds remembered at most (a flood of distinct lines must not grow memory without bound).
const MAX_KINDS: usize = 1024;

/// Lets a repeating log line through once per `every`, counting what it held back: client
/// errors repeat on every poll while a cluster is down.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    pub fn new(every: Duration) -> Self {
        Throttle { every, state: Mutex::new((None, 0)) }
    }

    /// `Some(held back since the last line)` when a line may be written now.
    pub fn allow(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.0.is_some_and(|t| now - t < self.every) {
            state.1 += 1;
            return None;
        }
        let held = state.1;
        *state = (Some(now), 0);
        Some(held)
    }

    /// Whether a line would go out now (its period is over).
    fn open(&self, now: Instant) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0.is_none_or(|t| now - t >= self.every)
    }
}

/// A [`Throttle`] per kind of librdkafka line.
pub struct LibrdkafkaThrottle {
    every: Duration,
    seen: Mutex<HashMap<String, Throttle>>,
}

impl LibrdkafkaThrottle {
    pub fn new(every: Duration) -> Self {
        LibrdkafkaThrottle { every, seen: Mutex::new(HashMap::new()) }
    }

    /// Whether a line with this message goes out now; the count of its suppressed repeats when
    /// a period ended with some.
    fn admit(&self, message: &str, now: Instant) -> (bool, u64) {
        let kind = kind_of(message);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_KINDS && !seen.contains_key(&kind) {
            seen.retain(|_, t| !t.open(now));
        }
        match seen.entry(kind).or_insert_with(|| Throttle::new(self.every)).allow(now) {
            Some(held) => (true, held),
            None => (false, 0),
        }
    }
}

/// Lines of one kind differ only in numbers (timings, counts), not in addresses: a number
/// right after '.', ':' or '/' (part of `127.0.0.1:9092`) is kept, so each cluster's lines are
/// their own kind.
fn kind_of(message: &str) -> String {
    let mut out = String::new();
    let (mut prev, mut keep_run) = (' ', true);
    for c in message.chars().take(300) {
        if c.is_ascii_digit() {
            if !prev.is_ascii_digit() {
                keep_run = matches!(prev, '.' | ':' | '/');
            }
            if keep_run {
                out.push(c);
            }
        } else {
            out.push(c);
        }
        prev = c;
    }
    out
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
}

impl<S: Subscriber> Layer<S> for LibrdkafkaThrottle {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        if !TARGETS.contains(&event.metadata().target()) {
            return true;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        let (admitted, suppressed) = self.admit(&message.0, Instant::now());
        if suppressed > 0 {
            tracing::info!(target: "ferry::librdkafka", suppressed, every_s = self.every.as_secs(), "repeats of the next librdkafka line were suppressed");
        }
        admitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_lets_one_line_through_per_period_and_counts_the_rest() {
        let t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.allow(t0), Some(0));
        assert_eq!(t.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(t.allow(t0 + Duration::from_secs(9)), None);
        assert_eq!(t.allow(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(t.allow(t0 + Duration::from_secs(11)), None);
    }

    #[test]
    fn one_line_per_kind_per_period_and_the_count_of_the_rest() {
        let t = LibrdkafkaThrottle::new(Duration::from_secs(10));
        let start = Instant::now();
        let fail = |port: u16, ms: u32| format!("FAIL [thrd:sasl_plaintext://127.0.0.1:{port}/bootstrap]: Authentication failed (after {ms}ms in state AUTH_REQ)");
        assert_eq!(t.admit(&fail(4300, 120), start), (true, 0));
        for i in 0..20 {
            assert_eq!(t.admit(&fail(4300, 100 + i), start + Duration::from_millis(500 * u64::from(i))), (false, 0));
        }
        // Another kind is not held back by the first, nor is the same line of another cluster.
        assert_eq!(t.admit("Global error: AllBrokersDown", start), (true, 0));
        assert_eq!(t.admit(&fail(4301, 120), start), (true, 0));
        assert_eq!(t.admit(&fail(4300, 99), start + Duration::from_secs(11)), (true, 20));
        assert_eq!(t.admit(&fail(4300, 99), start + Duration::from_secs(12)), (false, 0));
    }

    #[test]
    fn memory_is_bounded_by_distinct_kinds() {
        let t = LibrdkafkaThrottle::new(Duration::from_secs(1));
        let start = Instant::now();
        for i in 0..5000 {
            t.admit(&format!("line {}", "x".repeat(i % 3000)), start + Duration::from_millis(i as u64 * 10));
        }
        assert!(t.seen.lock().unwrap().len() <= MAX_KINDS);
    }
}
