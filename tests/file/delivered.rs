//! `shardline files` and `delete_after_delivered` through the binary: a file's
//! lines are held back from the emulator by an outage of its endpoint, then let
//! through; what the agent says of the file, when `--wait-delivered` returns,
//! and when a one-shot file is deleted are checked against what the emulator
//! holds.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use shardline::status::{FileState, FileStatus, FilesReport};

use super::{open_append, LONG};
use crate::util::{
    create_stream, file_toml, shardline_command, stream_data, wait_for, write_binary_config,
    AgentProcess, Emulator, Workdir,
};

/// `shardline files --addr ADDR args…`: exit status, stdout, stderr.
async fn files(addr: SocketAddr, args: &[&str]) -> (i32, String, String) {
    let mut c = shardline_command();
    c.args(["files", "--addr", &addr.to_string()]).args(args);
    // Off the runtime's threads: the emulator answers on them meanwhile.
    let out = tokio::task::spawn_blocking(move || c.output())
        .await
        .unwrap()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The agent's report on the file at `path`.
async fn report_of(addr: SocketAddr, path: &Path) -> FileStatus {
    let (code, out, err) = files(addr, &["--json"]).await;
    assert_eq!(code, 0, "{err}");
    let report: FilesReport = serde_json::from_str(&out).unwrap();
    let path = path.display().to_string();
    report
        .files
        .into_iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("{path} is not listed:\n{out}"))
}

/// The agent with one `[[file]]` block (`extra` its keys) on `dir/*.log`.
async fn agent(emu: &Emulator, work: &Workdir, extra: &str) -> (AgentProcess, SocketAddr) {
    let conf = write_binary_config(work, &emu.endpoint, "");
    let block = file_toml(&[&work.path("in").join("*.log")], extra);
    open_append(&conf).write_all(block.as_bytes()).unwrap();
    std::fs::create_dir_all(work.path("in")).unwrap();
    let mut agent = AgentProcess::spawn(work, "agent", &conf, &[], |_| {});
    let addr = agent.metrics_addr().await;
    (agent, addr)
}

fn lines(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix} line {i:04}")).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    open_append(path).write_all(text.as_bytes()).unwrap();
}

/// How many of `lines` the emulator holds.
async fn held(emu: &Emulator, lines: &[String]) -> usize {
    let data = stream_data(&emu.client().await, "logs").await;
    lines
        .iter()
        .filter(|l| data.iter().any(|d| d.as_ref() == l.as_bytes()))
        .count()
}

/// While the endpoint is gone, the file is listed as not delivered and
/// `--wait-delivered` times out saying why; once it is back, `--wait-delivered`
/// returns 0 and by then the emulator holds every line of the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_delivered_returns_only_once_the_emulator_holds_every_line() {
    let emu = Emulator::start().await;
    create_stream(&emu.client().await, "logs", 1).await;
    let work = Workdir::new();
    let (agent, addr) = agent(&emu, &work, "").await;
    emu.faults.outage.store(true, Ordering::Release);
    let path = work.path("in").join("app.log");
    let sent = lines("held", 300);
    write_lines(&path, &sent);
    let target = path.to_str().unwrap();

    let (code, _, err) = files(addr, &["--wait-delivered", target, "--timeout", "3"]).await;
    assert_eq!(code, 1, "timed out while the endpoint is gone: {err}");
    assert!(err.contains("is not delivered after"), "{err}");
    let partial = report_of(addr, &path).await;
    assert_eq!(partial.state, FileState::Tailed);
    assert!(!partial.delivered, "{partial:?}");
    assert!(partial.delivered_to < partial.read, "{partial:?}");
    let (_, table, _) = files(addr, &[]).await;
    let row = table.lines().find(|l| l.ends_with(target)).unwrap();
    assert!(row.contains(" no "), "{table}");

    emu.faults.outage.store(false, Ordering::Release);
    let (code, out, err) = files(addr, &["--wait-delivered", target, "--timeout", "90"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("every byte read delivered"), "{out}");
    // Returned only once the emulator holds every line.
    assert_eq!(held(&emu, &sent).await, sent.len());
    let full = report_of(addr, &path).await;
    let size = std::fs::metadata(&path).unwrap().len();
    assert_eq!(
        (full.read, full.size, full.delivered_to),
        (size, size, size)
    );
    assert!(full.delivered && full.pending_batches == 0, "{full:?}");
    let (_, table, _) = files(addr, &[]).await;
    let row = table.lines().find(|l| l.ends_with(target)).unwrap();
    assert!(row.contains(" yes "), "{table}");

    // A file the agent does not tail, and one that is not there.
    let other = work.path("other.txt");
    std::fs::write(&other, "x\n").unwrap();
    let (code, _, err) = files(addr, &["--wait-delivered", other.to_str().unwrap()]).await;
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("does not tail"), "{err}");
    let (code, _, _) = files(addr, &["--wait-delivered", "/nonexistent/x.log"]).await;
    assert_eq!(code, 5);
    agent.stop().await;
    let (code, _, _) = files(addr, &[]).await;
    assert_eq!(code, 3, "the agent is not running");
}

