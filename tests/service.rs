//! The binary as a service: systemd readiness and watchdog notifications, log
//! formats, SIGHUP, and SIGTERM under load.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::util::{
    create_stream, file_toml, full_spool_config, send_lines, shardline_command, spool_contents,
    stream_data, wait_for, write_binary_config, AgentProcess, Emulator, Workdir,
};

const LIMIT: Duration = Duration::from_secs(30);

/// Receives notifications until `until` says stop; returns each with the time it
/// arrived and whether the ingest socket existed then.
fn receive(
    socket: &UnixDatagram,
    ingest: &std::path::Path,
    mut until: impl FnMut(&[(String, Instant, bool)]) -> bool,
) -> Vec<(String, Instant, bool)> {
    socket.set_read_timeout(Some(LIMIT)).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while !until(&got) {
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification within {LIMIT:?} ({e}); got {got:?}"));
        got.push((
            String::from_utf8_lossy(&buf[..n]).into_owned(),
            Instant::now(),
            ingest.exists(),
        ));
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_gets_ready_after_the_socket_exists_then_watchdog_pings() {
    let emu = Emulator::start().await;
    create_stream(&emu.client().await, "logs", 1).await;
    let work = Workdir::new();
    let config = write_binary_config(&work, &emu.endpoint, "");
    let notify_path = work.path("notify.sock");
    let listener = UnixDatagram::bind(&notify_path).unwrap();
    let ingest = work.path("in.sock");
    let agent = AgentProcess::spawn(&work, "agent", &config, &[], |c| {
        c.env("NOTIFY_SOCKET", &notify_path)
            .env("WATCHDOG_USEC", "2000000");
    });
    let (listener, got) = tokio::task::spawn_blocking(move || {
        let got = receive(&listener, &ingest, |got| {
            got.iter().filter(|(m, ..)| m == "WATCHDOG=1").count() >= 3
        });
        (listener, got)
    })
    .await
    .unwrap();
    let (first, ready_at, socket_existed) = &got[0];
    assert!(
        first.lines().any(|l| l == "READY=1"),
        "first notification is not READY=1: {got:?}"
    );
    assert!(
        socket_existed,
        "READY=1 came before the ingest socket existed"
    );
    // Pings every WATCHDOG_USEC / 2 (1 s): three of them take about 2 s, well
    // within what a 2 s watchdog allows between two.
    let pings: Vec<Instant> = got
        .iter()
        .filter(|(m, ..)| m == "WATCHDOG=1")
        .map(|(_, t, _)| *t)
        .collect();
    assert!(pings.iter().all(|t| t >= ready_at));
    for pair in pings.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap < Duration::from_secs(2),
            "watchdog gap {gap:?} exceeds WATCHDOG_USEC"
        );
    }

    agent.signal("TERM");
    let ingest = work.path("in.sock");
    let stopping = tokio::task::spawn_blocking(move || {
        receive(&listener, &ingest, |got| {
            got.iter()
                .any(|(m, ..)| m.lines().any(|l| l == "STOPPING=1"))
        })
    })
    .await
    .unwrap();
    assert!(!stopping.is_empty());
    let (exit, _, log) = agent.wait(LIMIT).await;
    assert!(exit.success(), "{log}");
}

