//! Each destination's own delivery settings, with the real binary: two streams
//! in one agent, one waiting long for its aggregates and one sending at once,
//! seen in how their records arrive in the emulator; and the default stream
//! written as a `[[destination]]`.

use std::time::Duration;

use crate::util::{
    create_stream, read_stream, send_lines, socket_toml, AgentProcess, Emulator, Workdir,
};

const LINES: usize = 10;
const LIMIT: Duration = Duration::from_secs(60);

/// `logs` (the default, written as a `[[destination]]`) waits 20 ms for an
/// aggregate, `audit` 30 s: lines sent 100 ms apart reach `logs` in one
/// Kinesis record each and `audit` in one aggregate; `audit`'s own
/// dead-letter file is created at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_destination_waits_for_its_aggregates_as_it_says() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 1).await;
    create_stream(&client, "audit", 1).await;
    let work = Workdir::new();
    let audit_dead = work.path("audit-dead.ndjson");
    let config = work.path("shardline.toml");
    std::fs::write(
        &config,
        format!(
            "[[destination]]\nstream = \"logs\"\ndefault = true\nregion = \"us-east-1\"\n\
             endpoint = \"{endpoint}\"\nmax_buffered_time_ms = 20\n\
             [[destination]]\nstream = \"audit\"\nmax_buffered_time_ms = 30000\n\
             dead_letter_path = \"{dead}\"\n\
             [delivery]\nmax_buffered_time_ms = 5000\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n[spool]\ndir = \"{spool}\"\nflush_interval_ms = 50\n\
             {logs}{audit}",
            endpoint = emu.endpoint,
            dead = audit_dead.display(),
            spool = work.spool().display(),
            logs = socket_toml(&work.path("in.sock"), None),
            audit = socket_toml(&work.path("audit.sock"), Some("audit")),
        ),
    )
    .unwrap();
    let mut agent = AgentProcess::spawn(&work, "agent", &config, &[], |_| {});
    agent.metrics_addr().await;
    assert!(
        audit_dead.exists(),
        "audit's dead-letter file was not created"
    );
    for i in 0..LINES {
        send_lines(&work.path("in.sock"), vec![format!("logs {i}")]).await;
        send_lines(&work.path("audit.sock"), vec![format!("audit {i}")]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = std::time::Instant::now() + LIMIT;
    let logs = loop {
        let logs = read_stream(&client, "logs").await;
        if logs.iter().map(|r| r.users.len()).sum::<usize>() == LINES {
            break logs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "logs' lines did not all arrive"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Nothing of audit's yet: its aggregate waits up to 30 s.
    let early = read_stream(&client, "audit").await;
    assert!(
        early.is_empty(),
        "audit sent before its 30 s: {} records",
        early.len()
    );
    agent.stop().await;
    // The stop flushes audit's partial aggregate: one record, every line.
    let audit = read_stream(&client, "audit").await;
    assert_eq!(audit.len(), 1, "audit's lines in {} records", audit.len());
    assert_eq!(audit[0].users.len(), LINES);
    assert!(
        logs.len() >= LINES / 2,
        "logs waited as audit does: {LINES} lines in {} records",
        logs.len()
    );
}
