//! A shard's share: the part of a shard's write limits this agent learns it may
//! use when other producers write to the same shard. Nobody tells an agent how
//! many others there are; each one learns from its own throttles:
//!
//! - a shard that refused entries cuts the share to 70–90 % of itself (jittered,
//!   so agents throttled in the same second do not stay in step), or halves it
//!   when it refused more answers than it took since the last cut (a fleet
//!   starting at once); at most once per Kinesis window (a second, plus jitter):
//!   one overloaded window is one signal, however many answers report it;
//! - a shard that took everything while this agent was sending at its share
//!   grows it by a fraction of itself per second of such sending
//!   ([`GROWTH_PER_SEC`], doubling for every [`GROWTH_DOUBLING`] without a cut);
//!   an agent that sends less than its share learns nothing and keeps it;
//! - a shard this agent has not learned about starts from the agent's
//!   [`prior`](Prior): the mean of what its shards taught it lately, so an agent of
//!   a large fleet does not meet each new shard (after a reshard, or in a stream
//!   of a thousand shards) at full rate.
//!
//! Growth in proportion to the share, and cuts that come in proportion to the
//! entries an agent sends (its entries are the ones refused), meet where every
//! agent with more to send has the same share: the fleet converges to equal
//! parts without any agent knowing the others. A lone agent never throttled
//! keeps the whole shard (its `rate_limit_percent`).

use std::time::Duration;

use tokio::time::Instant;

/// Growth of a share per second of sending at it, as a fraction of itself,
/// right after a cut.
pub(super) const GROWTH_PER_SEC: f64 = 0.01;
/// Growth doubles after this long without a cut.
const GROWTH_DOUBLING: Duration = Duration::from_secs(20);
/// Most time paid as growth in one answer: a share so small that its bucket
/// lets a batch go only every few minutes still grows back within ten answers.
const GROWTH_PAID_MAX: Duration = Duration::from_secs(60);
/// The smallest share: an agent keeps sending something, and learns from it.
pub(super) const MIN_SHARE: f64 = 0.0001;
/// The cut when the shard refused more than it took since the last cut.
const DEEP_CUT: f64 = 0.5;
/// The cut on a throttle: the share is multiplied by a factor in
/// `CUT_LOW..CUT_LOW + CUT_SPREAD`.
const CUT_LOW: f64 = 0.7;
const CUT_SPREAD: f64 = 0.2;
/// After a cut, no further cut for a window (Kinesis counts one-second windows)
/// plus up to half a window of jitter.
const CALM: Duration = Duration::from_secs(1);
/// Weight of each change in the prior's running mean.
const PRIOR_WEIGHT: f64 = 0.1;

/// What this agent knows of its part of one shard.
#[derive(Debug, Clone, Copy)]
pub(super) struct Share {
    value: f64,
    /// No cut before this.
    calm_until: Instant,
    /// When the share was last cut (or made).
    cut_at: Instant,
    /// Whether the last send went as soon as the bucket allowed it.
    busy: bool,
    /// When the share last grew (growth is paid per second since).
    grown_at: Instant,
    /// Answers about the shard since the last cut: with a refusal, and without.
    throttled: u32,
    accepted: u32,
}

impl Share {
    pub(super) fn new(value: f64, now: Instant) -> Share {
        Share {
            value: value.clamp(MIN_SHARE, 1.0),
            calm_until: now,
            cut_at: now,
            busy: false,
            grown_at: now,
            throttled: 0,
            accepted: 0,
        }
    }

    /// The fraction of the shard's limits this agent uses.
    pub(super) fn value(&self) -> f64 {
        self.value
    }

    /// A send as soon as the bucket allowed it (`at_limit`): this agent has more
    /// to send than its share allows, and may learn whether it can have more.
    /// A send after the bucket had filled up says it sends less: nothing to
    /// learn, and growth counts from the next send at the limit.
    pub(super) fn sent(&mut self, at_limit: bool, now: Instant) {
        if !at_limit || !self.busy {
            self.grown_at = now;
        }
        self.busy = at_limit;
    }

    /// The shard refused entries: cut, unless cut within the window. Returns
    /// whether it was cut. A shard that refused more answers than it took since
    /// the last cut is far over its limit (a fleet starting, say): halved.
    pub(super) fn throttled(&mut self, now: Instant) -> bool {
        self.throttled += 1;
        if now < self.calm_until {
            return false;
        }
        let cut = if self.throttled > self.accepted {
            DEEP_CUT
        } else {
            CUT_LOW + CUT_SPREAD * fastrand::f64()
        };
        self.value = (self.value * cut).max(MIN_SHARE);
        self.calm_until = now + CALM + CALM.mul_f64(fastrand::f64() / 2.0);
        self.cut_at = now;
        self.grown_at = now;
        (self.throttled, self.accepted) = (0, 0);
        true
    }

    /// The shard took every entry sent to it: grow, if this agent was sending at
    /// its share. Returns whether it grew. Growth is a fraction of the share per
    /// second ([`GROWTH_PER_SEC`]) that doubles every [`GROWTH_DOUBLING`] without a
    /// cut: gentle where the last cut found the limit, quick to take capacity
    /// others left.
    pub(super) fn accepted(&mut self, now: Instant) -> bool {
        self.accepted = self.accepted.saturating_add(1);
        if !self.busy || now < self.calm_until || self.value >= 1.0 {
            return false;
        }
        let dt = now.saturating_duration_since(self.grown_at).as_secs_f64();
        self.grown_at = now;
        let quiet = now.saturating_duration_since(self.cut_at).as_secs_f64();
        let rate = (GROWTH_PER_SEC * (quiet / GROWTH_DOUBLING.as_secs_f64()).exp2()).min(1.0);
        let dt = dt.min(GROWTH_PAID_MAX.as_secs_f64());
        self.value = (self.value * (1.0 + rate * dt) + MIN_SHARE * dt).min(1.0);
        dt > 0.0
    }
}