/// Starts the agent with `args` (and the env `prepare` sets), waits until it
/// runs, stops it and returns its log.
async fn log_of(
    work: &Workdir,
    name: &str,
    config: &std::path::Path,
    args: &[&str],
    prepare: impl FnOnce(&mut std::process::Command),
) -> String {
    let mut agent = AgentProcess::spawn(work, name, config, args, prepare);
    agent.metrics_addr().await;
    agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_json_on_request_and_journal_lines_under_systemd() {
    use std::os::unix::fs::MetadataExt;
    let emu = Emulator::start().await;
    create_stream(&emu.client().await, "logs", 1).await;
    let work = Workdir::new();
    let config = write_binary_config(&work, &emu.endpoint, "");

    let json = log_of(&work, "json", &config, &["--log-format", "json"], |_| {}).await;
    let events: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let started = events
        .iter()
        .find(|e| e["message"] == "Agent started")
        .unwrap_or_else(|| panic!("no start event in\n{json}"));
    assert_eq!(started["level"], "INFO");
    assert!(started["timestamp"].is_string());
    assert!(events
        .iter()
        .any(|e| e["message"] == "Metrics endpoint listening"
            && e["addr"]
                .as_str()
                .is_some_and(|a| a.starts_with("127.0.0.1:"))));

    // Under systemd, JOURNAL_STREAM names stderr by device and inode.
    let log_path = work.path("journal.log");
    std::fs::File::create(&log_path).unwrap();
    let meta = std::fs::metadata(&log_path).unwrap();
    let journal_stream = format!("{}:{}", meta.dev(), meta.ino());
    let journal = log_of(&work, "journal", &config, &[], |c| {
        c.env("JOURNAL_STREAM", &journal_stream);
    })
    .await;
    assert!(!journal.contains('\u{1b}'), "colours in\n{journal}");
    for line in journal.lines() {
        let rest = line
            .strip_prefix("<6>")
            .or_else(|| line.strip_prefix("<4>"))
            .or_else(|| line.strip_prefix("<3>"))
            .unwrap_or_else(|| panic!("no priority prefix: {line:?}"));
        assert!(
            rest.trim_start().starts_with("INFO")
                || rest.trim_start().starts_with("WARN")
                || rest.trim_start().starts_with("ERROR"),
            "a timestamp or something else before the level: {line:?}"
        );
    }
    assert!(
        journal.contains("<6> INFO") && journal.contains("Agent started"),
        "{journal}"
    );

    // A JOURNAL_STREAM that is not our stderr (inherited, redirected): human.
    let human = log_of(&work, "human", &config, &[], |c| {
        c.env("JOURNAL_STREAM", "1:1");
    })
    .await;
    assert!(!human.contains('\u{1b}'), "colours in a file:\n{human}");
    let first = human.lines().next().unwrap();
    assert!(
        first.starts_with(|c: char| c.is_ascii_digit()) && first.contains(" INFO "),
        "no timestamp: {first:?}"
    );
}

/// SIGHUP reloads the config: a changed one adds a file source (the socket keeps
/// serving); a broken one is refused and the running sources keep going, the file
/// at its position (no line twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_a_file_source_and_a_broken_config_keeps_the_old_one() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 1).await;
    let work = Workdir::new();
    let config = write_binary_config(&work, &emu.endpoint, "");
    let base = std::fs::read_to_string(&config).unwrap();
    let mut agent = AgentProcess::spawn(&work, "agent", &config, &[], |_| {});
    agent.metrics_addr().await;
    send_lines(&work.path("in.sock"), vec!["before reload".to_owned()]).await;

    // Add a [[file]] block.
    let logs = work.path("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let app_log = logs.join("app.log");
    std::fs::write(&app_log, "file line 1\nfile line 2\n").unwrap();
    std::fs::write(
        &config,
        format!("{base}\n{}", file_toml(&[&logs.join("*.log")], "")),
    )
    .unwrap();
    agent.signal("HUP");
    wait_for("the reload in the log", LIMIT, || {
        agent.log_text().contains("Configuration reloaded")
    })
    .await;
    wait_until_stream_holds(&client, 3).await;

    // A broken config: refused, everything keeps running.
    std::fs::write(&config, format!("{base}\nnot_a_key = 1\n")).unwrap();
    agent.signal("HUP");
    wait_for("the refusal in the log", LIMIT, || {
        agent.log_text().contains("Reload refused")
    })
    .await;
    assert!(
        agent.log_text().contains("not_a_key"),
        "the refusal does not name the problem"
    );
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent died on a broken config"
    );
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&app_log)
            .unwrap();
        f.write_all(b"file line 3\n").unwrap();
    }
    send_lines(
        &work.path("in.sock"),
        vec!["after broken reload".to_owned()],
    )
    .await;
    let data = wait_until_stream_holds(&client, 5).await;
    let mut got: Vec<String> = data
        .iter()
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            "after broken reload",
            "before reload",
            "file line 1",
            "file line 2",
            "file line 3"
        ]
    );
    agent.stop().await;
}

