//! Pacing: when a stream or a shard may be sent to next. A stream backs off after a
//! failed request, a shard after it refused entries (throttling), and a shard's
//! token bucket keeps its writes under the Kinesis limits, scaled by the share of
//! the shard this agent has learned it may use (`share`: other producers may
//! write to the same shard).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::kinesis::ErrorClass;
use super::share::{Prior, Share};
use crate::shard_map::ShardMap;

/// Backoff after a failed request: first step and cap.
pub(super) const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Cap of a shard's backoff: Kinesis counts a shard's writes in one-second
/// windows, so a throttled shard has room again within a second or so.
const SHARD_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// The lowest share a shard's bucket runs at, as a part of the prior.
const SHARE_FLOOR: f64 = 0.5;
/// A throttled shard's wait, at most: one Kinesis window.
const THROTTLED_WAIT: Duration = Duration::from_secs(1);
/// Retry interval when the cause is outside the agent (credentials, missing stream).
pub(super) const ENVIRONMENT_RETRY: Duration = Duration::from_secs(5);

/// A shard's write limits (Kinesis).
pub(super) const SHARD_BYTES_PER_SEC: f64 = 1024.0 * 1024.0;
pub(super) const SHARD_RECORDS_PER_SEC: f64 = 1000.0;
/// Burst a shard's token bucket holds, as time at the full rate: short, because
/// Kinesis counts a shard's writes in one-second windows and a burst on top of the
/// steady rate would cross the limit.
const BUCKET_BURST: f64 = 0.1;

/// The rate of a shard's bucket: the shard's limits × `rate_factor` × the
/// share, which runs no lower than half the prior. Load spread over shards by
/// random keys is the same on each, and so is an agent's fair part of each; a
/// shard cut deep by a run of throttles would otherwise hold its records in the
/// memory window long enough to stall the others behind them.
fn bucket_rate(rate_factor: f64, share: &Share, prior: f64) -> (f64, f64) {
    rate_of(rate_factor * share.value().max(prior * SHARE_FLOOR))
}

/// A shard's limits (bytes, records per second) scaled by `fraction`.
fn rate_of(fraction: f64) -> (f64, f64) {
    (
        SHARD_BYTES_PER_SEC * fraction,
        SHARD_RECORDS_PER_SEC * fraction,
    )
}

/// The delay before attempt `attempts + 1`: exponential, capped, jittered.
pub(super) fn backoff_delay(attempts: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << attempts.min(16));
    let capped = exp.min(BACKOFF_MAX);
    // Full jitter in [capped/2, capped]: spreads retries of many shards apart.
    capped / 2 + capped.mul_f64(fastrand::f64() / 2.0)
}

/// A shard's token bucket: bytes and Kinesis records, refilled at the limited rate.
/// A request may take it below zero (an aggregate can be larger than the burst);
/// the shard then waits until it is back at zero.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    bytes: f64,
    records: f64,
    at: Instant,
}

impl Bucket {
    fn new(now: Instant, rate: (f64, f64)) -> Bucket {
        Bucket {
            bytes: rate.0 * BUCKET_BURST,
            records: rate.1 * BUCKET_BURST,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant, rate: (f64, f64)) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.bytes = (self.bytes + dt * rate.0).min(rate.0 * BUCKET_BURST);
        self.records = (self.records + dt * rate.1).min(rate.1 * BUCKET_BURST);
        self.at = now;
    }

    /// When the bucket will allow a record of `size` bytes (`None`: now). A record
    /// larger than the burst waits for a full bucket, and so does any record when
    /// the burst holds less than one.
    fn ready_at(&self, size: usize, rate: (f64, f64)) -> Option<Instant> {
        let need_bytes = (size as f64).min(rate.0 * BUCKET_BURST);
        let wait_bytes = (need_bytes - self.bytes) / rate.0;
        // Below 10 records a second (a small share), the burst holds less than
        // a record: a full bucket lets one go.
        let need_records = (rate.1 * BUCKET_BURST).min(1.0);
        let wait_records = (need_records - self.records) / rate.1;
        let wait = wait_bytes.max(wait_records);
        (wait > 0.0).then(|| self.at + Duration::from_secs_f64(wait))
    }
}