/// A rotated file is waited for by its identity: renamed while waited for, it
/// is still the one that must be delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_delivered_follows_the_file_when_it_is_renamed() {
    let emu = Emulator::start().await;
    create_stream(&emu.client().await, "logs", 1).await;
    let work = Workdir::new();
    let (agent, addr) = agent(&emu, &work, "rotate_wait_ms = 500").await;
    emu.faults.outage.store(true, Ordering::Release);
    let path = work.path("in").join("app.log");
    let sent = lines("rotated", 200);
    write_lines(&path, &sent);
    let target = path.to_str().unwrap().to_owned();
    let waiting = tokio::spawn(async move {
        files(addr, &["--wait-delivered", &target, "--timeout", "90"]).await
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    // logrotate's rename and create.
    std::fs::rename(&path, work.path("in").join("app.log.1")).unwrap();
    write_lines(&path, &lines("new", 5));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "returned before delivery");
    emu.faults.outage.store(false, Ordering::Release);
    let (code, out, err) = waiting.await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(held(&emu, &sent).await, sent.len());
    agent.stop().await;
}

/// One-shot files are deleted once delivered and quiet, never before delivery,
/// never while another process has one open for writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_after_delivered_waits_for_delivery_and_for_the_writer() {
    let emu = Emulator::start().await;
    create_stream(&emu.client().await, "logs", 1).await;
    let work = Workdir::new();
    let extra = "delete_after_delivered = true\nrotate_wait_ms = 300";
    let (agent, addr) = agent(&emu, &work, extra).await;
    emu.faults.outage.store(true, Ordering::Release);
    let done = work.path("in").join("done.log");
    let done_lines = lines("done", 100);
    write_lines(&done, &done_lines);
    let open = work.path("in").join("open.log");
    let open_lines = lines("open", 50);
    let mut writer = open_append(&open);
    writer
        .write_all(format!("{}\n", open_lines.join("\n")).as_bytes())
        .unwrap();
    // Read, quiet, but not delivered: both stay.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(done.exists() && open.exists());
    assert!(!report_of(addr, &done).await.delivered);

    emu.faults.outage.store(false, Ordering::Release);
    wait_for("the delivered file deleted", LONG, || !done.exists()).await;
    assert_eq!(held(&emu, &done_lines).await, done_lines.len());
    // Delivered and quiet too, but a writer holds it open.
    let (code, _, err) = files(
        addr,
        &[
            "--wait-delivered",
            open.to_str().unwrap(),
            "--timeout",
            "60",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(open.exists(), "deleted while open for writing");
    // Appended to: read and delivered again, still kept while open.
    let more = lines("more", 10);
    writer
        .write_all(format!("{}\n", more.join("\n")).as_bytes())
        .unwrap();
    drop(writer);
    wait_for("the closed file deleted", LONG, || !open.exists()).await;
    assert_eq!(held(&emu, &open_lines).await, open_lines.len());
    assert_eq!(held(&emu, &more).await, more.len());
    let log = agent.stop().await;
    assert_eq!(
        log.matches("Deleted a file read to its end").count(),
        2,
        "{log}"
    );
}

/// After a restart, what the earlier run read is delivered only once nothing it
/// spooled is left: the file is resumed at its checkpoint with nothing of its
/// own waiting, and still not delivered while the endpoint is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_read_before_a_restart_count_only_once_they_left_the_spool() {
    let emu = Emulator::start().await;
    create_stream(&emu.client().await, "logs", 1).await;
    let work = Workdir::new();
    let (agent, addr) = agent(&emu, &work, "").await;
    emu.faults.outage.store(true, Ordering::Release);
    let path = work.path("in").join("app.log");
    let sent = lines("before", 200);
    write_lines(&path, &sent);
    let size = std::fs::metadata(&path).unwrap().len();
    wait_for("the file read into the spool", LONG, || {
        let out = shardline_command()
            .args(["files", "--json", "--addr", &addr.to_string()])
            .output()
            .unwrap();
        let report: FilesReport = serde_json::from_slice(&out.stdout).unwrap();
        report.files.iter().any(|f| f.read == size)
    })
    .await;
    agent.stop().await;

    let conf = work.path("shardline.toml");
    let mut again = AgentProcess::spawn(&work, "again", &conf, &[], |_| {});
    let addr = again.metrics_addr().await;
    let target = path.to_str().unwrap();
    let (code, _, err) = files(addr, &["--wait-delivered", target, "--timeout", "3"]).await;
    assert_eq!(code, 1, "{err}");
    let resumed = report_of(addr, &path).await;
    assert_eq!((resumed.read, resumed.pending_batches), (size, 0));
    assert!(!resumed.delivered, "{resumed:?}");

    emu.faults.outage.store(false, Ordering::Release);
    let (code, out, err) = files(addr, &["--wait-delivered", target, "--timeout", "90"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(held(&emu, &sent).await, sent.len());
    again.stop().await;
}