/// Snippets in `conf.d` and `${VAR}` from the agent's environment: a reload
/// (SIGHUP) reads a changed snippet; a snippet that sets a key the main file
/// sets is refused naming both files, and the sources keep going.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reads_a_changed_snippet_with_the_environment() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 1).await;
    let work = Workdir::new();
    let config = write_binary_config(&work, &emu.endpoint, "");
    let logs = work.path("logs");
    let conf_d = work.path("conf.d");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::create_dir_all(&conf_d).unwrap();
    std::fs::write(logs.join("a.log"), "a 1\na 2\n").unwrap();
    std::fs::write(logs.join("b.txt"), "b 1\n").unwrap();
    // A former spelling too: it loads, with a hint.
    let snippet = |ext: &str| {
        format!("[[file]]\ninclude = [\"${{APP_LOGS}}/*.{ext}\"]\npartition_key = {{ json_field = \"k\" }}\n")
    };
    std::fs::write(conf_d.join("10-app.toml"), snippet("log")).unwrap();
    let hint = "file[0].partition_key { json_field = … } is a former spelling (read until 0.4): write partition_key = { field = \"k\" }";
    let validate = shardline_command()
        .args(["validate", "--config"])
        .arg(&config)
        .env("APP_LOGS", &logs)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&validate.stdout);
    assert!(validate.status.success(), "{out}");
    assert!(out.contains(&format!("hint: {hint}")), "{out}");
    let mut agent = AgentProcess::spawn(&work, "agent", &config, &[], |c| {
        c.env("APP_LOGS", &logs);
    });
    agent.metrics_addr().await;
    wait_until_stream_holds(&client, 2).await;
    assert!(agent.log_text().contains(hint), "no hint in the log");

    // The snippet now tails the other file.
    std::fs::write(conf_d.join("10-app.toml"), snippet("txt")).unwrap();
    agent.signal("HUP");
    wait_for("the reload in the log", LIMIT, || {
        agent.log_text().contains("Configuration reloaded")
    })
    .await;
    wait_until_stream_holds(&client, 3).await;

    // A snippet setting the main file's key: refused, naming both files.
    std::fs::write(
        conf_d.join("20-bad.toml"),
        "[kinesis]\nstream = \"other\"\n",
    )
    .unwrap();
    agent.signal("HUP");
    wait_for("the refusal in the log", LIMIT, || {
        agent.log_text().contains("Reload refused")
    })
    .await;
    let log = agent.log_text();
    assert!(
        log.contains("kinesis.stream is set in") && log.contains("20-bad.toml"),
        "the refusal does not name both files:\n{log}"
    );
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(logs.join("b.txt"))
            .unwrap();
        f.write_all(b"b 2\n").unwrap();
    }
    let mut got: Vec<String> = wait_until_stream_holds(&client, 4)
        .await
        .iter()
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .collect();
    got.sort();
    assert_eq!(got, ["a 1", "a 2", "b 1", "b 2"]);
    agent.stop().await;
}

async fn wait_until_stream_holds(client: &aws_sdk_kinesis::Client, n: usize) -> Vec<bytes::Bytes> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let data = stream_data(client, "logs").await;
        if data.len() >= n {
            return data;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} records in the stream",
            data.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGTERM while Kinesis is slow and records wait: the agent exits within
