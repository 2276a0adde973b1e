//! Routing and aggregation per shard: records go into the aggregate of the shard
//! whose hash key range holds them, aggregates are sealed when full or when their
//! linger ends, and sealed aggregates wait in one queue to be sent.
//!
//! A changed shard map dissolves every aggregate not in flight and routes its
//! records again; aggregates in flight keep the generation of the map they were
//! built with and are dissolved if they come back failed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::pacing::Pacing;
use crate::aggregate::{Aggregate, Aggregator, Limits, Pending};
use crate::shard_map::ShardMap;

/// A sealed aggregate waiting to be sent (or sent again).
#[derive(Debug)]
pub(super) struct Ready {
    pub(super) agg: Aggregate,
    /// Shard it was built for, in `map` (of `generation`).
    pub(super) shard: usize,
    pub(super) map: Option<Arc<ShardMap>>,
    pub(super) generation: u64,
    pub(super) attempts: u32,
    /// Send in a request of its own: a request with it was refused as a whole for
    /// good, and the culprit is being isolated.
    pub(super) alone: bool,
}

/// Where an accepted entry landed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Placement {
    /// In the shard it was built for.
    Expected,
    /// In another shard whose range holds all its records (a stale map).
    Elsewhere,
    /// In a shard whose range does not hold all its records.
    OutOfRange,
    /// In a shard neither map knows (it was just made by a reshard): checked
    /// against the next map.
    Unknown,
}

/// One stream's records between loading and sending.
pub(super) struct Router {
    linger: Duration,
    limits: Limits,
    /// The shard map in use; `None` until the first ListShards answers.
    map: Option<Arc<ShardMap>>,
    /// Bumped on each changed map; an aggregate of an older one is stale.
    generation: u64,
    /// The open aggregate of each shard of `map`, by index.
    aggs: Vec<Aggregator>,
    /// When each shard's open aggregate took its first record.
    open_since: Vec<Option<Instant>>,
    /// The earliest end of an open aggregate's linger.
    linger_deadline: Option<Instant>,
    /// Records waiting for a shard map that covers their hash key.
    unrouted: Vec<Pending>,
    /// Records to send again once the next shard map refresh has answered.
    held: Vec<Pending>,
    /// Aggregates accepted by a shard no map knew, by that shard: delivered if the
    /// next map gives it a range that holds them all, sent again otherwise.
    unverified: Vec<(String, Vec<Pending>)>,
    /// Sealed aggregates, in the order they are sent.
    ready: VecDeque<Ready>,
    /// A record fell in a gap of the map: it is stale and must be refreshed.
    stale: bool,
}

impl Router {
    pub(super) fn new(linger: Duration, limits: Limits) -> Router {
        Router {
            linger,
            limits,
            map: None,
            generation: 0,
            aggs: Vec::new(),
            open_since: Vec::new(),
            linger_deadline: None,
            unrouted: Vec::new(),
            held: Vec::new(),
            unverified: Vec::new(),
            ready: VecDeque::new(),
            stale: false,
        }
    }

    /// Whether a record fell in a gap of the map since the last call.
    pub(super) fn take_stale(&mut self) -> bool {
        std::mem::take(&mut self.stale)
    }

    /// Puts a record into its shard's aggregate, or aside until a map covers it.
    pub(super) fn route(&mut self, p: Pending) {
        let Some(map) = &self.map else {
            self.unrouted.push(p);
            return;
        };
        let Some(shard) = map.lookup(p.hash_key) else {
            // A gap in the map: it is stale.
            self.unrouted.push(p);
            self.stale = true;
            return;
        };
        let limits = self.limits;
        let agg = &mut self.aggs[shard];
        match agg.try_add(p, &limits) {
            Ok(()) => {}
            Err(p) => {
                self.seal(shard);
                self.aggs[shard]
                    .try_add(p, &limits)
                    .expect("an empty aggregator takes any valid record");
            }
        }
        // Packs fill by size: an aggregate of them is sealed when a record
        // does not fit, or when its linger ends.
        if limits.packs.is_none() && self.aggs[shard].len() >= limits.max_records {
            self.seal(shard);
        } else if self.open_since[shard].is_none() {
            let now = Instant::now();
            self.open_since[shard] = Some(now);
            let deadline = now + self.linger;
            self.linger_deadline = Some(self.linger_deadline.map_or(deadline, |d| d.min(deadline)));
        }
    }

