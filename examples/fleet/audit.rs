//! The stream read back and audited by content, the way a KCL consumer reads
//! it. [`Audit`] owns the copies of each line found; [`read_back`] fills it
//! from every shard (closed parents too) from TRIM_HORIZON, page by page, and
//! the report asks it what was lost and duplicated against the lines written.
//!
//! An aggregate holding a record outside the hash key range of the shard it is
//! stored in is dropped whole, as the KCL's deaggregation does (the agent sends
//! such an aggregate's records again); its copies are counted apart.

use shardline::aggregate::{deaggregate, is_aggregated};

use super::line::parse_line;
use super::model::STREAM;

/// Kinesis records per GetRecords call.
const READ_LIMIT: i32 = 500;

/// Copies of every line in the stream.
#[derive(Default)]
pub(crate) struct Audit {
    /// Per agent, per line: copies a consumer keeps.
    kept: Vec<Vec<u16>>,
    /// Copies in aggregates a consumer drops (outside their shard's range).
    pub(crate) dropped_copies: u64,
    /// User records whose data is not a line of this run.
    pub(crate) unreadable: u64,
    /// Kinesis records read.
    pub(crate) kinesis_records: u64,
}

/// What the audit found against what was written.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub(crate) struct Verdict {
    pub(crate) written: u64,
    /// Written, never kept by a consumer.
    pub(crate) lost: u64,
    /// Kept copies beyond each line's first.
    pub(crate) duplicates: u64,
    pub(crate) duplicate_fraction: f64,
    /// Copies in aggregates a consumer drops.
    pub(crate) dropped_copies: u64,
    /// Lines in the stream that were never written, and records not lines.
    pub(crate) unexpected: u64,
}

impl Audit {
    fn note(&mut self, data: &[u8], kept: bool) {
        let Some(id) = parse_line(data) else {
            self.unreadable += 1;
            return;
        };
        if !kept {
            self.dropped_copies += 1;
            return;
        }
        if self.kept.len() <= id.agent {
            self.kept.resize(id.agent + 1, Vec::new());
        }
        let table = &mut self.kept[id.agent];
        let seq = id.seq as usize;
        if table.len() <= seq {
            table.resize(seq + 1, 0);
        }
        table[seq] = table[seq].saturating_add(1);
    }

    /// The verdict against `written[agent]` lines per agent.
    pub(crate) fn verdict(&self, written: &[u64]) -> Verdict {
        let mut v = Verdict {
            written: written.iter().sum(),
            dropped_copies: self.dropped_copies,
            unexpected: self.unreadable,
            ..Default::default()
        };
        let empty = Vec::new();
        for (agent, &w) in written.iter().enumerate() {
            let table = self.kept.get(agent).unwrap_or(&empty);
            for seq in 0..w as usize {
                match table.get(seq).copied().unwrap_or(0) {
                    0 => v.lost += 1,
                    n => v.duplicates += u64::from(n - 1),
                }
            }
            v.unexpected += table.iter().skip(w as usize).filter(|c| **c > 0).count() as u64;
        }
        v.unexpected += self
            .kept
            .iter()
            .skip(written.len())
            .flatten()
            .filter(|c| **c > 0)
            .count() as u64;
        v.duplicate_fraction = v.duplicates as f64 / v.written.max(1) as f64;
        v
    }
}

/// Reads every shard from TRIM_HORIZON into an [`Audit`].
pub(crate) async fn read_back(client: &aws_sdk_kinesis::Client) -> Result<Audit, String> {
    let mut audit = Audit::default();
    for (shard, range) in super::emulator::every_shard(client, STREAM).await? {
        read_shard(client, &shard, &range, &mut audit).await?;
    }
    Ok(audit)
}

/// Reads one shard to its end (a closed shard) or to its tip (an open one).
async fn read_shard(
    client: &aws_sdk_kinesis::Client,
    shard_id: &str,
    range: &std::ops::RangeInclusive<u128>,
    audit: &mut Audit,
) -> Result<(), String> {
    super::emulator::for_each_record(client, STREAM, shard_id, READ_LIMIT, |key, data| {
        audit.kinesis_records += 1;
        let users = deaggregate(key, None, &data)
            .map_err(|e| format!("a record in {shard_id} does not decode: {e}"))?;
        // A plain record was placed by Kinesis itself (by an explicit hash
        // key GetRecords does not return): kept.
        let kept = !is_aggregated(&data) || users.iter().all(|u| range.contains(&u.hash_key()));
        for u in &users {
            audit.note(&u.data, kept);
        }
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::super::line::{write_line, LineId};
    use super::*;

    fn line(agent: usize, seq: u64) -> Vec<u8> {
        let mut b = Vec::new();
        let id = LineId {
            agent,
            seq,
            written_us: 1,
        };
        write_line(&mut b, id, 64);
        b.pop();
        b
    }

    #[test]
    fn lost_and_duplicated_lines_are_counted_by_content() {
        let mut a = Audit::default();
        a.note(&line(0, 0), true);
        a.note(&line(0, 0), true);
        a.note(&line(0, 2), false);
        a.note(&line(1, 0), true);
        let v = a.verdict(&[3, 1]);
        assert_eq!(
            (v.written, v.lost, v.duplicates, v.dropped_copies),
            (4, 2, 1, 1)
        );
    }
}
