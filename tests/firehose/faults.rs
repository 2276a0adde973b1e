//! Delivery to Firehose through faults moto cannot make: the fault endpoint
//! refuses records one by one (ServiceUnavailableException, InternalFailure),
//! fails whole requests (500, 503), answers slowly and cuts connections before
//! or after storing. Every line arrives, and every duplicate is accounted for.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{agent_config, append_lines, duplicates, internal, split_lines, LONG};
use crate::util::firehose::{FirehoseEndpoint, Outcome, Plan};
use crate::util::{file_toml, start_agent, wait_for, Workdir};

const NAME: &str = "faulty";
const CHUNK: usize = 1_000;

fn plan() -> Plan {
    Plan {
        record_unavailable: 0.03,
        record_internal: 0.03,
        request_500: 0.05,
        request_503: 0.05,
        reset_before_store: 0.04,
        reset_after_store: 0.04,
        delay: Duration::from_millis(40),
        ..Plan::default()
    }
}

/// Which kinds of fault the endpoint has made so far, by name.
fn faults_met(fh: &FirehoseEndpoint) -> Vec<(&'static str, usize)> {
    let (unavailable, internal) = fh.records_failed();
    vec![
        ("record ServiceUnavailableException", unavailable),
        ("record InternalFailure", internal),
        ("request 500", fh.count(|o| *o == Outcome::InternalFailure)),
        (
            "request 503",
            fh.count(|o| *o == Outcome::ServiceUnavailable),
        ),
        (
            "reset before storing",
            fh.count(|o| *o == Outcome::ResetBeforeStore),
        ),
        (
            "reset after storing",
            fh.count(|o| matches!(o, Outcome::ResetAfterStore { .. })),
        ),
    ]
}

