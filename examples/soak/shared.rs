//! The state the parts of the soak share while it runs, behind one `Arc`
//! ([`Shared`]): what the load sent (the file writers' counts, the socket client's
//! [`SocketLedger`]), what the faults did (counted by `chaos`), which agent runs and
//! its last scraped metrics (set by `main` and `chaos`, scraped by `observe`). The
//! report and the tally only read it once the run is over.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What the socket client knows about each record it sent, by sequence number.
/// Written by the socket client (`load`) only.
#[derive(Default)]
pub(crate) struct SocketLedger {
    pub(crate) states: Mutex<Vec<SocketState>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketState {
    /// Sent, no answer (yet): may or may not arrive.
    Unconfirmed,
    /// Answered `OK`: durable in the spool.
    Acknowledged,
    /// Answered with an error: not spooled.
    Refused,
}

/// State shared by the load, the fault schedule and the observer.
#[derive(Default)]
pub(crate) struct Shared {
    /// The running agent: its incarnation and metrics address (set by `main` and
    /// `chaos` when an agent is ready, cleared while none is).
    pub(crate) agent: Mutex<Option<(usize, SocketAddr)>>,
    /// Lines written per file source (indexed by `Source`), by the file writers.
    pub(crate) written: [Arc<AtomicU64>; 2],
    pub(crate) rotations: [Arc<AtomicU64>; 2],
    pub(crate) socket: Arc<SocketLedger>,
    /// The agent's metrics, last scraped, per incarnation (counters restart at 0).
    pub(crate) scrapes: Mutex<Vec<HashMap<String, f64>>>,
    /// The running agent's spool backlog, last seen.
    pub(crate) spool_records: AtomicU64,
    pub(crate) kills: AtomicU64,
    pub(crate) terms: AtomicU64,
    /// Exits the schedule did not cause: a crash of the agent.
    pub(crate) unexpected_exits: AtomicU64,
    /// Graceful stops that failed (non-zero exit or too slow).
    pub(crate) failed_stops: AtomicU64,
    pub(crate) outages: AtomicU64,
    pub(crate) outage_on: AtomicBool,
    pub(crate) outage_ms: AtomicU64,
    pub(crate) reshards: AtomicU64,
    pub(crate) shard_history: Mutex<Vec<i32>>,
    pub(crate) injected_throttles: AtomicU64,
    pub(crate) injected_500s: AtomicU64,
    pub(crate) injected_resets: AtomicU64,
    /// Firehose records refused with `InternalFailure`.
    pub(crate) injected_failures: AtomicU64,
    /// Firehose requests answered slowly or after the agent's timeout.
    pub(crate) injected_slow: AtomicU64,
    /// When the schedule stopped the agent, and how (`SIGKILL`, `SIGTERM`).
    pub(crate) stops: Mutex<Vec<(Instant, &'static str)>>,
    pub(crate) incarnations: AtomicUsize,
}

impl Shared {
    /// Socket records acknowledged, unconfirmed and refused.
    pub(crate) fn socket_counts(&self) -> (u64, u64, u64) {
        let states = self.socket.states.lock().expect("not poisoned");
        let count = |s| states.iter().filter(|x| **x == s).count() as u64;
        (
            count(SocketState::Acknowledged),
            count(SocketState::Unconfirmed),
            count(SocketState::Refused),
        )
    }

    /// A counter summed over every incarnation of the agent: the series named
    /// `name` whose labels contain `label` (e.g. `code="…"`), if given.
    pub(crate) fn metric(&self, name: &str, label: Option<&str>) -> u64 {
        let scrapes = self.scrapes.lock().expect("not poisoned");
        let total: f64 = scrapes
            .iter()
            .flat_map(|m| m.iter())
            .filter(|(series, _)| {
                let (n, labels) = series.split_once('{').unwrap_or((series, ""));
                n == name && label.is_none_or(|l| labels.contains(l))
            })
            .map(|(_, v)| v)
            .sum();
        total as u64
    }

    /// Every series named `name`, summed over incarnations, by its labels.
    pub(crate) fn metric_by_label(&self, name: &str) -> BTreeMap<String, u64> {
        let scrapes = self.scrapes.lock().expect("not poisoned");
        let mut out = BTreeMap::new();
        for (series, v) in scrapes.iter().flat_map(|m| m.iter()) {
            if let Some((n, labels)) = series.split_once('{') {
                if n == name {
                    *out.entry(labels.trim_end_matches('}').to_owned())
                        .or_default() += *v as u64;
                }
            }
        }
        out
    }
}
