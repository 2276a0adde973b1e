//! Per-stream destinations with the real binary: two emulators stand for two
//! accounts in two regions, a small STS answers `AssumeRole`, and every request's
//! signature tells who signed it for which region. A role that cannot be assumed
//! keeps its stream's records in the spool, is reported with the role and the
//! reason, and shows in `shardline status`; when STS accepts again they go.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shardline::status::{DestinationState, Status, StreamStatus};

use crate::util::sts::{Sts, ASSUMED_KEY};
use crate::util::{
    create_stream, send_lines, socket_toml, stream_data, write_binary_config, AgentProcess,
    Emulator, Workdir,
};

const ROLE: &str = "arn:aws:iam::111122223333:role/shardline-writer";
const RECORDS: usize = 30;

/// A config: `logs` (in.sock) to `a` through `[kinesis]`, `audit` (audit.sock)
/// to `b` in eu-west-1 as `ROLE`, assumed through `sts` with `extra` keys.
fn write_config(
    work: &Workdir,
    a: &Emulator,
    b: &Emulator,
    sts: &Sts,
    extra: &str,
) -> std::path::PathBuf {
    let path = write_binary_config(work, &a.endpoint, "");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&socket_toml(&work.path("audit.sock"), Some("audit")));
    text.push_str(&format!(
        "[[destination]]\nstream = \"audit\"\nregion = \"eu-west-1\"\nendpoint = \"{}\"\n\
         role_arn = \"{ROLE}\"\nexternal_id = \"tenant-42\"\nsession_name = \"shardline-test\"\n\
         sts_endpoint = \"{}\"\n{extra}\n",
        b.endpoint, sts.endpoint
    ));
    std::fs::write(&path, text).unwrap();
    path
}

async fn setup() -> (Emulator, Emulator, Workdir) {
    let a = Emulator::start().await;
    let b = Emulator::start().await;
    create_stream(&a.client().await, "logs", 2).await;
    create_stream(&b.client().await, "audit", 2).await;
    (a, b, Workdir::new())
}