/// The share a shard this agent has not learned about starts from: a running
/// mean of its shards' shares, moved by every cut and growth.
#[derive(Debug, Clone, Copy)]
pub(super) struct Prior(f64);

impl Prior {
    pub(super) fn new() -> Prior {
        Prior(1.0)
    }

    pub(super) fn value(&self) -> f64 {
        self.0
    }

    pub(super) fn learn(&mut self, share: f64) {
        self.0 = (self.0 * (1.0 - PRIOR_WEIGHT) + share * PRIOR_WEIGHT).clamp(MIN_SHARE, 1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends at the limit and answers accepted, `secs` times a second apart.
    async fn busy_seconds(s: &mut Share, secs: u32) {
        for _ in 0..secs {
            s.sent(true, Instant::now());
            tokio::time::advance(Duration::from_secs(1)).await;
            s.accepted(Instant::now());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttle_cuts_once_per_window_by_a_jittered_factor() {
        let mut s = Share::new(1.0, Instant::now());
        // Taken before: a gentle cut.
        s.accepted(Instant::now());
        assert!(s.throttled(Instant::now()));
        let after_one = s.value();
        assert!(
            (CUT_LOW..=CUT_LOW + CUT_SPREAD).contains(&after_one),
            "{after_one}"
        );
        // More answers about the same overloaded window: no further cut.
        tokio::time::advance(Duration::from_millis(900)).await;
        assert!(!s.throttled(Instant::now()));
        assert_eq!(s.value(), after_one);
        // A later window where the shard refused more than it took: halved.
        tokio::time::advance(Duration::from_millis(700)).await;
        assert!(s.throttled(Instant::now()));
        assert_eq!(s.value(), after_one * DEEP_CUT);
        // Cut after cut, the share never reaches zero.
        for _ in 0..100 {
            tokio::time::advance(Duration::from_secs(2)).await;
            s.throttled(Instant::now());
        }
        assert_eq!(s.value(), MIN_SHARE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_share_grows_only_while_sent_at_its_limit_and_faster_the_longer_uncut() {
        let mut s = Share::new(0.5, Instant::now());
        // Accepted, but this agent sent less than its share: nothing learned.
        s.sent(false, Instant::now());
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(!s.accepted(Instant::now()));
        assert_eq!(s.value(), 0.5);
        // Ten seconds at its limit, right after a cut: 1 % a second and a bit
        // more each second (doubling every 20 s): about 13 %.
        s.throttled(Instant::now());
        let cut = s.value();
        tokio::time::advance(Duration::from_millis(1500)).await;
        s.sent(false, Instant::now());
        busy_seconds(&mut s, 10).await;
        let gained = s.value() / cut - 1.0;
        assert!(gained > 0.11 && gained < 0.16, "{gained}");
        // Forty seconds uncut: growth has doubled twice, to 4 % a second.
        let mut s = Share::new(0.001, Instant::now());
        s.throttled(Instant::now());
        tokio::time::advance(Duration::from_millis(1500)).await;
        s.sent(false, Instant::now());
        busy_seconds(&mut s, 38).await;
        let before = s.value();
        busy_seconds(&mut s, 1).await;
        let rate = s.value() / before - 1.0;
        assert!(rate > 0.035 && rate < 0.055, "{rate}");
        // It never passes the whole shard.
        busy_seconds(&mut s, 200).await;
        assert_eq!(s.value(), 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_time_is_not_paid_as_growth() {
        let mut s = Share::new(0.2, Instant::now());
        busy_seconds(&mut s, 1).await;
        let v = s.value();
        // A minute of sending below the share, then at it again for 0.5 s.
        s.sent(false, Instant::now());
        tokio::time::advance(Duration::from_secs(60)).await;
        s.sent(true, Instant::now());
        tokio::time::advance(Duration::from_millis(500)).await;
        s.accepted(Instant::now());
        let gained = s.value() / v - 1.0;
        assert!(gained < 0.05, "{gained}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_growth_in_the_calm_after_a_cut() {
        let mut s = Share::new(0.98, Instant::now());
        s.sent(true, Instant::now());
        assert!(s.throttled(Instant::now()));
        let cut = s.value();
        tokio::time::advance(Duration::from_millis(500)).await;
        s.sent(true, Instant::now());
        assert!(!s.accepted(Instant::now()));
        assert_eq!(s.value(), cut);
    }

    #[test]
    fn the_prior_follows_what_shards_teach() {
        let mut p = Prior::new();
        for _ in 0..100 {
            p.learn(0.1);
        }
        assert!((p.value() - 0.1).abs() < 0.01, "{}", p.value());
        p.learn(0.0);
        assert!(p.value() >= MIN_SHARE);
    }

    /// A share at the floor, whose bucket lets a batch go every few minutes,
    /// grows back within ten answers once nobody throttles it.
    #[tokio::test(start_paused = true)]
    async fn a_share_at_the_floor_grows_back_within_ten_answers() {
        let mut s = Share::new(MIN_SHARE, Instant::now());
        let mut answers = 0;
        while s.value() < 0.5 {
            s.sent(true, Instant::now());
            // The next batch goes when 64 KiB at the share's rate are paid.
            let wait = 65536.0 / (s.value() * 1_048_576.0);
            tokio::time::advance(Duration::from_secs_f64(wait)).await;
            s.accepted(Instant::now());
            answers += 1;
        }
        assert!(answers <= 10, "{answers} answers");
    }
}