    fn seal(&mut self, shard: usize) {
        self.open_since[shard] = None;
        let agg = self.aggs[shard].take();
        if agg.is_empty() {
            return;
        }
        self.ready.push_back(Ready {
            agg,
            shard,
            map: self.map.clone(),
            generation: self.generation,
            attempts: 0,
            alone: false,
        });
    }

    /// Seals every open aggregate now (a flush, a full window, shutdown).
    pub(super) fn seal_all(&mut self) {
        for shard in 0..self.aggs.len() {
            self.seal(shard);
        }
        self.linger_deadline = None;
    }

    /// When the next open aggregate's linger ends.
    pub(super) fn linger_deadline(&self) -> Option<Instant> {
        self.linger_deadline
    }

    /// Seals the aggregates whose linger has ended.
    pub(super) fn on_timer(&mut self, now: Instant) {
        if self.linger_deadline.is_none_or(|d| d > now) {
            return;
        }
        let linger = self.linger;
        let mut next: Option<Instant> = None;
        for shard in 0..self.aggs.len() {
            if let Some(since) = self.open_since[shard] {
                if since + linger <= now {
                    self.seal(shard);
                } else {
                    next = Some(next.map_or(since + linger, |n| n.min(since + linger)));
                }
            }
        }
        self.linger_deadline = next;
    }

    /// Routes the records waiting for a map, once the map covers all of them.
    pub(super) fn route_waiting(&mut self) {
        let Some(map) = &self.map else {
            return;
        };
        if self.unrouted.is_empty()
            || !self
                .unrouted
                .iter()
                .all(|p| map.lookup(p.hash_key).is_some())
        {
            return;
        }
        for p in std::mem::take(&mut self.unrouted) {
            self.route(p);
        }
    }

    pub(super) fn has_waiting(&self) -> bool {
        !self.unrouted.is_empty()
    }

    /// Takes the records waiting for a map (to check them for expiry).
    pub(super) fn take_waiting(&mut self) -> Vec<Pending> {
        std::mem::take(&mut self.unrouted)
    }

    /// Sets records aside until a map covers them.
    pub(super) fn wait_for_map(&mut self, records: impl IntoIterator<Item = Pending>) {
        self.unrouted.extend(records);
    }

    /// Holds records until the next shard map refresh answers: routed through the
    /// map in use they would land wrong again.
    pub(super) fn hold(&mut self, records: impl IntoIterator<Item = Pending>) {
        self.held.extend(records);
    }

    /// Keeps an aggregate accepted by a shard no map knows, to settle with the
    /// next map.
    pub(super) fn unverified(&mut self, shard: String, records: Vec<Pending>) {
        self.unverified.push((shard, records));
    }

    pub(super) fn take_unverified(&mut self) -> Vec<(String, Vec<Pending>)> {
        std::mem::take(&mut self.unverified)
    }

    pub(super) fn is_current(&self, item: &Ready) -> bool {
        item.generation == self.generation
    }

    /// The id of the shard an aggregate was built for, if the map it was built
    /// with is still in use.
    pub(super) fn shard_id(&self, item: &Ready) -> Option<Arc<str>> {
        let map = self.map.as_ref()?;
        (item.generation == self.generation).then(|| map.get(item.shard).id.clone())
    }

    fn blocked_until(&self, pacing: &Pacing, item: &Ready, now: Instant) -> Option<Instant> {
        let id = self.shard_id(item)?;
        pacing.shard_blocked_until(&id, item.agg.size(), now)
    }

    pub(super) fn queue_is_empty(&self) -> bool {
        self.ready.is_empty()
    }

    /// Whether an aggregate may be sent now.
    pub(super) fn has_sendable(&self, pacing: &Pacing, now: Instant) -> bool {
        if pacing.stream_waits(now) {
            return false;
        }
        if pacing.nothing_blocks() {
            return !self.ready.is_empty();
        }
        self.ready
            .iter()
            .any(|r| self.blocked_until(pacing, r, now).is_none())
    }

