//! What the model saw of the agents' requests. [`Tap`] owns the counts: the
//! layer (`layer`) notes each PutRecords outcome and each ListShards call;
//! `fleet` asks it whether every written line was accepted (the drain) and takes
//! [`Totals`] when the load stops; the report reads the latencies and the
//! ListShards log. One lock per request, no allocation per line but the
//! latency sample.

use std::sync::Mutex;
use std::time::Instant;

use super::line::LineId;

/// A line's state in the tap: accepted at least once (`ACCEPTED`), and at least
/// once inside an aggregate stored in the shard whose range holds all of it
/// (`PLACED`), the copy a KCL consumer keeps.
const ACCEPTED: u8 = 1;
const PLACED: u8 = 2;

/// The outcome of one PutRecords request of one agent, as the layer read it.
#[derive(Default)]
pub(crate) struct PutOutcome {
    /// The agent that signed the request.
    pub(crate) agent: usize,
    pub(crate) accepted_entries: u64,
    /// Data and partition key bytes of the accepted entries (what Kinesis meters).
    pub(crate) accepted_bytes: u64,
    /// Entries refused with `ProvisionedThroughputExceededException`.
    pub(crate) throttled_entries: u64,
    /// Entries refused with any other code.
    pub(crate) failed_entries: u64,
    /// The lines inside the accepted entries, and whether their aggregate lay
    /// inside its shard's range.
    pub(crate) lines: Vec<(LineId, bool)>,
}

/// Per-agent counters of accepted and throttled entries.
#[derive(Clone, Copy, Default, Debug, serde::Serialize)]
pub(crate) struct AgentCounts {
    pub(crate) accepted_entries: u64,
    pub(crate) accepted_bytes: u64,
    pub(crate) throttled_entries: u64,
    pub(crate) failed_entries: u64,
    /// Whole PutRecords requests refused (an HTTP error).
    pub(crate) failed_requests: u64,
}

/// The counters of every agent at one moment.
#[derive(Clone, Default, Debug)]
pub(crate) struct Totals {
    pub(crate) agents: Vec<AgentCounts>,
}

impl Totals {
    pub(crate) fn sum(&self) -> AgentCounts {
        let mut s = AgentCounts::default();
        for a in &self.agents {
            s.accepted_entries += a.accepted_entries;
            s.accepted_bytes += a.accepted_bytes;
            s.throttled_entries += a.throttled_entries;
            s.failed_entries += a.failed_entries;
            s.failed_requests += a.failed_requests;
        }
        s
    }
}

/// One ListShards call: when, by which agent (none: the model's own client),
/// refused with `LimitExceededException` or not.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ListShardsCall {
    pub(crate) at: Instant,
    pub(crate) agent: Option<usize>,
    pub(crate) refused: bool,
}

/// The tap's counts, behind one lock.
struct State {
    counts: Vec<AgentCounts>,
    /// Per agent, per line: `ACCEPTED` | `PLACED`.
    lines: Vec<Vec<u8>>,
    /// Per agent, lines placed at least once.
    placed: Vec<u64>,
    /// Microseconds from a line's write to its first accept, one per line.
    latencies_us: Vec<u64>,
    list_shards: Vec<ListShardsCall>,
}

/// What the model saw, for the whole run.
pub(crate) struct Tap {
    state: Mutex<State>,
}

impl Tap {
    pub(crate) fn new(agents: usize) -> Tap {
        Tap {
            state: Mutex::new(State {
                counts: vec![AgentCounts::default(); agents],
                lines: vec![Vec::new(); agents],
                placed: vec![0; agents],
                latencies_us: Vec::new(),
                list_shards: Vec::new(),
            }),
        }
    }

    /// Notes one PutRecords outcome, accepted at `now_us`.
    pub(crate) fn note_put(&self, outcome: &PutOutcome, now_us: u64) {
        let mut s = self.state.lock().expect("no holder panics");
        let s = &mut *s;
        let Some(c) = s.counts.get_mut(outcome.agent) else {
            return;
        };
        c.accepted_entries += outcome.accepted_entries;
        c.accepted_bytes += outcome.accepted_bytes;
        c.throttled_entries += outcome.throttled_entries;
        c.failed_entries += outcome.failed_entries;
        for (id, placed) in &outcome.lines {
            let Some(table) = s.lines.get_mut(id.agent) else {
                continue;
            };
            let seq = id.seq as usize;
            if table.len() <= seq {
                table.resize(seq + 1, 0);
            }
            let was = table[seq];
            if was & ACCEPTED == 0 {
                s.latencies_us.push(now_us.saturating_sub(id.written_us));
            }
            if *placed && was & PLACED == 0 {
                s.placed[id.agent] += 1;
            }
            table[seq] = was | ACCEPTED | if *placed { PLACED } else { 0 };
        }
    }

    /// Notes a PutRecords request of `agent` refused as a whole.
    pub(crate) fn note_failed_request(&self, agent: usize) {
        let mut s = self.state.lock().expect("no holder panics");
        if let Some(c) = s.counts.get_mut(agent) {
            c.failed_requests += 1;
        }
    }

    pub(crate) fn note_list_shards(&self, call: ListShardsCall) {
        let mut s = self.state.lock().expect("no holder panics");
        s.list_shards.push(call);
    }

    /// Whether every agent's first `written[agent]` lines were placed.
    pub(crate) fn all_placed(&self, written: &[u64]) -> bool {
        let s = self.state.lock().expect("no holder panics");
        written.iter().zip(&s.placed).all(|(w, p)| p >= w)
    }

    /// Lines placed so far, all agents.
    pub(crate) fn placed(&self) -> u64 {
        self.state
            .lock()
            .expect("no holder panics")
            .placed
            .iter()
            .sum()
    }

    pub(crate) fn totals(&self) -> Totals {
        let s = self.state.lock().expect("no holder panics");
        Totals {
            agents: s.counts.clone(),
        }
    }

    /// Write-to-first-accept latencies, in microseconds, sorted.
    pub(crate) fn latencies_us(&self) -> Vec<u64> {
        let mut v = self
            .state
            .lock()
            .expect("no holder panics")
            .latencies_us
            .clone();
        v.sort_unstable();
        v
    }

    pub(crate) fn list_shards(&self) -> Vec<ListShardsCall> {
        self.state
            .lock()
            .expect("no holder panics")
            .list_shards
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(agent: usize, seq: u64) -> LineId {
        LineId {
            agent,
            seq,
            written_us: 1000,
        }
    }

    #[test]
    fn a_line_is_placed_once_and_timed_at_its_first_accept() {
        let tap = Tap::new(2);
        let outcome = |placed| PutOutcome {
            agent: 1,
            accepted_entries: 1,
            accepted_bytes: 10,
            lines: vec![(id(1, 0), placed), (id(1, 1), true)],
            ..Default::default()
        };
        tap.note_put(&outcome(false), 3000);
        assert!(!tap.all_placed(&[0, 2]));
        tap.note_put(&outcome(true), 9000);
        assert!(tap.all_placed(&[0, 2]));
        assert_eq!(tap.placed(), 2);
        assert_eq!(tap.latencies_us(), vec![2000, 2000]);
        assert_eq!(tap.totals().sum().accepted_bytes, 20);
    }
}
