//! The metrics endpoint (`/metrics`, `/status`) and `shardline status`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shardline::status::{self, DestinationState, Status};

use crate::util::{
    config, create_stream, send_lines, shardline_command, socket_toml, start_agent, wait_for,
    write_binary_config, AgentProcess, Emulator, Workdir,
};

const LIMIT: Duration = Duration::from_secs(30);

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let (code, body) = status::get(addr, path, Duration::from_secs(10))
        .await
        .unwrap();
    (code, String::from_utf8(body.to_vec()).unwrap())
}

async fn fetch(addr: std::net::SocketAddr) -> Status {
    status::fetch(addr, Duration::from_secs(10)).await.unwrap()
}

/// The value of an unlabelled sample, or of the one with exactly these labels.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == name_and_labels).then(|| value.parse().unwrap())
    })
}

/// Polls the status until `f` holds.
async fn wait_status(
    addr: std::net::SocketAddr,
    what: &str,
    mut f: impl FnMut(&Status) -> bool,
) -> Status {
    let deadline = Instant::now() + LIMIT;
    loop {
        let s = fetch(addr).await;
        if f(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last status: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/metrics` and `/status` once 200 records were delivered and none waits; an
/// unknown path is 404.
async fn check_idle_endpoint(addr: std::net::SocketAddr) {
    let (code, text) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(text.ends_with("# EOF\n"), "not OpenMetrics text:\n{text}");
    assert!(
        text.contains("# TYPE shardline_spool_bytes gauge"),
        "{text}"
    );
    assert_eq!(
        sample(&text, "shardline_records_delivered_total{stream=\"logs\"}"),
        Some(200.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "shardline_spool_records"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(sample(&text, "shardline_spool_bytes"), Some(0.0), "{text}");
    assert_eq!(
        sample(&text, "shardline_spool_oldest_record_age_seconds"),
        Some(0.0),
        "{text}"
    );
    assert!(
        sample(&text, "shardline_spool_max_bytes").unwrap() > 0.0,
        "{text}"
    );
    let s = fetch(addr).await;
    assert_eq!(s.pid, std::process::id());
    assert_eq!(s.spool.records, 0);
    assert_eq!(s.spool.oldest_record_age_seconds, None);
    assert_eq!(s.delivered_records_total, 200);
    assert!(s.delivery_rate_records_per_second > 0.0, "{s:#?}");
    assert_eq!(s.streams.len(), 1);
    assert_eq!(s.streams[0].stream, "logs");
    assert_eq!(s.streams[0].state, DestinationState::Ok);
    assert_eq!(s.last_error, None);
    assert_eq!(get(addr, "/nothing").await.0, 404);
}

/// Kinesis goes away: 50 records sent to `sock` wait in the spool, and the status
/// and the metrics say how many, how old, and the error.
async fn check_backlog(emu: &Emulator, sock: &std::path::Path, addr: std::net::SocketAddr) {
    emu.faults.outage.store(true, Ordering::Release);
    let sent = Instant::now();
    send_lines(sock, (0..50).map(|i| format!("later {i}"))).await;
    let s = wait_status(addr, "a backlog of 50 with an error", |s| {
        s.spool.records == 50 && s.last_error.is_some() && sent.elapsed().as_secs_f64() > 1.5
    })
    .await;
    assert!(s.spool.bytes > 0);
    let age = s
        .spool
        .oldest_record_age_seconds
        .expect("an age while records wait");
    assert!(
        age >= 1.0 && age <= sent.elapsed().as_secs_f64() + 1.0,
        "age {age} s, sent {:?} ago",
        sent.elapsed()
    );
    let (_, text) = get(addr, "/metrics").await;
    assert_eq!(
        sample(&text, "shardline_spool_records"),
        Some(50.0),
        "{text}"
    );
    assert!(
        sample(&text, "shardline_spool_oldest_record_age_seconds").unwrap() >= 1.0,
        "{text}"
    );
    let e = s.last_error.clone().unwrap();
    assert_eq!(e.stream, "logs");
    assert!(!e.code.is_empty() && !e.message.is_empty(), "{e:?}");
    assert_eq!(s.streams[0].state, DestinationState::Failing, "{s:#?}");
    assert_eq!(s.streams[0].error.as_ref().map(|e| &e.code), Some(&e.code));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_serves_metrics_and_status_with_backlog_age_and_last_error() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 2).await;
    let work = Workdir::new();
    let sock = work.path("in.sock");
    let agent = start_agent(config(
        &work,
        &emu.endpoint,
        "logs",
        &socket_toml(&sock, None),
    ))
    .await;
    let addr = agent.metrics_addr();
    assert!(addr.ip().is_loopback(), "{addr}");
    assert_ne!(addr.port(), 0, "the bound port is reported, not 0");

    send_lines(&sock, (0..200).map(|i| format!("line {i}"))).await;
    wait_for("200 delivered", LIMIT, || {
        agent.metrics().delivered_count("logs") == 200
    })
    .await;
    check_idle_endpoint(addr).await;
    check_backlog(&emu, &sock, addr).await;

    emu.faults.outage.store(false, Ordering::Release);
    let s = wait_status(addr, "the backlog delivered", |s| {
        s.spool.records == 0 && s.streams[0].state == DestinationState::Ok
    })
    .await;
    assert_eq!(s.streams[0].error, None);
    assert_eq!(s.delivered_records_total, 250);
    assert_eq!(s.spool.oldest_record_age_seconds, None);
    agent.stop().await.unwrap();
}

fn status_command(config: &std::path::Path, json: bool) -> std::process::Output {
    let mut c = shardline_command();
    c.arg("status").arg("--config").arg(config);
    if json {
        c.arg("--json");
    }
    c.output().unwrap()
}

/// `shardline status` against the real binary: human and JSON output while it
/// runs, exit status 3 once it is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_command_reports_the_running_agent_and_fails_when_it_is_down() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 1).await;
    let work = Workdir::new();
    let config = write_binary_config(&work, &emu.endpoint, "");
    let mut agent = AgentProcess::spawn(&work, "agent", &config, &[], |_| {});
    let addr = agent.metrics_addr().await;
    // `status` reads the address from the config: one naming the bound port.
    let status_config = work.path("status.toml");
    std::fs::write(
        &status_config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("127.0.0.1:0", &addr.to_string()),
    )
    .unwrap();
    send_lines(&work.path("in.sock"), (0..100).map(|i| format!("r{i}"))).await;

    let deadline = Instant::now() + LIMIT;
    let s: Status = loop {
        let out = status_command(&status_config, true);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s: Status = serde_json::from_slice(&out.stdout).unwrap();
        if s.delivered_records_total == 100 {
            break s;
        }
        assert!(Instant::now() < deadline, "not delivered: {s:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(s.pid, agent.child.id());
    assert_eq!(s.spool.records, 0);
    let out = status_command(&status_config, false);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        &format!("shardline {}, pid {}", env!("CARGO_PKG_VERSION"), s.pid),
        "backlog:        0 records, 0 B",
        "oldest unsent:  none",
        "100 delivered since start",
        "last error:     none",
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }
    // Port 0 in the config cannot name a running agent.
    let out = status_command(&config, false);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--addr"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let status_file = agent.status_file.clone();
    agent.stop().await;
    assert!(!status_file.exists(), "status file left behind");
    let out = status_command(&status_config, false);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("shardline is not running (no answer at {addr})")),
        "{err}"
    );
    let out = status_command(&status_config, true);
    assert_eq!(out.status.code(), Some(3));
    let down: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(down["running"], false);
    assert_eq!(down["addr"], addr.to_string());
}

fn status_at(addr: std::net::SocketAddr) -> std::process::Output {
    shardline_command()
        .args(["status", "--addr", &addr.to_string()])
        .output()
        .unwrap()
}

/// Regression (issue 14, row 14): 16 idle TCP connections to the metrics port held
/// every connection slot, and `shardline status` said "not running" (exit 3) while
/// the agent ran. Now they do not keep it from answering, and "not answering" (4)
/// is told apart from "not running" (3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_answers_past_idle_connections_and_tells_stuck_from_down() {
    let work = Workdir::new();
    let config = write_binary_config(&work, "http://127.0.0.1:9", "");
    let mut agent = AgentProcess::spawn(&work, "agent", &config, &[], |_| {});
    let addr = agent.metrics_addr().await;
    let idle: Vec<std::net::TcpStream> = (0..16)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let out = status_at(addr);
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("shardline "));
    drop(idle);

    // Something listens and never answers: running, not answering.
    let stuck = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stuck_addr = stuck.local_addr().unwrap();
    let out = status_at(stuck_addr);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "shardline is running at {stuck_addr} but not answering"
        )),
        "{err}"
    );
    // Nothing listens: not running.
    drop(stuck);
    let out = status_at(stuck_addr);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    agent.stop().await;
}

/// Each stream's destination state: a stream that does not exist, then one whose
/// shards refuse every record, and both once they are fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stream_shows_its_destination_state() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 1).await;
    let work = Workdir::new();
    let (logs, ghost) = (work.path("logs.sock"), work.path("ghost.sock"));
    let sources = socket_toml(&logs, None) + &socket_toml(&ghost, Some("ghost"));
    let agent = start_agent(config(&work, &emu.endpoint, "logs", &sources)).await;
    let addr = agent.metrics_addr();
    let state = |s: &Status, stream: &str| {
        s.streams
            .iter()
            .find(|st| st.stream == stream)
            .map(|st| st.state)
    };
    send_lines(&ghost, ["lost?".to_owned()]).await;
    // The missing stream does not touch the other one: `logs` turns ok (its
    // ListShards answered; it may still be idle when `ghost` is first seen
    // missing, the two streams start together).
    let s = wait_status(addr, "ghost missing, logs ok", |s| {
        state(s, "ghost") == Some(DestinationState::StreamMissing)
            && state(s, "logs") == Some(DestinationState::Ok)
    })
    .await;
    let error = s.streams[1].error.clone().expect("the problem is shown");
    assert_eq!(error.code, "ResourceNotFoundException");

    emu.faults
        .throttle_entries
        .store(u32::MAX, Ordering::Release);
    send_lines(&logs, (0..20).map(|i| format!("line {i}"))).await;
    let s = wait_status(addr, "logs throttled", |s| {
        state(s, "logs") == Some(DestinationState::Throttled)
    })
    .await;
    assert!(s.render().contains("THROTTLED"), "{}", s.render());
    emu.faults.throttle_entries.store(0, Ordering::Release);
    create_stream(&client, "ghost", 1).await;
    wait_status(addr, "both fine", |s| {
        s.spool.records == 0
            && state(s, "logs") == Some(DestinationState::Ok)
            && state(s, "ghost") == Some(DestinationState::Ok)
    })
    .await;
    agent.stop().await.unwrap();
}

/// Regression (issue 22, D14): with 64 idle connections to the metrics port,
/// renewed as they were closed, 0 of 21 scrapes and 0 of 21 `shardline status`
/// calls succeeded. Now a newcomer takes the slot of the oldest idle connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_scrapes_answer_while_idle_connections_are_renewed() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let work = Workdir::new();
    let config = write_binary_config(&work, "http://127.0.0.1:9", "");
    let mut agent = AgentProcess::spawn(&work, "agent", &config, &[], |_| {});
    let addr = agent.metrics_addr().await;
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // Always more idle connections than the endpoint serves, the oldest
            // replaced by new ones.
            let mut open = std::collections::VecDeque::new();
            while !stop.load(Ordering::Relaxed) {
                while open.len() < 2 * shardline::status::MAX_CONNECTIONS {
                    if let Ok(c) = std::net::TcpStream::connect(addr) {
                        open.push_back(c);
                    }
                }
                for _ in 0..8 {
                    open.pop_front();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..5 {
        let out = status_at(addr);
        assert!(
            out.status.success(),
            "{:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let scrape = tokio::time::timeout(
            Duration::from_secs(10),
            shardline::status::get(addr, "/metrics", Duration::from_secs(5)),
        )
        .await;
        assert!(
            matches!(scrape, Ok(Ok((200, _)))),
            "the scrape failed: {scrape:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    agent.stop().await;
}

/// Regression (issue 22, N11): `status` said nothing about sources: with
/// journalctl missing it showed the stream `ok` and nothing else. Now each
/// source has a line, and one held by a problem says what.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_each_source_and_what_holds_one_back() {
    let emu = Emulator::start().await;
    create_stream(&emu.client().await, "logs", 1).await;
    let work = Workdir::new();
    let config = write_binary_config(&work, &emu.endpoint, "");
    let missing = work.path("no-such-journalctl");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "[[journald]]\nname = \"system\"\njournalctl = \"{}\"\n",
        missing.display()
    ));
    std::fs::write(&config, text).unwrap();
    let mut agent = AgentProcess::spawn(&work, "agent", &config, &[], |_| {});
    let addr = agent.metrics_addr().await;
    let mut shown = String::new();
    let deadline = std::time::Instant::now() + LIMIT;
    while !shown.contains("FAILING for") {
        assert!(std::time::Instant::now() < deadline, "{shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        shown = String::from_utf8_lossy(&status_at(addr).stdout).into_owned();
    }
    let socket = format!("socket   {}: running", work.path("in.sock").display());
    assert!(shown.contains(&socket), "{socket:?} not in\n{shown}");
    let journald = shown
        .lines()
        .find(|l| l.contains("journald system: FAILING for"))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(journald.contains("no-such-journalctl"), "{journald}");
    let s = shardline::status::fetch(addr, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(s.sources.len(), 2, "{:?}", s.sources);
    agent.stop().await;
}
