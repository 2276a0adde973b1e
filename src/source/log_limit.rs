//! Warnings about bad input that a client cannot turn into a log flood.
//!
//! A client can send bad frames or over-long lines as fast as it can write; one log
//! line per refusal would let it fill the journal (and bury what an operator must
//! see). A [`LogLimit`] lets one line through per interval and per source, and that
//! line says how many were held back since the last one. The counters still count
//! every refusal.
//!
//! User-supplied values that do reach a log line or a client's answer are cut to
//! [`EXCERPT_BYTES`](crate::record::EXCERPT_BYTES) with
//! [`excerpt`](crate::record::excerpt).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one warning of a kind per source in this long.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One kind of warning of one source, let through at most once per interval.
#[derive(Debug)]
pub(crate) struct LogLimit {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When a line was last let through.
    last: Option<Instant>,
    /// Lines held back since then.
    suppressed: u64,
}

impl Default for LogLimit {
    fn default() -> Self {
        LogLimit::new(LOG_INTERVAL)
    }
}

impl LogLimit {
    pub(crate) fn new(interval: Duration) -> LogLimit {
        LogLimit {
            interval,
            state: Mutex::new(State::default()),
        }
    }

    /// Whether to log now: `Some(lines held back since the last one)`, or `None`
    /// (held back and counted).
    pub(crate) fn check(&self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Option<u64> {
        let mut s = self
            .state
            .lock()
            .expect("the log limit's lock is never poisoned");
        match s.last {
            Some(last) if now.duration_since(last) < self.interval => {
                s.suppressed += 1;
                None
            }
            _ => {
                s.last = Some(now);
                Some(std::mem::take(&mut s.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_held_back() {
        let limit = LogLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limit.check_at(t0), Some(0));
        for i in 1..1000 {
            assert_eq!(limit.check_at(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(limit.check_at(t0 + Duration::from_secs(10)), Some(999));
        assert_eq!(limit.check_at(t0 + Duration::from_secs(11)), None);
        assert_eq!(limit.check_at(t0 + Duration::from_secs(25)), Some(1));
    }
}
