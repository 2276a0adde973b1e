//! The `shardline` binary: `validate`, `--version`, and `run` as a child process.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{
    check_shards_and_collect, create_stream, send_lines, shardline_bin, socket_toml, stream_data,
    wait_for, write_binary_config, AgentProcess, Emulator, Workdir,
};

fn shardline() -> Command {
    Command::new(shardline_bin())
}

fn validate(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let out = shardline()
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn shipped_example_config_validates() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/shardline.toml");
    let (ok, out) = validate(&std::fs::read_to_string(example).unwrap());
    assert!(ok, "{out}");
}

#[test]
fn validate_names_an_unknown_key() {
    let (ok, out) = validate(
        "[kinesis]\nstream = \"s\"\nstraem = \"t\"\n[spool]\ndir = \"/tmp/x\"\n[[socket]]\npath = \"/tmp/s\"\n",
    );
    assert!(!ok);
    assert!(out.contains("straem"), "{out}");
}

#[test]
fn validate_refuses_a_malformed_role_arn() {
    let (ok, out) = validate(
        "[kinesis]\nstream = \"s\"\n[spool]\ndir = \"/tmp/x\"\n[[socket]]\npath = \"/tmp/s\"\nstream = \"audit\"\n\
         [[destination]]\nstream = \"audit\"\nrole_arn = \"arn:aws:iam::1234:role/w\"\n",
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains(
            "destination[0].role_arn: \"arn:aws:iam::1234:role/w\" is not an IAM role ARN"
        ),
        "{out}"
    );
}

#[test]
fn validate_lists_a_missing_stream_with_the_other_problems() {
    let (ok, out) = validate("[kinesis]\nregion = \"eu-west-1\"\n[spool]\n[[socket]]\n");
    assert!(!ok);
    for needle in [
        "kinesis.stream is missing",
        "spool.dir is missing",
        "socket[0].path is missing",
    ] {
        assert!(out.contains(needle), "{needle:?} not in {out}");
    }
}

/// Regression (issue 14, row 13): a remote metrics address, relative paths,
/// patterns that walk the whole filesystem and `file_mode = "+777"` were accepted.
#[test]
fn validate_refuses_what_cannot_be_right() {
    let (ok, out) = validate(
        r#"
[kinesis]
stream = "s"
[delivery]
dead_letter_path = "dead.ndjson"
[metrics]
listen = "0.0.0.0:9717"
[spool]
dir = "var/spool"
[[socket]]
path = "in.sock"
file_mode = "+777"
[[socket]]
path = "/tmp/b.sock"
file_mode = "06600"
[[file]]
include = ["/**", "/*", "/proc/*/environ", "/var/log/*.log"]
"#,
    );
    assert!(!ok, "{out}");
    for needle in [
        "metrics.listen \"0.0.0.0:9717\" is not a loopback address",
        "metrics.allow_remote = true",
        "spool.dir \"var/spool\" is not an absolute path",
        "delivery.dead_letter_path \"dead.ndjson\" is not an absolute path",
        "socket[0].path \"in.sock\" is not an absolute path",
        "socket[0].file_mode \"+777\" is not an octal permission",
        "socket[1].file_mode \"06600\" is not an octal permission",
        "file[0].include pattern \"/**\" has no directory before its first wildcard",
        "file[0].include pattern \"/*\" has no directory before its first wildcard",
        "file[0].include pattern \"/proc/*/environ\" is under /proc, /sys or /dev",
    ] {
        assert!(out.contains(needle), "{needle:?} not in {out}");
    }
    assert!(!out.contains("/var/log/*.log"), "{out}");
    assert!(out.contains("has 9 problem(s)"), "{out}");

    // Asked for explicitly, a remote address is taken; so are plain octal modes.
    let (ok, out) = validate(
        "[kinesis]\nstream = \"s\"\n[metrics]\nlisten = \"0.0.0.0:9717\"\nallow_remote = true\n\
         [spool]\ndir = \"/var/lib/x\"\n[[socket]]\npath = \"/tmp/a.sock\"\nfile_mode = \"640\"\n",
    );
    assert!(ok, "{out}");
}