    /// When a queued aggregate blocked by its shard may go.
    pub(super) fn next_unblocked(&self, pacing: &Pacing, now: Instant) -> Option<Instant> {
        if pacing.nothing_blocks() {
            return None;
        }
        self.ready
            .iter()
            .filter_map(|item| self.blocked_until(pacing, item, now))
            .filter(|&t| t > now)
            .min()
    }

    /// Takes a request's worth of sendable aggregates off the front of the queue
    /// (taking their shards' tokens); blocked ones keep their place.
    pub(super) fn take_batch(
        &mut self,
        pacing: &mut Pacing,
        now: Instant,
        max_records: usize,
        max_bytes: usize,
    ) -> Vec<Ready> {
        let mut items = Vec::new();
        let mut bytes = 0usize;
        let mut skipped = VecDeque::new();
        while let Some(item) = self.ready.pop_front() {
            if self.blocked_until(pacing, &item, now).is_some() {
                skipped.push_back(item);
                continue;
            }
            let size = item.agg.size();
            if !items.is_empty()
                && (item.alone || items.len() >= max_records || bytes + size > max_bytes)
            {
                self.ready.push_front(item);
                break;
            }
            let alone = item.alone;
            bytes += size;
            if let Some(id) = self.shard_id(&item) {
                pacing.take_tokens(id, size, now);
            }
            items.push(item);
            if alone {
                break;
            }
        }
        // Blocked items keep their place at the front.
        while let Some(item) = skipped.pop_back() {
            self.ready.push_front(item);
        }
        items
    }

    /// Puts an aggregate back at the front of the queue.
    pub(super) fn push_front(&mut self, item: Ready) {
        self.ready.push_front(item);
    }

    /// Splits an aggregate into aggregates of one record, each sent alone, at the
    /// front of the queue.
    pub(super) fn split_alone(&mut self, item: Ready) {
        let limits = Limits {
            max_bytes: usize::MAX,
            max_records: 1,
            format: item.agg.format(),
            packs: item.agg.packs(),
        };
        for p in item.agg.into_records().into_iter().rev() {
            let mut one = Aggregator::new();
            one.try_add(p, &limits)
                .expect("an empty aggregator takes any record");
            self.ready.push_front(Ready {
                agg: one.take(),
                shard: item.shard,
                map: item.map.clone(),
                generation: item.generation,
                attempts: item.attempts,
                alone: true,
            });
        }
    }

    /// Where an accepted entry landed, against where its records belong.
    pub(super) fn check_placement(&self, item: &Ready, actual: &str) -> Placement {
        let Some(built_for) = &item.map else {
            return Placement::Expected;
        };
        if actual.is_empty() || *built_for.get(item.shard).id == *actual {
            return Placement::Expected;
        }
        // Kinesis routed a lone record by its own key: it is where it belongs.
        if item.agg.len() == 1 {
            return Placement::Elsewhere;
        }
        let range = built_for
            .position(actual)
            .map(|i| built_for.get(i).clone())
            .or_else(|| {
                let map = self.map.as_ref()?;
                map.position(actual).map(|i| map.get(i).clone())
            });
        match range {
            Some(shard)
                if item
                    .agg
                    .records()
                    .iter()
                    .all(|p| shard.contains(p.hash_key)) =>
            {
                Placement::Elsewhere
            }
            Some(_) => Placement::OutOfRange,
            None => Placement::Unknown,
        }
    }