/// Appends chunks of lines every 100 ms until the endpoint has made every kind
/// of fault at least once (and 20 chunks at least); returns the lines.
async fn feed_until_every_fault(fh: &FirehoseEndpoint, path: &Path) -> Vec<Bytes> {
    let deadline = Instant::now() + LONG;
    let mut sent = Vec::new();
    let mut chunks = 0;
    loop {
        sent.extend(append_lines(
            path,
            "flt",
            chunks * CHUNK..(chunks + 1) * CHUNK,
        ));
        chunks += 1;
        let met = faults_met(fh);
        if chunks >= 20 && met.iter().all(|(_, n)| *n > 0) {
            return sent;
        }
        assert!(
            Instant::now() < deadline,
            "not every fault met after {chunks} chunks (seed {}): {met:?}",
            fh.seed
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many times each line was stored by a request whose answer the agent
/// never got (the connection cut, or the agent gone before the answer): it
/// rightly sent those lines again.
fn resent_rightly(fh: &FirehoseEndpoint) -> HashMap<Bytes, u64> {
    let mut out: HashMap<Bytes, u64> = HashMap::new();
    for a in fh.stored_unanswered() {
        for l in split_lines(&a.data) {
            *out.entry(l).or_default() += 1;
        }
    }
    out
}

/// Every kind of fault at once, on small packed records (many per request): no
/// line is lost. Duplicates: a request cut after the endpoint stored its
/// records leaves the agent without an answer, so it sends those records
/// again, and each of their lines may arrive once more per such cut (the same
/// records can be cut twice); no other fault stores anything, so no other
/// line may arrive twice. The agent's error and throttle counters match what
/// the endpoint refused, code by code, record by record and request by request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_firehose_fault_is_retried_and_only_cut_answers_duplicate() {
    let fh = FirehoseEndpoint::start(plan()).await;
    let work = Workdir::new();
    let log = work.path("app.log");
    let kinesis = format!(
        "delivery_stream = \"{NAME}\"\nendpoint = \"{}\"\npacking_max_bytes = 4096\npacking_linger_ms = 20\n",
        fh.endpoint
    );
    let rest = file_toml(&[&log], "");
    let agent = start_agent(agent_config(&work, &kinesis, &rest)).await;
    let sent = feed_until_every_fault(&fh, &log).await;
    wait_all_stored(&fh, &sent).await;
    let m = agent.metrics().clone();
    let report = agent.stop().await.unwrap();
    assert_eq!(report.spooled_bytes, 0, "the spool is not drained");
    let dups = duplicates_explained(&fh, &sent);
    println!(
        "faults (seed {}): {} lines, {} requests, met {:?}; {} lines duplicated ({} copies), \
         {} lines stored under cut answers",
        fh.seed,
        sent.len(),
        fh.request_count(),
        faults_met(&fh),
        dups.len(),
        dups.values().sum::<u64>(),
        resent_rightly(&fh).len()
    );
    check_counters(&m, &fh, &internal(NAME));
    assert!(m.delivered_count(&internal(NAME)) >= sent.len() as u64);
}

/// Every line stored at the endpoint, every copy, in arrival order.
fn stored_lines(fh: &FirehoseEndpoint) -> Vec<Bytes> {
    fh.accepted()
        .iter()
        .flat_map(|a| split_lines(&a.data))
        .collect()
}

/// Waits until the endpoint has stored every line of `sent`.
async fn wait_all_stored(fh: &FirehoseEndpoint, sent: &[Bytes]) {
    let wanted: HashSet<&Bytes> = sent.iter().collect();
    wait_for("every line stored at the endpoint", LONG, || {
        let got = stored_lines(fh);
        wanted.is_subset(&got.iter().collect())
    })
    .await;
}

/// Checks that every line arrived, and that each extra copy is one the agent
/// rightly sent again ([`resent_rightly`]); returns the extra copies.
fn duplicates_explained(fh: &FirehoseEndpoint, sent: &[Bytes]) -> HashMap<Bytes, u64> {
    let dups = duplicates(sent, &stored_lines(fh));
    let rightly = resent_rightly(fh);
    for (l, extra) in &dups {
        let allowed = rightly.get(l).copied().unwrap_or(0);
        assert!(
            *extra <= allowed,
            "{l:?} arrived {extra} extra times, stored without an answer only {allowed} times (seed {})",
            fh.seed
        );
    }
    dups
}

/// The agent's error and throttle counters for `stream` against what the
/// endpoint did. The agent sends without the SDK's own retries: it sees every
/// request and record the endpoint failed, each counted once, by code.
fn check_counters(m: &shardline::metrics::Metrics, fh: &FirehoseEndpoint, stream: &str) {
    let read = |name: &str, code: Option<&str>| {
        let mut labels = vec![("stream", stream)];
        labels.extend(code.map(|c| ("code", c)));
        m.read(name, &labels)
    };
    let entries = "shardline_put_records_entry_errors_total";
    let requests = "shardline_put_records_errors_total";
    let (unavailable, internal_failures) = fh.records_failed();
    let answered_500 = fh.count(|o| *o == Outcome::InternalFailure) as u64;
    let answered_503 = fh.count(|o| *o == Outcome::ServiceUnavailable) as u64;
    let cut = fh.count(|o| {
        matches!(
            o,
            Outcome::ResetBeforeStore | Outcome::ResetAfterStore { .. }
        )
    }) as u64;
    let unavailable_code = Some("ServiceUnavailableException");
    assert_eq!(read(entries, unavailable_code), unavailable as u64);
    assert_eq!(
        read(entries, Some("InternalFailure")),
        internal_failures as u64
    );
    assert_eq!(read(requests, Some("InternalFailure")), answered_500);
    assert_eq!(read(requests, unavailable_code), answered_503);
    assert_eq!(
        read(requests, None),
        answered_500 + answered_503 + cut,
        "failed requests: 500s, 503s and cut connections"
    );
    assert_eq!(
        read("shardline_throttles_total", None),
        unavailable as u64 + answered_503,
        "throttles: refused records and 503 requests"
    );
    assert!(read("shardline_records_retried_total", None) > 0);
}

/// Answers slower than the agent's request time limit, the records stored
/// before the wait: the agent gives up each such request (one error each) and
/// sends its records again, so they may arrive twice, each line at most once
/// more per request given up after storing it; once answers are fast again,
/// every line arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_slower_than_the_time_limit_are_sent_again_and_nothing_is_lost() {
    let fh = FirehoseEndpoint::start(Plan {
        delay: Duration::from_millis(1500),
        store_before_delay: true,
        ..Plan::default()
    })
    .await;
    let work = Workdir::new();
    let log = work.path("app.log");
    let kinesis = format!(
        "delivery_stream = \"slow\"\nendpoint = \"{}\"\nrequest_timeout_ms = 500\n\
         packing_max_bytes = 4096\npacking_linger_ms = 20\n",
        fh.endpoint
    );
    let agent = start_agent(agent_config(&work, &kinesis, &file_toml(&[&log], ""))).await;
    let sent = append_lines(&log, "slw", 0..5 * CHUNK);
    let abandoned = || fh.requests().iter().filter(|s| s.abandoned).count();
    wait_for("three requests given up", LONG, || abandoned() >= 3).await;
    fh.set_plan(Plan::default());
    wait_all_stored(&fh, &sent).await;
    let m = agent.metrics().clone();
    let report = agent.stop().await.unwrap();
    assert_eq!(report.spooled_bytes, 0, "the spool is not drained");
    let dups = duplicates_explained(&fh, &sent);
    let stream = internal("slow");
    let errors = m.read("shardline_put_records_errors_total", &[("stream", &stream)]);
    println!(
        "slow answers: {} requests given up, {errors} request errors, {} lines duplicated",
        abandoned(),
        dups.len()
    );
    assert_eq!(errors, abandoned() as u64, "one error per request given up");
}
