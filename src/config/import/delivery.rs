//! The agent's buffering and connection keys as shardline's `[delivery]`
//! settings. The agent buffers per flow; shardline's delivery settings are
//! shared by every stream, so where flows differ the smallest value is taken
//! (records wait no longer, requests grow no larger, than in any flow).

use super::out::Section;
use super::read::{integer, Flow, Object};
use super::Log;

/// shardline's bounds of `batch_max_bytes`: one full Kinesis record, and the
/// PutRecords limit.
const BATCH_BYTES: (i64, i64) = (1 << 20, 5 << 20);

/// The smallest value of `key` among `flows`, and whether they differ.
pub(super) fn smallest(flows: &[&Flow], key: &str) -> Option<(i64, bool)> {
    let values: Vec<i64> = flows.iter().filter_map(|f| integer(f.map, key)).collect();
    let min = *values.iter().min()?;
    Some((min, values.iter().any(|v| *v != min)))
}

/// `[delivery]`, empty when the agent.json sets none of these keys.
pub(super) fn section(root: &Object, flows: &[Flow], log: &mut Log) -> Section {
    let mut s = Section::new("[delivery]");
    connections(root, &mut s);
    let all: Vec<&Flow> = flows.iter().collect();
    let kinesis: Vec<&Flow> = flows.iter().filter(|f| !f.target.is_firehose()).collect();
    let note = |key: &str, of: &str, differ: bool| {
        let flows = if of.is_empty() {
            "flows".to_owned()
        } else {
            format!("{of} flows")
        };
        let mut n = format!("{key} of the {flows}");
        if differ {
            n = format!("the smallest {n} (shared by every stream)");
        }
        n
    };
    if let Some((ms, differ)) = smallest(&kinesis, "maxBufferAgeMillis") {
        s.key_noted(
            "max_buffered_time_ms",
            ms.to_string(),
            &note("maxBufferAgeMillis", "Kinesis", differ),
        );
    }
    if let Some((n, differ)) = smallest(&all, "maxBufferSizeRecords") {
        let n = n.clamp(1, 500);
        s.key_noted(
            "batch_max_records",
            n.to_string(),
            &note("maxBufferSizeRecords", "", differ),
        );
    }
    if let Some((bytes, differ)) = smallest(&kinesis, "maxBufferSizeBytes") {
        let clamped = bytes.clamp(BATCH_BYTES.0, BATCH_BYTES.1);
        let mut n = note("maxBufferSizeBytes", "Kinesis", differ);
        if clamped != bytes {
            n = format!("{n}, {bytes}, raised to one full record");
        }
        s.key_noted("batch_max_bytes", clamped.to_string(), &n);
    }
    let firehose: Vec<&Flow> = flows.iter().filter(|f| f.target.is_firehose()).collect();
    if let Some((bytes, _)) = smallest(&firehose, "maxBufferSizeBytes") {
        log.lost(
            &mut s,
            "[delivery]",
            &format!("maxBufferSizeBytes {bytes} of the Firehose flows: no equivalent: a PutRecordBatch request carries up to Firehose's 4 MiB"),
        );
    }
    s
}

/// `max_connections` from the agent's connection pool and sending threads,
/// which both bound the requests in flight.
fn connections(root: &Object, s: &mut Section) {
    let pool = integer(root, "maxConnections");
    let threads = integer(root, "maxSendingThreads");
    let (n, from) = match (pool, threads) {
        (Some(p), Some(t)) if t < p => (t, "maxSendingThreads (below maxConnections)"),
        (Some(p), _) => (p, "maxConnections"),
        (None, Some(t)) => (t, "maxSendingThreads"),
        (None, None) => return,
    };
    s.key_noted(
        "max_connections",
        n.max(1).to_string(),
        &format!("{from}: requests in flight"),
    );
}