    /// Takes a shard map into use; returns whether it differs from the one in use.
    /// A changed map dissolves everything not in flight and routes it again, in
    /// spool order; an unchanged one releases the records held for it.
    pub(super) fn apply_map(&mut self, map: Arc<ShardMap>) -> bool {
        if let Some(old) = &self.map {
            if old.same_shards(&map) {
                for p in std::mem::take(&mut self.held) {
                    self.route(p);
                }
                return false;
            }
        }
        let mut records = std::mem::take(&mut self.unrouted);
        records.append(&mut self.held);
        for agg in &mut self.aggs {
            records.extend(agg.take().into_records());
        }
        for item in std::mem::take(&mut self.ready) {
            records.extend(item.agg.into_records());
        }
        self.generation += 1;
        self.aggs = (0..map.len()).map(|_| Aggregator::new()).collect();
        self.open_since = vec![None; map.len()];
        self.linger_deadline = None;
        self.map = Some(map);
        // Keep the original order: entries of lower ids go first.
        records.sort_by_key(|p| (p.entry, p.index));
        for p in records {
            self.route(p);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Format;
    use crate::record::UserRecord;
    use crate::shard_map::Shard;

    const HALF: u128 = 1 << 127;

    fn map(ranges: &[(&str, u128, u128)]) -> Arc<ShardMap> {
        let shards = ranges
            .iter()
            .map(|&(id, start, end)| Shard {
                id: id.into(),
                start,
                end,
            })
            .collect();
        Arc::new(ShardMap::new(shards).unwrap())
    }

    fn one_shard() -> Arc<ShardMap> {
        map(&[("s0", 0, u128::MAX)])
    }

    fn two_shards() -> Arc<ShardMap> {
        map(&[("s1", 0, HALF - 1), ("s2", HALF, u128::MAX)])
    }

    fn record(entry: u64, hash_key: u128) -> Pending {
        let mut r = UserRecord::new("k", "data");
        r.explicit_hash_key = Some(hash_key);
        Pending::new(entry, 0, r)
    }

    fn router(max_records: usize) -> Router {
        Router::new(
            Duration::from_millis(100),
            Limits {
                max_bytes: 1 << 20,
                max_records,
                format: Format::Kpl,
                packs: None,
            },
        )
    }

    fn take_all(r: &mut Router) -> Vec<Ready> {
        let mut pacing = Pacing::new(0.0);
        r.take_batch(&mut pacing, Instant::now(), 500, 5 << 20)
    }

    #[test]
    fn records_wait_for_a_map_then_go_to_their_shard() {
        let mut r = router(1000);
        r.route(record(1, 5));
        r.route(record(2, HALF + 5));
        assert!(r.has_waiting());
        assert!(r.apply_map(two_shards()));
        assert!(!r.has_waiting());
        r.seal_all();
        let sent = take_all(&mut r);
        let shards: Vec<Option<Arc<str>>> = sent.iter().map(|i| r.shard_id(i)).collect();
        assert_eq!(shards, [Some("s1".into()), Some("s2".into())]);
    }

    #[test]
    fn a_full_aggregate_is_sealed_at_once_and_a_partial_one_at_its_linger() {
        let mut r = router(2);
        r.apply_map(one_shard());
        let start = Instant::now();
        r.route(record(1, 5));
        assert!(r.queue_is_empty());
        let deadline = r.linger_deadline().expect("linger started");
        assert!(deadline >= start + Duration::from_millis(100));
        r.route(record(2, 6));
        assert!(!r.queue_is_empty(), "two records fill the aggregate");
        assert_eq!(r.linger_deadline(), Some(deadline));
        r.route(record(3, 7));
        r.on_timer(deadline - Duration::from_millis(1));
        assert_eq!(take_all(&mut r).len(), 1, "the partial one still lingers");
        r.on_timer(deadline + Duration::from_millis(100));
        assert_eq!(take_all(&mut r).len(), 1);
        assert_eq!(r.linger_deadline(), None);
    }

    #[test]
    fn a_changed_map_dissolves_queued_aggregates_and_routes_them_in_spool_order() {
        let mut r = router(1000);
        r.apply_map(one_shard());
        for (entry, key) in [(3, HALF + 1), (1, 1), (2, HALF + 2)] {
            r.route(record(entry, key));
        }
        r.seal_all();
        assert!(r.apply_map(two_shards()));
        r.seal_all();
        let sent = take_all(&mut r);
        assert_eq!(sent.len(), 2);
        let entries: Vec<Vec<u64>> = sent
            .iter()
            .map(|i| i.agg.records().iter().map(|p| p.entry).collect())
            .collect();
        assert_eq!(entries, [vec![1], vec![2, 3]]);
        // The same shards again: nothing is dissolved.
        assert!(!r.apply_map(two_shards()));
    }

    #[test]
    fn a_gap_in_the_map_asks_for_a_refresh() {
        let mut r = router(1000);
        r.apply_map(map(&[("s1", 0, HALF - 1)]));
        r.route(record(1, HALF + 1));
        assert!(r.take_stale());
        assert!(!r.take_stale());
        assert!(r.has_waiting());
        r.route_waiting();
        assert!(r.has_waiting(), "still not covered");
        r.apply_map(two_shards());
        assert!(!r.has_waiting());
    }
}