/// Regression (issue 14, row 3): with 1024 descriptors (systemd's default) and 1024
/// connections per socket, idle clients took every descriptor: files, metrics and
/// Kinesis stopped. Now `run` refuses a config that cannot fit the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_a_config_that_does_not_fit_the_descriptor_limit() {
    let work = Workdir::new();
    let config = write_binary_config(&work, "http://127.0.0.1:9", "");
    let agent = AgentProcess::spawn(&work, "agent", &config, &[], |c| {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe. Soft and hard: nothing to raise.
        unsafe {
            c.pre_exec(|| {
                let l = libc::rlimit {
                    rlim_cur: 256,
                    rlim_max: 256,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let (exit, _, log) = agent.wait(Duration::from_secs(60)).await;
    assert!(!exit.success(), "{log}");
    assert!(
        log.contains("the configuration needs")
            && log.contains("file descriptors")
            && log.contains("the limit (RLIMIT_NOFILE) is 256"),
        "{log}"
    );
    assert!(!work.path("in.sock").exists(), "the agent started anyway");

    // The same config, with room: it starts (raising a low soft limit itself).
    let mut agent = AgentProcess::spawn(&work, "roomy", &config, &[], |c| {
        use std::os::unix::process::CommandExt;
        // SAFETY: as above.
        unsafe {
            c.pre_exec(|| {
                let l = libc::rlimit {
                    rlim_cur: 256,
                    rlim_max: 4096,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    agent.metrics_addr().await;
    agent.stop().await;
}

#[test]
fn version_is_printed() {
    let out = shardline().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("shardline {}", env!("CARGO_PKG_VERSION"))
    );
}

/// The real binary logs a refused line clearly, keeps serving, and drains on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_logs_a_refused_line_and_stops_gracefully() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 2).await;
    let work = Workdir::new();
    let sock = work.path("in.sock");
    let conf = work.path("shardline.toml");
    std::fs::write(
        &conf,
        format!(
            "[kinesis]\nstream = \"logs\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\n[delivery]\nmax_buffered_time_ms = 20\n[metrics]\nlisten = \"127.0.0.1:0\"\n[spool]\ndir = \"{}\"\n{}",
            emu.endpoint,
            work.spool().display(),
            socket_toml(&sock, None)
        ),
    )
    .unwrap();
    let child = shardline()
        .args(["run", "--config"])
        .arg(&conf)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the socket", Duration::from_secs(30), || sock.exists()).await;
    send_lines(
        &sock,
        vec!["first".into(), "y".repeat(2 << 20), "second".into()],
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, data) = check_shards_and_collect(&client, "logs").await;
        if data.len() >= 2 {
            let mut got: Vec<&[u8]> = data.iter().map(|d| d.as_ref()).collect();
            got.sort();
            assert_eq!(got, vec![&b"first"[..], b"second"]);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "records not delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let log = String::from_utf8_lossy(&exit.stderr);
    assert!(exit.status.success(), "exit {:?}\n{log}", exit.status);
    assert!(log.contains("ERROR"), "{log}");
    // Refused when it crossed the limit, so its length is what had come so far.
    assert!(
        log.contains("line of at least") && log.contains("exceeds the 1048560-byte line limit"),
        "no clear error for the long line:\n{log}"
    );
    assert!(log.contains("Agent stopped"), "{log}");
    assert!(!sock.exists(), "socket file left behind");
}

/// Regression (issue 22, N1): a second agent on the same spool (a copied config
/// with another socket and port) took the running one's index for a damaged one,
/// moved it aside and appended to the same segments; 108,100 of 200,000 acked
/// records were lost. Now it refuses to start, naming the holder, and touches
/// nothing; `validate` and `status` say the spool is in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_on_the_same_spool_refuses_to_start_and_touches_nothing() {
    let emu = Emulator::start().await;
    create_stream(&emu.client().await, "logs", 1).await;
    let work = Workdir::new();
    let config = write_binary_config(&work, &emu.endpoint, "");
    let mut first = AgentProcess::spawn(&work, "first", &config, &[], |_| {});
    first.metrics_addr().await;
    send_lines(&work.path("in.sock"), vec!["held by the first".to_owned()]).await;
    let before: Vec<_> = std::fs::read_dir(work.spool())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();

    // The same spool, another socket: only the spool is shared.
    let copy = work.path("copy.toml");
    std::fs::write(
        &copy,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("in.sock", "second.sock"),
    )
    .unwrap();
    let second = AgentProcess::spawn(&work, "second", &copy, &[], |_| {});
    let (exit, _, log) = second.wait(Duration::from_secs(30)).await;
    assert!(!exit.success(), "the second agent ran:\n{log}");
    let holder = format!("in use by another shardline (pid {})", first.child.id());
    assert!(log.contains(&holder), "{holder:?} not in\n{log}");
    assert!(
        !work.spool().join("damaged").exists(),
        "the second agent moved something aside"
    );
    let after: Vec<_> = std::fs::read_dir(work.spool())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after);

    let out = shardline()
        .args(["validate", "--config"])
        .arg(&copy)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("is in use by shardline pid {}", first.child.id())),
        "{text}"
    );
    // Nothing answers at this address, but the spool's holder runs.
    let out = shardline()
        .args(["status", "--addr", "127.0.0.1:9", "--config"])
        .arg(&copy)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(text.contains("is in use by shardline pid"), "{text}");

    // The first agent is unharmed: it delivers and stops cleanly.
    let client = emu.client().await;
    wait_for_async_data(&client, 1).await;
    let log = first.stop().await;
    assert!(!log.contains("cannot be opened"), "{log}");

    // Once it is gone, the spool is free again.
    let out = shardline()
        .args(["validate", "--config"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("in use"));
}

async fn wait_for_async_data(client: &aws_sdk_kinesis::Client, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stream_data(client, "logs").await.len() < n {
        assert!(std::time::Instant::now() < deadline, "nothing delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Regression (issue 22, N9): records of a stream no longer in the config stayed
/// in the spool for ever, and nothing was logged. Now the start names the stream
/// and its records, and a `[[destination]]` with `drain = true` delivers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_a_removed_stream_are_named_at_start_and_drained_on_request() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 1).await;
    create_stream(&client, "old", 1).await;
    let work = Workdir::new();
    let base = |endpoint: &str, socket_stream: &str, extra: &str| {
        format!(
            "[kinesis]\nstream = \"logs\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\n\
             request_timeout_ms = 1000\n[delivery]\nmax_buffered_time_ms = 20\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n[spool]\ndir = \"{}\"\n{}{extra}",
            work.spool().display(),
            socket_toml(&work.path("in.sock"), Some(socket_stream)),
        )
    };
    let path = work.path("shardline.toml");
    // Nothing answers: the records of "old" stay spooled.
    std::fs::write(&path, base("http://127.0.0.1:9", "old", "")).unwrap();
    let mut agent = AgentProcess::spawn(&work, "first", &path, &[], |_| {});
    agent.metrics_addr().await;
    send_lines(&work.path("in.sock"), (0..3).map(|i| format!("old {i}"))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    agent.stop().await;

    // The socket now writes "logs": "old" has no source.
    std::fs::write(&path, base(&emu.endpoint, "logs", "")).unwrap();
    let mut agent = AgentProcess::spawn(&work, "second", &path, &[], |_| {});
    agent.metrics_addr().await;
    let log = agent.stop().await;
    let warning = log
        .lines()
        .find(|l| l.contains("no source writes"))
        .unwrap_or_else(|| panic!("no warning of the orphaned stream in\n{log}"));
    assert!(
        warning.contains("stream=old") && warning.contains("records=3"),
        "{warning}"
    );
    assert!(stream_data(&client, "old").await.is_empty());

    std::fs::write(
        &path,
        base(
            &emu.endpoint,
            "logs",
            "[[destination]]\nstream = \"old\"\ndrain = true\n",
        ),
    )
    .unwrap();
    let out = shardline()
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut agent = AgentProcess::spawn(&work, "third", &path, &[], |_| {});
    agent.metrics_addr().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stream_data(&client, "old").await.len() < 3 {
        assert!(std::time::Instant::now() < deadline, "{}", agent.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = agent.stop().await;
    assert!(!log.contains("no source writes"), "{log}");
}
