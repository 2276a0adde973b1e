//! Watching the running agent: [`scrape`] reads its `/metrics` and `/status` into
//! `Shared` (the scrapes per incarnation, the spool backlog); [`observe`], a task
//! `main` starts with the load and aborts once the spool drained, scrapes every
//! `SCRAPE_INTERVAL` and prints a progress line now and then. `main` scrapes once
//! more after the drain, so the report sees the last counters.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::kinesis::INITIAL_SHARDS;
use crate::progress::say;
use crate::shared::Shared;

/// How often the agent's metrics are scraped; counters of the last interval
/// before a SIGKILL are not counted.
const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

/// Scrapes the agent's metrics every `SCRAPE_INTERVAL` and prints a progress line
/// every `every`.
pub(crate) async fn observe(state: Arc<Shared>, every: Duration) {
    let started = Instant::now();
    let mut next_line = every;
    loop {
        tokio::time::sleep(SCRAPE_INTERVAL).await;
        scrape(&state).await;
        if started.elapsed() >= next_line {
            next_line += every;
            progress_line(&state);
        }
    }
}

fn progress_line(state: &Shared) {
    let (acked, unconfirmed, _) = state.socket_counts();
    let shards = state
        .shard_history
        .lock()
        .expect("not poisoned")
        .last()
        .copied()
        .unwrap_or(INITIAL_SHARDS);
    say!(
        "sent files {} socket {} (+{} unconfirmed) | spool {} | delivered {} | \
         throttled {} | misrouted {} | shards {} | kills {} | outage {}",
        state.written[0].load(Ordering::Relaxed) + state.written[1].load(Ordering::Relaxed),
        acked,
        unconfirmed,
        state.spool_records.load(Ordering::Relaxed),
        state.metric("shardline_records_delivered_total", None),
        state.metric("shardline_throttles_total", None),
        state.metric("shardline_records_misrouted_total", None),
        shards,
        state.kills.load(Ordering::Relaxed),
        if state.outage_on.load(Ordering::Relaxed) {
            "ON"
        } else {
            "off"
        },
    );
}

/// One scrape of the running agent's `/metrics` and `/status`.
pub(crate) async fn scrape(state: &Shared) {
    let Some((n, addr)) = *state.agent.lock().expect("not poisoned") else {
        return;
    };
    let timeout = Duration::from_secs(2);
    if let Ok((200, body)) = shardline::status::get(addr, "/metrics", timeout).await {
        let text = String::from_utf8_lossy(&body);
        let map: HashMap<String, f64> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            })
            .collect();
        let mut scrapes = state.scrapes.lock().expect("not poisoned");
        if scrapes.len() <= n {
            scrapes.resize_with(n + 1, HashMap::new);
        }
        scrapes[n] = map;
    }
    if let Ok(status) = shardline::status::fetch(addr, timeout).await {
        state
            .spool_records
            .store(status.spool.records, Ordering::Relaxed);
    }
}
