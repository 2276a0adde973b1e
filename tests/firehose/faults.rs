//! Delivery to Firehose through faults moto cannot make: the fault endpoint
//! refuses records one by one (ServiceUnavailableException, InternalFailure),
//! fails whole requests (500, 503), answers slowly and cuts connections before
//! or after storing. Every line arrives, and every duplicate is accounted for.

use std::collections::HashMap;
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
    let wanted: std::collections::HashSet<Bytes> = sent.iter().cloned().collect();
    wait_for("every line accepted despite faults", LONG, || {
        let got: std::collections::HashSet<Bytes> = fh
            .accepted()
            .iter()
            .flat_map(|a| split_lines(&a.data))
            .collect();
        wanted.is_subset(&got)
    })
    .await;
    let m = agent.metrics().clone();
    let report = agent.stop().await.unwrap();
    assert_eq!(report.spooled_bytes, 0, "the spool is not drained");
    let got: Vec<Bytes> = fh
        .accepted()
        .iter()
        .flat_map(|a| split_lines(&a.data))
        .collect();
    let dups = duplicates(&sent, &got);
    let rightly = resent_rightly(&fh);
    for (l, extra) in &dups {
        let allowed = rightly.get(l).copied().unwrap_or(0);
        assert!(
            *extra <= allowed,
            "{l:?} arrived {extra} extra times, stored under a cut answer only {allowed} times (seed {})",
            fh.seed
        );
    }
    let stream = internal(NAME);
    let errors = |code: &str| {
        m.read(
            "shardline_put_records_entry_errors_total",
            &[("stream", stream.as_str()), ("code", code)],
        )
    };
    let (unavailable, internal_failures) = fh.records_failed();
    println!(
        "faults (seed {}): {} lines, {} requests, met {:?}; {} lines duplicated ({} copies), \
         {} lines stored under cut answers",
        fh.seed,
        sent.len(),
        fh.request_count(),
        faults_met(&fh),
        dups.len(),
        dups.values().sum::<u64>(),
        rightly.len()
    );
    assert_eq!(errors("ServiceUnavailableException"), unavailable as u64);
    assert_eq!(errors("InternalFailure"), internal_failures as u64);
    // The agent sends without the SDK's own retries: it sees every request
    // the endpoint failed, each counted once, by code.
    let labels = [("stream", stream.as_str())];
    let failed = |code: &str| {
        m.read(
            "shardline_put_records_errors_total",
            &[("stream", stream.as_str()), ("code", code)],
        )
    };
    let answered_500 = fh.count(|o| *o == Outcome::InternalFailure) as u64;
    let answered_503 = fh.count(|o| *o == Outcome::ServiceUnavailable) as u64;
    let cut = fh.count(|o| {
        matches!(
            o,
            Outcome::ResetBeforeStore | Outcome::ResetAfterStore { .. }
        )
    }) as u64;
    assert_eq!(failed("InternalFailure"), answered_500);
    assert_eq!(failed("ServiceUnavailableException"), answered_503);
    assert_eq!(
        m.read("shardline_put_records_errors_total", &labels),
        answered_500 + answered_503 + cut,
        "failed requests: 500s, 503s and cut connections"
    );
    assert_eq!(
        m.read("shardline_throttles_total", &labels),
        unavailable as u64 + answered_503,
        "throttles: refused records and 503 requests"
    );
    assert!(m.read("shardline_records_retried_total", &labels) > 0);
    assert!(m.delivered_count(&stream) >= sent.len() as u64);
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
    let wanted: std::collections::HashSet<Bytes> = sent.iter().cloned().collect();
    wait_for("every line once answers are fast", LONG, || {
        let got: std::collections::HashSet<Bytes> = fh
            .accepted()
            .iter()
            .flat_map(|a| split_lines(&a.data))
            .collect();
        wanted.is_subset(&got)
    })
    .await;
    let m = agent.metrics().clone();
    agent.stop().await.unwrap();
    let got: Vec<Bytes> = fh
        .accepted()
        .iter()
        .flat_map(|a| split_lines(&a.data))
        .collect();
    let dups = duplicates(&sent, &got);
    let rightly = resent_rightly(&fh);
    for (l, extra) in &dups {
        let allowed = rightly.get(l).copied().unwrap_or(0);
        assert!(
            *extra <= allowed,
            "{l:?}: {extra} extra copies, {allowed} given up"
        );
    }
    let stream = internal("slow");
    let errors = m.read("shardline_put_records_errors_total", &[("stream", &stream)]);
    println!(
        "slow answers: {} requests given up, {errors} request errors, {} lines duplicated",
        abandoned(),
        dups.len()
    );
    assert_eq!(errors, abandoned() as u64, "one error per request given up");
}