/// A shard's token bucket and its share.
#[derive(Debug, Clone, Copy)]
struct ShardPace {
    bucket: Bucket,
    share: Share,
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    until: Instant,
    attempts: u32,
}

/// Backoff of a stream and its shards, and the shards' rate limits.
pub(super) struct Pacing {
    /// Fraction of a shard's write limits allowed; 0 turns the limit off.
    rate_factor: f64,
    /// Shards that refused entries, by shard id.
    shards: HashMap<Arc<str>, Backoff>,
    /// Token buckets and shares of shards sent to, by shard id (only with a rate
    /// limit).
    buckets: HashMap<Arc<str>, ShardPace>,
    /// The share a shard not sent to yet starts from.
    prior: Prior,
    /// Set after a failed request; its attempt count lasts until one succeeds.
    stream: Option<Backoff>,
}

impl Pacing {
    pub(super) fn new(rate_factor: f64) -> Pacing {
        Pacing {
            rate_factor,
            shards: HashMap::new(),
            buckets: HashMap::new(),
            prior: Prior::new(),
            stream: None,
        }
    }

    /// The rate of a shard with `share`.
    fn rate(&self, share: f64) -> (f64, f64) {
        rate_of(self.rate_factor * share)
    }

    /// The share of a shard (its prior if not sent to yet).
    #[cfg(test)]
    pub(super) fn share_of(&self, shard: &str) -> f64 {
        self.buckets
            .get(shard)
            .map_or(self.prior.value(), |p| p.share.value())
    }

    fn limited(&self) -> bool {
        self.rate_factor > 0.0
    }

    /// No shard is backing off and no rate limit applies: every queued aggregate is
    /// sendable, and the queue need not be searched.
    pub(super) fn nothing_blocks(&self) -> bool {
        self.shards.is_empty() && !self.limited()
    }

    /// The whole stream waits (after a failed request).
    pub(super) fn stream_waits(&self, now: Instant) -> bool {
        self.stream.is_some_and(|b| b.until > now)
    }

    /// When the stream's wait ends, if it waits.
    pub(super) fn stream_until(&self) -> Option<Instant> {
        self.stream.map(|b| b.until)
    }