/// `shutdown_timeout_secs` (not when the requests would end), and a restart
/// delivers every record left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_within_the_timeout_and_a_restart_delivers_the_rest() {
    const LINES: usize = 5000;
    const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 2).await;
    let work = Workdir::new();
    let config = write_binary_config(
        &work,
        &emu.endpoint,
        &format!("shutdown_timeout_secs = {}", SHUTDOWN_TIMEOUT.as_secs()),
    );
    // Each PutRecords takes 30 s: far longer than the shutdown timeout.
    emu.faults.delay_ms.store(30_000, Ordering::Relaxed);
    let mut agent = AgentProcess::spawn(&work, "first", &config, &[], |_| {});
    agent.metrics_addr().await;
    let lines: Vec<String> = (0..LINES).map(|i| format!("load {i:05}")).collect();
    send_lines(&work.path("in.sock"), lines.clone()).await;
    wait_for("requests in flight", LIMIT, || {
        emu.faults.put_records.load(Ordering::Relaxed) > 0
    })
    .await;
    agent.signal("TERM");
    let (exit, took, log) = agent.wait(LIMIT).await;
    assert!(exit.success(), "exit {exit}:\n{log}");
    // Process start-up and teardown on a loaded machine: a liveness margin, far
    // below the 30 s the requests would take.
    assert!(
        took < SHUTDOWN_TIMEOUT + Duration::from_secs(10),
        "stopping took {took:?}:\n{log}"
    );
    let undelivered: u64 = log
        .lines()
        .find_map(|l| l.split("undelivered_records=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or_else(|| panic!("no shutdown report in\n{log}"))
        .parse()
        .unwrap();
    assert!(undelivered > 0, "nothing was left to deliver:\n{log}");

    emu.faults.delay_ms.store(0, Ordering::Relaxed);
    let mut agent = AgentProcess::spawn(&work, "second", &config, &[], |_| {});
    agent.metrics_addr().await;
    let mut want: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
    want.sort();
    let deadline = Instant::now() + LIMIT;
    loop {
        let mut got = stream_data(&client, "logs").await;
        // At least once: a request abandoned at the deadline may still land.
        got.dedup();
        let got: Vec<&[u8]> = got.iter().map(|d| d.as_ref()).collect();
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {LINES} lines delivered after the restart",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = agent.stop().await;
    assert!(log.contains("replaying"), "no replay at start:\n{log}");
}

/// A `[[socket]]` block at `in.sock` in `framing`.
fn socket_block(work: &Workdir, framing: &str) -> String {
    format!(
        "[[socket]]\npath = \"{}\"\nframing = \"{framing}\"\n",
        work.path("in.sock").display()
    )
}

/// Writes `chunk` to `socket` until a write has blocked for a second (the agent
/// stopped reading: its spool is full) or fails; returns the bytes written.
fn fill(socket: &std::os::unix::net::UnixStream, mut chunk: impl FnMut() -> Vec<u8>) -> usize {
    use std::io::Write;
    let mut w = socket.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut written = 0;
    loop {
        let c = chunk();
        match w.write_all(&c) {
            Ok(()) => written += c.len(),
            Err(_) => return written,
        }
    }
}

/// Reads every answer on `reader` until the connection ends, on a thread.
fn read_answers(
    mut reader: std::os::unix::net::UnixStream,
) -> std::thread::JoinHandle<Vec<shardline::testkit::frame::Response>> {
    use bytes::BytesMut;
    use shardline::testkit::frame::{self, Response};
    use std::io::Read;
    std::thread::spawn(move || {
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            while let Some(r) = frame::decode::<Response>(&mut buf).unwrap() {
                got.push(r);
            }
            match reader.read(&mut chunk) {
                Ok(0) | Err(_) => return got,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
}

/// Request `id` on the wire: one acked record of 60,000 bytes.
fn numbered_frame(id: u64) -> Vec<u8> {
    use bytes::BytesMut;
    use shardline::testkit::frame::{self, Record, Request};
    let mut out = BytesMut::new();
    frame::encode(
        &Request {
            id,
            records: vec![Record {
                partition_key: "k".into(),
                explicit_hash_key: None,
                data: vec![b'y'; 60_000].into(),
                record_id: None,
            }],
            ack: true,
            stream: None,
        },
        &mut out,
    );
    out.to_vec()
}

/// Regression (issue 22, N6): with a source waiting for room in a full spool, the
/// agent was still running 60 s after SIGTERM with `shutdown_timeout_secs = 3`,
/// and under the unit a line sent meanwhile was lost without a word. Now the
/// waiting sources are woken by the shutdown: lines that cannot be spooled are
/// reported and counted, frames are answered `SHUTTING_DOWN`, and the agent exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_full_spool_exits_and_says_what_it_could_not_spool() {
    use shardline::testkit::frame::Status;

    // Lines: nobody waits for an answer, so the loss is logged.
    let work = Workdir::new();
    let config = full_spool_config(&work, &socket_block(&work, "lines"));
    let mut agent = AgentProcess::spawn(&work, "lines", &config, &[], |_| {});
    agent.metrics_addr().await;
    let socket = std::os::unix::net::UnixStream::connect(work.path("in.sock")).unwrap();
    let line = format!("{}\n", "x".repeat(1000)).into_bytes();
    let written = tokio::task::spawn_blocking(move || fill(&socket, || line.clone()))
        .await
        .unwrap();
    assert!(written > 2 << 20, "the spool took all {written} bytes");
    let log = agent.stop().await;
    assert!(
        log.contains("could not be spooled before the agent stopped"),
        "{log}"
    );

    // Frames: every request the agent read is answered, SHUTTING_DOWN for those
    // that found the spool full.
    let work = Workdir::new();
    let config = full_spool_config(&work, &socket_block(&work, "frames"));
    let mut agent = AgentProcess::spawn(&work, "frames", &config, &[], |_| {});
    agent.metrics_addr().await;
    let socket = std::os::unix::net::UnixStream::connect(work.path("in.sock")).unwrap();
    let reader = socket.try_clone().unwrap();
    let answers = read_answers(reader);
    let mut id = 0;
    let written = tokio::task::spawn_blocking(move || {
        fill(&socket, || {
            id += 1;
            numbered_frame(id)
        })
    })
    .await
    .unwrap();
    assert!(written > 2 << 20, "the spool took all {written} bytes");
    let log = agent.stop().await;
    let answers = answers.join().unwrap();
    let ok = answers
        .iter()
        .filter(|r| r.status == Status::Ok as i32)
        .count();
    let stopping = answers
        .iter()
        .filter(|r| r.status == Status::ShuttingDown as i32)
        .count();
    assert!(ok > 0, "{answers:?}");
    assert!(stopping > 0, "no SHUTTING_DOWN answer: {answers:?}\n{log}");
}

/// A client that keeps sending while the agent stops is told, frame by frame,
/// what was spooled: every frame it wrote gets an answer, in order, `OK` for
/// those spooled before the stop and `SHUTTING_DOWN` after (never `OK` again),
/// until it closes its side at the first `SHUTTING_DOWN`, as the client
/// libraries do. So a clean restart leaves no record in doubt, and the spool
/// holds exactly the records answered `OK`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_agent_answers_every_frame_until_the_client_closes() {
    use shardline::testkit::frame::Status;

    let work = Workdir::new();
    let config = work.path("shardline.toml");
    std::fs::write(
        &config,
        format!(
            "shutdown_timeout_secs = 5\n[kinesis]\nstream = \"logs\"\nregion = \"us-east-1\"\n\
             endpoint = \"http://127.0.0.1:9\"\nrequest_timeout_ms = 1000\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n[spool]\ndir = \"{}\"\nmin_free_bytes = 0\n{}",
            work.spool().display(),
            socket_block(&work, "frames")
        ),
    )
    .unwrap();
    let mut agent = AgentProcess::spawn(&work, "agent", &config, &[], |_| {});
    agent.metrics_addr().await;
    let socket = std::os::unix::net::UnixStream::connect(work.path("in.sock")).unwrap();
    let (writer, reader, answered) = send_until_refused(socket);
    wait_for("frames acknowledged", Duration::from_secs(60), || {
        answered.load(Ordering::SeqCst) >= 20
    })
    .await;
    agent.signal("TERM");
    let (status, _, log) = agent.wait(Duration::from_secs(60)).await;
    assert!(status.success(), "{log}");
    let written = writer.join().unwrap();
    let answers = reader.join().unwrap();
    let ids: Vec<u64> = answers.iter().map(|a| a.id).collect();
    assert_eq!(
        ids,
        (1..=written).collect::<Vec<_>>(),
        "every frame written is answered, in order"
    );
    let ok = answers
        .iter()
        .take_while(|a| a.status == Status::Ok as i32)
        .count();
    assert!(ok > 0, "nothing was spooled before the stop");
    for a in &answers[ok..] {
        assert_eq!(
            a.status,
            Status::ShuttingDown as i32,
            "after the first refusal: {a:?}"
        );
    }
    assert!(ok < answers.len(), "no SHUTTING_DOWN answer");
    eprintln!("{ok} frames spooled, {} refused", answers.len() - ok);
    let (spooled, _) = spool_contents(&work.spool(), "logs");
    assert_eq!(
        spooled.len(),
        ok,
        "the spool holds exactly the records answered OK"
    );
}

/// Writes numbered frames on `socket` until an answer is `SHUTTING_DOWN`, then
/// closes its side (as the client libraries do); reads every answer until the
/// agent closes. Returns the writer (how many frames it wrote), the reader (the
/// answers) and the count of answers so far.
fn send_until_refused(
    socket: std::os::unix::net::UnixStream,
) -> (
    std::thread::JoinHandle<u64>,
    std::thread::JoinHandle<Vec<shardline::testkit::frame::Response>>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use shardline::testkit::frame::{self, Response, Status};
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::sync::Arc;

    let refused = Arc::new(AtomicBool::new(false));
    let mut w = socket.try_clone().unwrap();
    let stop = refused.clone();
    let writer = std::thread::spawn(move || {
        let mut written = 0u64;
        while !stop.load(Ordering::SeqCst) {
            if w.write_all(&numbered_frame(written + 1)).is_err() {
                break;
            }
            written += 1;
        }
        let _ = w.shutdown(std::net::Shutdown::Write);
        written
    });
    let answered = Arc::new(AtomicUsize::new(0));
    let (mut r, seen, count) = (socket, refused.clone(), answered.clone());
    let reader = std::thread::spawn(move || {
        let (mut buf, mut got) = (bytes::BytesMut::new(), Vec::<Response>::new());
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            while let Some(a) = frame::decode::<Response>(&mut buf).unwrap() {
                if a.status == Status::ShuttingDown as i32 {
                    seen.store(true, Ordering::SeqCst);
                }
                got.push(a);
                count.fetch_add(1, Ordering::SeqCst);
            }
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => return got,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });
    (writer, reader, answered)
}