/// Waits until `stream` at `emu` holds `n` records starting with `prefix`; fails
/// on more.
async fn wait_records(emu: &Emulator, stream: &str, prefix: &str, n: usize) {
    let client = emu.client().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let data = stream_data(&client, stream).await;
        let mine = data
            .iter()
            .filter(|d| d.starts_with(prefix.as_bytes()))
            .count();
        assert_eq!(mine, data.len(), "{stream} holds records of another stream");
        assert!(mine <= n, "{stream}: records arrived twice");
        if mine == n {
            return;
        }
        assert!(Instant::now() < deadline, "{stream}: {mine} of {n} records");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn send(work: &Workdir, socket: &str, prefix: &str) {
    send_lines(
        &work.path(socket),
        (0..RECORDS).map(|i| format!("{prefix}-{i}")),
    )
    .await;
}

async fn status(addr: std::net::SocketAddr) -> Status {
    shardline::status::fetch(addr, Duration::from_secs(5))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_streams_in_two_accounts_and_regions() {
    let (a, b, work) = setup().await;
    let sts = Sts::start(true).await;
    // The role is assumed with a profile's credentials, not the environment's.
    let credentials = work.path("credentials");
    std::fs::write(
        &credentials,
        "[default]\naws_access_key_id = test\naws_secret_access_key = test\n\n\
         [audit-base]\naws_access_key_id = AKIDAUDITBASE\naws_secret_access_key = base-secret\n",
    )
    .unwrap();
    std::fs::write(work.path("aws-config"), "").unwrap();
    let config = write_config(&work, &a, &b, &sts, "profile = \"audit-base\"");
    let mut agent = AgentProcess::spawn(&work, "agent", &config, &[], |c| {
        c.env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
            .env("AWS_CONFIG_FILE", work.path("aws-config"));
    });
    let addr = agent.metrics_addr().await;
    send(&work, "in.sock", "logs").await;
    send(&work, "audit.sock", "audit").await;
    wait_records(&a, "logs", "logs-", RECORDS).await;
    wait_records(&b, "audit", "audit-", RECORDS).await;

    // Account A saw only the environment's key for us-east-1, account B only
    // the assumed role's key for eu-west-1.
    let signers = |e: &Emulator| {
        let mut s = e.faults.signers.lock().unwrap().clone();
        s.sort();
        s.dedup();
        s
    };
    assert_eq!(signers(&a), vec!["test/us-east-1".to_owned()]);
    assert_eq!(signers(&b), vec![format!("{ASSUMED_KEY}/eu-west-1")]);
    // The role was assumed as configured, with the profile's key.
    let calls = sts.calls();
    assert!(!calls.is_empty());
    for call in &calls {
        assert_eq!(call.role_arn, ROLE);
        assert_eq!(call.external_id.as_deref(), Some("tenant-42"));
        assert_eq!(call.session_name, "shardline-test");
        assert_eq!(call.signer.as_deref(), Some("AKIDAUDITBASE/eu-west-1"));
    }
    // Cached: not one call per request.
    assert!(calls.len() <= 2, "{} AssumeRole calls", calls.len());

    let s = status(addr).await;
    let names: Vec<&str> = s.streams.iter().map(|st| st.stream.as_str()).collect();
    assert_eq!(names, ["logs", "audit"]);
    for st in &s.streams {
        assert_eq!(st.state, DestinationState::Ok, "{st:?}");
        assert_eq!(st.delivered_records_total, RECORDS as u64);
    }
    assert!(
        s.streams[1].destination.contains(ROLE),
        "{:?}",
        s.streams[1]
    );
    assert!(
        s.streams[1].destination.starts_with("eu-west-1"),
        "{:?}",
        s.streams[1]
    );
    agent.stop().await;
}

/// The audit stream's status once its credentials fail and its records wait in
/// the spool.
async fn wait_audit_refused(addr: std::net::SocketAddr) -> StreamStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(addr).await;
        let audit = s
            .streams
            .iter()
            .find(|st| st.stream == "audit")
            .unwrap()
            .clone();
        if audit.state == DestinationState::CredentialsFailing && s.spool.records >= RECORDS as u64
        {
            return audit;
        }
        assert!(Instant::now() < deadline, "{s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The audit stream's ListShards failures for want of credentials, in metrics
/// `text`.
fn credentials_failures(text: &str) -> Option<f64> {
    text.lines()
        .find(|l| {
            l.starts_with("shardline_list_shards_errors_total{")
                && l.contains("stream=\"audit\"")
                && l.contains("code=\"Credentials\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
}

/// Lets the retries go on a while: the refusal is logged once per interval
/// (10 s) by each of the stream's two tasks (map refresh, delivery), not once
/// per retry.
async fn refusals_are_logged_once_per_interval(agent: &AgentProcess, started: Instant, sts: &Sts) {
    tokio::time::sleep(Duration::from_secs(12)).await;
    let log = agent.log_text();
    let reported = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(ROLE) && l.contains("AccessDenied"))
        .count();
    let intervals = started.elapsed().as_secs() as usize / 10 + 1;
    assert!(reported >= 1, "{log}");
    assert!(
        reported <= 2 * intervals,
        "{reported} reports in {intervals} intervals:\n{log}"
    );
    assert!(sts.calls().len() > reported, "retries are not all logged");
}

/// Waits until every stream is OK and the spool is empty.
async fn wait_all_ok(addr: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(addr).await;
        if s.streams.iter().all(|st| st.state == DestinationState::Ok) && s.spool.records == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_role_waits_in_the_spool_and_is_reported() {
    let (a, b, work) = setup().await;
    let sts = Sts::start(false).await;
    let config = write_config(&work, &a, &b, &sts, "");
    let mut agent = AgentProcess::spawn(&work, "agent", &config, &[], |_| {});
    let addr = agent.metrics_addr().await;
    let started = Instant::now();
    send(&work, "in.sock", "logs").await;
    send(&work, "audit.sock", "audit").await;
    // The other stream is not held up.
    wait_records(&a, "logs", "logs-", RECORDS).await;

    let audit = wait_audit_refused(addr).await;
    let error = audit.error.expect("the problem is shown");
    assert!(error.message.contains(ROLE), "{error:?}");
    assert!(error.message.contains("AccessDenied"), "{error:?}");
    let logs_state = status(addr).await.streams[0].state;
    assert_eq!(logs_state, DestinationState::Ok);
    assert!(stream_data(&b.client().await, "audit").await.is_empty());
    // What the credentials alert reads: no PutRecords was sent, ListShards failed.
    let (_, text) = shardline::status::get(addr, "/metrics", Duration::from_secs(5))
        .await
        .unwrap();
    let text = String::from_utf8(text.to_vec()).unwrap();
    let failed = credentials_failures(&text);
    assert!(failed.is_some_and(|n| n >= 1.0), "{text}");
    assert!(
        b.faults.signers.lock().unwrap().is_empty(),
        "no PutRecords reached account B"
    );

    refusals_are_logged_once_per_interval(&agent, started, &sts).await;

    // STS accepts again: the spooled records go, once each.
    sts.state.allow.store(true, Ordering::Release);
    wait_records(&b, "audit", "audit-", RECORDS).await;
    wait_all_ok(addr).await;
    agent.stop().await;
    wait_records(&a, "logs", "logs-", RECORDS).await;
}