    /// Until when `shard` cannot take `size` more bytes (backoff or rate limit);
    /// `None`: now.
    pub(super) fn shard_blocked_until(
        &self,
        shard: &Arc<str>,
        size: usize,
        now: Instant,
    ) -> Option<Instant> {
        let backoff = self.shards.get(shard).map(|b| b.until).filter(|&u| u > now);
        let bucket = self
            .buckets
            .get(shard)
            .filter(|_| self.limited())
            .and_then(|p| {
                let rate = bucket_rate(self.rate_factor, &p.share, self.prior.value());
                let mut b = p.bucket;
                b.refill(now, rate);
                b.ready_at(size, rate)
            });
        match (backoff, bucket) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes `size` bytes and one record from the shard's bucket. A send as soon
    /// as the bucket allowed it says this agent sends at its share.
    pub(super) fn take_tokens(&mut self, shard: Arc<str>, size: usize, now: Instant) {
        if !self.limited() {
            return;
        }
        let prior = self.prior.value();
        let fresh_rate = self.rate(prior);
        let p = self.buckets.entry(shard).or_insert_with(|| ShardPace {
            bucket: Bucket::new(now, fresh_rate),
            share: Share::new(prior, now),
        });
        let rate = bucket_rate(self.rate_factor, &p.share, prior);
        let b = &mut p.bucket;
        // What the bucket would hold without its cap, in bursts: an agent that
        // sends as soon as its bucket lets it finds it at most a burst over.
        let dt = now.saturating_duration_since(b.at).as_secs_f64();
        let slack = ((b.bytes + dt * rate.0) / (rate.0 * BUCKET_BURST))
            .min((b.records + dt * rate.1) / (rate.1 * BUCKET_BURST));
        b.refill(now, rate);
        b.bytes -= size as f64;
        b.records -= 1.0;
        p.share.sent(slack < 2.0, now);
    }

    /// Once per response: shards that refused entries for throttling cut their
    /// share (once per window), shards that took everything grow theirs.
    pub(super) fn shares_answered(
        &mut self,
        throttled: &HashSet<Arc<str>>,
        accepted: &HashSet<Arc<str>>,
        now: Instant,
    ) {
        if !self.limited() {
            return;
        }
        let changes = throttled
            .iter()
            .map(|id| (id, true))
            .chain(accepted.difference(throttled).map(|id| (id, false)));
        for (id, was_throttled) in changes {
            let Some(p) = self.buckets.get_mut(id) else {
                continue;
            };
            // The tokens earned so far are earned at the old rate.
            let rate = bucket_rate(self.rate_factor, &p.share, self.prior.value());
            p.bucket.refill(now, rate);
            let changed = if was_throttled {
                p.share.throttled(now)
            } else {
                p.share.accepted(now)
            };
            if changed {
                self.prior.learn(p.share.value());
            }
        }
    }

    /// The stream's wait is over; its attempt count stays until a request succeeds.
    pub(super) fn on_timer(&mut self, now: Instant) {
        if let Some(b) = &mut self.stream {
            if b.until <= now {
                b.until = now;
            }
        }
    }

    /// A request succeeded: the stream starts over.
    pub(super) fn request_succeeded(&mut self) {
        self.stream = None;
    }

    /// A request failed as a whole: the stream waits, longer each time in a row
    /// (a fixed, long wait for a cause outside the agent).
    pub(super) fn request_failed(&mut self, class: ErrorClass, now: Instant) {
        let attempts = self.stream.map_or(0, |b| b.attempts);
        let delay = match class {
            ErrorClass::Environment => ENVIRONMENT_RETRY,
            _ => backoff_delay(attempts),
        };
        self.stream = Some(Backoff {
            until: now + delay,
            attempts: attempts + 1,
        });
    }

    /// Holds the whole stream for the environment retry interval (records that
    /// could not be given up wait).
    pub(super) fn hold_stream(&mut self, now: Instant) {
        self.stream = Some(Backoff {
            until: now + ENVIRONMENT_RETRY,
            attempts: 1,
        });
    }

    /// Once per shard and response: a shard that refused entries backs off
    /// (throttling needs it, and an internal failure retried at once would only
    /// spin); one that took all of them starts over. A throttled shard waits
    /// half a Kinesis window to a whole one (jittered): its window is full, and
    /// a retry within it is refused again; other producers' entries fill it
    /// meanwhile. Otherwise a shard that took some and refused others waits the
    /// shortest step, without growing.
    pub(super) fn shards_answered(
        &mut self,
        refused: HashSet<Arc<str>>,
        throttled: &HashSet<Arc<str>>,
        mut accepted: HashSet<Arc<str>>,
        now: Instant,
    ) {
        for id in refused {
            let took_some = accepted.remove(&id);
            let was_throttled = throttled.contains(&id);
            let b = self.shards.entry(id).or_insert(Backoff {
                until: now,
                attempts: 0,
            });
            if took_some {
                b.attempts = 0;
            }
            let step = if was_throttled {
                THROTTLED_WAIT.mul_f64(0.5 + fastrand::f64() / 2.0)
            } else {
                backoff_delay(b.attempts).min(SHARD_BACKOFF_MAX)
            };
            b.until = now + step;
            b.attempts += 1;
        }
        for id in accepted {
            if self.shards.get(&id).is_some_and(|b| b.until <= now) {
                self.shards.remove(&id);
            }
        }
    }

    /// The shard map changed: what was learned of shards gone from it is
    /// forgotten; shards kept by a reshard keep their ids, and with them their
    /// share and backoff. New shards start from the prior.
    pub(super) fn keep_shards(&mut self, map: &ShardMap) {
        self.shards.retain(|id, _| map.position(id).is_some());
        self.buckets.retain(|id, _| map.position(id).is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> HashSet<Arc<str>> {
        ids.iter().map(|&s| Arc::from(s)).collect()
    }

    #[test]
    fn backoff_grows_and_stays_capped() {
        for attempts in 0..40 {
            let d = backoff_delay(attempts);
            let cap = BACKOFF_BASE
                .saturating_mul(1u32 << attempts.min(16))
                .min(BACKOFF_MAX);
            assert!(
                d >= cap / 2 && d <= cap,
                "attempt {attempts}: {d:?} outside [{:?}, {cap:?}]",
                cap / 2
            );
        }
    }

    #[test]
    fn a_refusing_shard_backs_off_and_a_clean_answer_clears_it() {
        let now = Instant::now();
        let mut p = Pacing::new(0.0);
        let a: Arc<str> = Arc::from("a");
        p.shards_answered(set(&["a"]), &set(&[]), set(&[]), now);
        let until = p.shard_blocked_until(&a, 10, now).expect("backing off");
        assert!(until > now && until <= now + SHARD_BACKOFF_MAX);
        assert!(!p.nothing_blocks());
        // Still refusing: the step grows (attempt 1: at least 100 ms).
        p.shards_answered(set(&["a"]), &set(&[]), set(&[]), now);
        assert!(p.shard_blocked_until(&a, 10, now).unwrap() >= now + BACKOFF_BASE);
        // Accepted everything once its wait is over: forgotten.
        let later = now + SHARD_BACKOFF_MAX;
        p.shards_answered(set(&[]), &set(&[]), set(&["a"]), later);
        assert_eq!(p.shard_blocked_until(&a, 10, later), None);
        assert!(p.nothing_blocks());
    }

    #[test]
    fn a_shard_at_its_limit_waits_the_shortest_step() {
        let now = Instant::now();
        let mut p = Pacing::new(0.0);
        let a: Arc<str> = Arc::from("a");
        for _ in 0..5 {
            p.shards_answered(set(&["a"]), &set(&[]), set(&[]), now);
        }
        p.shards_answered(set(&["a"]), &set(&[]), set(&["a"]), now);
        let until = p.shard_blocked_until(&a, 10, now).unwrap();
        assert!(until <= now + BACKOFF_BASE, "{:?}", until - now);
    }

    #[test]
    fn the_bucket_limits_a_shard_to_its_rate() {
        let now = Instant::now();
        let mut p = Pacing::new(1.0);
        let a: Arc<str> = Arc::from("a");
        // A fresh shard has no bucket yet: sendable.
        assert_eq!(p.shard_blocked_until(&a, 1000, now), None);
        // The burst is 0.1 s at 1 MiB/s (102.4 KiB); 200 KiB takes it ~97.6 KiB
        // below zero, so the next kilobyte waits ~96 ms.
        p.take_tokens(a.clone(), 200 * 1024, now);
        let until = p.shard_blocked_until(&a, 1000, now).expect("rate limited");
        let wait = until - now;
        assert!(
            wait > Duration::from_millis(95) && wait < Duration::from_millis(97),
            "{wait:?}"
        );
        let after = until + Duration::from_millis(1);
        assert_eq!(p.shard_blocked_until(&a, 1000, after), None);
    }

    /// A record of 5 MiB (on a stream raised to large records) is more than any
    /// bucket holds: it goes once the bucket is full, and the shard then waits
    /// the five seconds it owes at 1 MiB/s, no longer.
    #[test]
    fn a_large_record_goes_at_a_full_bucket_and_the_shard_then_waits_its_time() {
        let now = Instant::now();
        let mut p = Pacing::new(1.0);
        let a: Arc<str> = Arc::from("a");
        let large = 5 * 1024 * 1024;
        p.take_tokens(a.clone(), 1000, now);
        let full = p
            .shard_blocked_until(&a, large, now)
            .expect("waits to fill");
        assert!(full - now < Duration::from_millis(2), "{:?}", full - now);
        let full = full + Duration::from_millis(1);
        assert_eq!(p.shard_blocked_until(&a, large, full), None);
        p.take_tokens(a.clone(), large, full);
        let next = p
            .shard_blocked_until(&a, 1000, full)
            .expect("owes its bytes");
        let wait = next - full;
        assert!(
            wait > Duration::from_millis(4900) && wait < Duration::from_millis(5000),
            "{wait:?}"
        );
        assert_eq!(
            p.shard_blocked_until(&a, large, next + Duration::from_millis(101)),
            None
        );
    }

    #[test]
    fn an_environment_failure_waits_the_long_interval_and_success_resets() {
        let now = Instant::now();
        let mut p = Pacing::new(0.0);
        p.request_failed(ErrorClass::Environment, now);
        assert_eq!(p.stream_until(), Some(now + ENVIRONMENT_RETRY));
        assert!(p.stream_waits(now));
        p.on_timer(now + ENVIRONMENT_RETRY);
        assert!(!p.stream_waits(now + ENVIRONMENT_RETRY));
        p.request_succeeded();
        assert_eq!(p.stream_until(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_shard_waits_a_window_and_cuts_its_share_while_others_go_on() {
        let mut p = Pacing::new(0.8);
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let now = Instant::now();
        p.take_tokens(a.clone(), 1000, now);
        p.take_tokens(b.clone(), 1000, now);
        tokio::time::advance(Duration::from_millis(50)).await;
        let now = Instant::now();
        let (throttled, accepted) = (set(&["a"]), set(&["b"]));
        p.shares_answered(&throttled, &accepted, now);
        p.shards_answered(throttled.clone(), &throttled, accepted, now);
        let wait = p.shard_blocked_until(&a, 1000, now).expect("a waits") - now;
        assert!(
            wait >= THROTTLED_WAIT / 2 && wait <= THROTTLED_WAIT,
            "{wait:?}"
        );
        assert_eq!(p.shard_blocked_until(&b, 1000, now), None);
        assert!(p.share_of("a") < 1.0 && p.share_of("b") == 1.0);
        // A new map that keeps b and drops a: b's share stays, a is forgotten.
        let map = ShardMap::new(vec![crate::shard_map::Shard {
            id: b.clone(),
            start: 0,
            end: u128::MAX,
        }])
        .unwrap();
        p.keep_shards(&map);
        assert_eq!(p.shard_blocked_until(&a, 1000, now), None);
        assert_eq!(p.share_of("b"), 1.0);
    }

    /// An agent idle for a minute holds a tenth of a second of its rate, no
    /// more: three 100 KiB sends at once, and the third waits.
    #[tokio::test(start_paused = true)]
    async fn an_idle_shard_keeps_no_large_burst() {
        let mut p = Pacing::new(1.0);
        let a: Arc<str> = Arc::from("a");
        p.take_tokens(a.clone(), 1000, Instant::now());
        tokio::time::advance(Duration::from_secs(60)).await;
        let now = Instant::now();
        assert_eq!(p.shard_blocked_until(&a, 100 << 10, now), None);
        p.take_tokens(a.clone(), 100 << 10, now);
        p.take_tokens(a.clone(), 100 << 10, now);
        let wait = p.shard_blocked_until(&a, 100 << 10, now).expect("waits") - now;
        assert!(wait > Duration::from_millis(190), "{wait:?}");
    }

    /// Shares learned on one shard seed the shards not sent to yet.
    #[tokio::test(start_paused = true)]
    async fn a_new_shard_starts_from_what_the_others_taught() {
        let mut p = Pacing::new(1.0);
        let a: Arc<str> = Arc::from("a");
        for _ in 0..30 {
            p.take_tokens(a.clone(), 1000, Instant::now());
            p.shares_answered(&set(&["a"]), &set(&[]), Instant::now());
            tokio::time::advance(Duration::from_secs(2)).await;
        }
        assert!(p.share_of("a") < 0.01, "{}", p.share_of("a"));
        assert!(
            p.share_of("never-sent-to") < 0.5,
            "{}",
            p.share_of("never-sent-to")
        );
    }

    /// A share so small that a tenth of a second holds less than one record
    /// (under 10 records a second) still lets a record go once the bucket is full.
    #[tokio::test(start_paused = true)]
    async fn a_tiny_share_still_sends() {
        let mut p = Pacing::new(0.005);
        let a: Arc<str> = Arc::from("a");
        p.take_tokens(a.clone(), 100, Instant::now());
        let until = p
            .shard_blocked_until(&a, 100, Instant::now())
            .expect("waits");
        // 5 records a second: the next one after 0.2 s at most.
        assert!(
            until - Instant::now() <= Duration::from_millis(200),
            "{:?}",
            until - Instant::now()
        );
        tokio::time::advance(Duration::from_millis(201)).await;
        assert_eq!(p.shard_blocked_until(&a, 100, Instant::now()), None);
    }
}
