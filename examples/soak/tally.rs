//! Reading the stream back once the spool drained. [`read_back`] reads every shard
//! (open and closed) from TRIM_HORIZON, takes the aggregates apart and counts each
//! user record's copies into a [`Tally`], which owns those counts; `main` calls it
//! (through `destination`, [`read_back_settled`]) and the report asks the tally
//! what it found against what `Shared` says was sent. The Firehose endpoint
//! (`firehose`) counts the lines it accepts into a `Tally` itself.

use std::sync::atomic::Ordering;
use std::time::Duration;

use shardline::aggregate::{deaggregate, is_aggregated};

use crate::common;
use crate::kinesis::STREAM;
use crate::progress::say;
use crate::record::{parse_id, Source};
use crate::shared::{Shared, SocketState};

/// Kinesis records per GetRecords call: at most 10 MiB of 50 KiB aggregates, as AWS.
const READ_LIMIT: i32 = 200;

/// Copies of each record found in the stream, by source and sequence number.
#[derive(Default, Clone)]
pub(crate) struct Tally {
    /// Deliveries of each id.
    copies: [Vec<u32>; 3],
    /// Deliveries a KCL consumer keeps: not inside an aggregate that holds a
    /// record outside its shard's range.
    placed: [Vec<u32>; 3],
    /// User records without a readable id.
    unreadable: u64,
}

impl Tally {
    /// Counts one delivered copy of the record `data` (kept by a KCL consumer
    /// if `in_range`).
    pub(crate) fn note(&mut self, data: &[u8], in_range: bool) {
        let Some((source, seq)) = parse_id(data) else {
            self.unreadable += 1;
            return;
        };
        let (i, seq) = (source as usize, seq as usize);
        for (table, add) in [(&mut self.copies[i], true), (&mut self.placed[i], in_range)] {
            if table.len() <= seq {
                table.resize(seq + 1, 0);
            }
            table[seq] += u32::from(add);
        }
    }

    pub(crate) fn copies(&self, source: Source, seq: u64) -> u32 {
        self.copies[source as usize]
            .get(seq as usize)
            .copied()
            .unwrap_or(0)
    }

    fn placed(&self, source: Source, seq: u64) -> u32 {
        self.placed[source as usize]
            .get(seq as usize)
            .copied()
            .unwrap_or(0)
    }

    /// User records without a readable id.
    pub(crate) fn unreadable(&self) -> u64 {
        self.unreadable
    }

    /// The ids that count as sent, per source.
    pub(crate) fn sent(&self, state: &Shared) -> Vec<(Source, u64)> {
        let mut out = Vec::new();
        for source in [Source::FileRename, Source::FileCopytruncate] {
            let n = state.written[source as usize].load(Ordering::Relaxed);
            out.extend((0..n).map(|seq| (source, seq)));
        }
        let states = state.socket.states.lock().expect("not poisoned");
        out.extend(
            states
                .iter()
                .enumerate()
                .filter(|(_, s)| **s == SocketState::Acknowledged)
                .map(|(seq, _)| (Source::Socket, seq as u64)),
        );
        out
    }

    /// Sent ids that never arrived.
    pub(crate) fn lost(&self, state: &Shared) -> Vec<(Source, u64)> {
        self.sent(state)
            .into_iter()
            .filter(|(s, seq)| self.copies(*s, *seq) == 0)
            .collect()
    }

    /// Ids delivered at least once.
    pub(crate) fn delivered_unique(&self) -> u64 {
        Source::ALL
            .iter()
            .map(|src| {
                self.copies[*src as usize]
                    .iter()
                    .filter(|c| **c > 0)
                    .count() as u64
            })
            .sum()
    }

    /// User records delivered, every copy counted.
    pub(crate) fn delivered_total(&self) -> u64 {
        self.copies.iter().flatten().map(|c| u64::from(*c)).sum()
    }

    /// Deliveries beyond each id's first.
    pub(crate) fn duplicated(&self) -> u64 {
        self.copies
            .iter()
            .flatten()
            .map(|c| u64::from(c.saturating_sub(1)))
            .sum()
    }

    /// Of `sent`, the ids delivered only in aggregates outside their shard's range.
    pub(crate) fn kcl_lost(&self, sent: &[(Source, u64)]) -> usize {
        sent.iter()
            .filter(|(src, seq)| self.copies(*src, *seq) > 0 && self.placed(*src, *seq) == 0)
            .count()
    }

    /// Copies in aggregates a KCL consumer drops.
    pub(crate) fn outside(&self) -> u64 {
        (0..3)
            .map(|i| {
                self.copies[i]
                    .iter()
                    .zip(&self.placed[i])
                    .map(|(c, p)| u64::from(c - p))
                    .sum::<u64>()
            })
            .sum()
    }

    /// Socket records delivered that were left unconfirmed, and that were refused.
    pub(crate) fn socket_delivered(&self, state: &Shared) -> (usize, usize) {
        let states = state.socket.states.lock().expect("not poisoned");
        let count_where = |want: SocketState| {
            states
                .iter()
                .enumerate()
                .filter(|(seq, st)| **st == want && self.copies(Source::Socket, *seq as u64) > 0)
                .count()
        };
        (
            count_where(SocketState::Unconfirmed),
            count_where(SocketState::Refused),
        )
    }

    /// Ids in the stream that were never produced.
    pub(crate) fn never_sent(&self, state: &Shared) -> usize {
        let states = state.socket.states.lock().expect("not poisoned");
        Source::ALL
            .iter()
            .map(|src| {
                let produced = match src {
                    Source::Socket => states.len() as u64,
                    _ => state.written[*src as usize].load(Ordering::Relaxed),
                };
                self.copies[*src as usize]
                    .iter()
                    .enumerate()
                    .filter(|(seq, c)| **c > 0 && *seq as u64 >= produced)
                    .count()
            })
            .sum::<usize>()
    }
}

/// Reads the stream back, again a few times if records are missing (a line the
/// drain check could not see), saying so; once only if the spool did not drain.
pub(crate) async fn read_back_settled(
    client: &aws_sdk_kinesis::Client,
    state: &Shared,
    drained: bool,
) -> Result<(Tally, u64), String> {
    let mut attempt = 0;
    loop {
        let (tally, kinesis_records) = read_back(client).await?;
        let missing = tally.lost(state).len();
        attempt += 1;
        if missing == 0 || attempt == 3 || !drained {
            return Ok((tally, kinesis_records));
        }
        say!("{missing} sent records not in the stream yet; reading again in 10 s");
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// Reads every shard (open and closed) from TRIM_HORIZON and counts each user
/// record; also returns how many Kinesis records there were.
async fn read_back(client: &aws_sdk_kinesis::Client) -> Result<(Tally, u64), String> {
    let mut tally = Tally::default();
    let mut kinesis_records = 0;
    for (shard, range) in common::emulator::every_shard(client, STREAM).await? {
        let records = common::emulator::read_shard(client, STREAM, &shard, READ_LIMIT).await?;
        for (pk, data) in records {
            kinesis_records += 1;
            let users = deaggregate(&pk, None, &data)
                .map_err(|e| format!("a record in {shard} does not decode: {e}"))?;
            // A KCL consumer drops an aggregate holding a record outside its
            // shard's range, whole. An unaggregated record was placed by
            // Kinesis itself (by an explicit hash key GetRecords does not
            // return): kept.
            let kept = !is_aggregated(&data) || users.iter().all(|u| range.contains(&u.hash_key()));
            for u in users {
                tally.note(&u.data, kept);
            }
        }
    }
    Ok((tally, kinesis_records))
}
