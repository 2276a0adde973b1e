//! The spool under the real binary: SIGKILLs at random moments of acked load
//! (writes, group commits, acks, segment rolls and removals), with the spool's
//! own files damaged between runs the way a crash or an operator leaves them,
//! and a real full filesystem.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use shardline::testkit::frame::{self, Record, Request, Response, Status};

use crate::util::{create_stream, stream_data, AgentProcess, Emulator, Workdir};

pub(crate) fn spool_config(
    work: &Workdir,
    endpoint: &str,
    spool_extra: &str,
    socket_extra: &str,
) -> PathBuf {
    let path = work.path("shardline.toml");
    std::fs::write(
        &path,
        format!(
            "[kinesis]\nstream = \"logs\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\n\
             request_timeout_ms = 5000\n[delivery]\nmax_buffered_time_ms = 20\n[metrics]\nlisten = \"127.0.0.1:0\"\n\
             [spool]\ndir = \"{}\"\n{spool_extra}\n\
             [[socket]]\npath = \"{}\"\nframing = \"frames\"\n{socket_extra}\n",
            work.spool().display(),
            work.path("in.sock").display()
        ),
    )
    .unwrap();
    path
}

/// A client that sends acked requests of `per` records until stopped, over and
/// over through agent restarts, and keeps the records the agent answered OK. It
/// pauses `pause` between requests (a bounded load: the stream is read back).
struct Sender {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Bytes>>>,
    /// Answers other than OK, by status.
    refused: Arc<Mutex<Vec<Status>>>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

/// Request `next` of [`Sender`]: `per` records of `size` bytes, each under a
/// random key; returns their data too.
fn numbered_request(next: u64, per: usize, size: usize) -> (Vec<Bytes>, Request) {
    let data: Vec<Bytes> = (0..per)
        .map(|i| {
            let head = format!("rec-{next:08}-{i:04}-");
            Bytes::from(format!(
                "{head}{}",
                "p".repeat(size.saturating_sub(head.len()))
            ))
        })
        .collect();
    let req = Request {
        id: next,
        records: data
            .iter()
            .map(|d| Record {
                partition_key: format!("k{}", fastrand::u32(..)),
                explicit_hash_key: None,
                data: d.clone(),
                record_id: None,
            })
            .collect(),
        ack: true,
        stream: None,
    };
    (data, req)
}

/// The next answer on `conn` (`buf` holds what was read past the last one), or
/// `None` once the connection ends.
fn read_answer(conn: &mut UnixStream, buf: &mut BytesMut) -> Option<Response> {
    loop {
        if let Ok(Some(r)) = frame::decode::<Response>(buf) {
            return Some(r);
        }
        let mut chunk = [0u8; 4096];
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

impl Sender {
    fn start(sock: PathBuf, per: usize, size: usize, pause: Duration) -> Sender {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, acked, refused) = (stop.clone(), acked.clone(), refused.clone());
            std::thread::spawn(move || {
                let mut next = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut conn) = UnixStream::connect(&sock) else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    conn.set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    let mut buf = BytesMut::new();
                    while !stop.load(Ordering::Relaxed) {
                        let (data, req) = numbered_request(next, per, size);
                        next += 1;
                        let mut wire = BytesMut::new();
                        frame::encode(&req, &mut wire);
                        if conn.write_all(&wire).is_err() {
                            break;
                        }
                        let answer = read_answer(&mut conn, &mut buf);
                        match answer {
                            Some(r) if r.status == Status::Ok as i32 => {
                                assert_eq!(r.id, req.id);
                                acked.lock().unwrap().extend(data);
                                std::thread::sleep(pause);
                            }
                            Some(r) => {
                                refused
                                    .lock()
                                    .unwrap()
                                    .push(Status::try_from(r.status).unwrap());
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            None => break,
                        }
                    }
                }
                next
            })
        };
        Sender {
            stop,
            acked,
            refused,
            thread: Some(thread),
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn finish(mut self) -> (Vec<Bytes>, Vec<Status>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        let acked = std::mem::take(&mut *self.acked.lock().unwrap());
        let refused = std::mem::take(&mut *self.refused.lock().unwrap());
        (acked, refused)
    }
}

fn stream_dir(spool: &Path) -> PathBuf {
    // The one stream "logs", in hex.
    spool.join("streams").join("6c6f6773")
}

fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == ext))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Waits until every acked record is in the stream; returns the stream's data.
async fn wait_delivered(
    client: &aws_sdk_kinesis::Client,
    acked: &[Bytes],
    log: &dyn Fn() -> String,
) -> Vec<Bytes> {
    let want: HashSet<&Bytes> = acked.iter().collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let data = stream_data(client, "logs").await;
        let got: HashSet<&Bytes> = data.iter().collect();
        let missing: Vec<&&Bytes> = want.iter().filter(|d| !got.contains(*d)).collect();
        if missing.is_empty() {
            return data;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acked records never reached the stream (e.g. {:?})\n{}",
            missing.len(),
            want.len(),
            missing.iter().take(3).collect::<Vec<_>>(),
            log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The crash matrix: SIGKILL at random moments of acked load on 1 MiB segments
/// (so kills land during writes, between a write and its fdatasync, between the
/// fdatasync and the OK, during rolls and during removals), with Kinesis
/// refusing in some runs and accepting in others; between runs the spool is
/// damaged as crashes and operators leave it: a torn last frame, a short ack
/// file, a missing index. Every record answered OK reaches the stream; nothing
/// reaches it that was not sent; none of that counts as damage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_records_survive_sigkills_torn_frames_and_lost_spool_state() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 2).await;
    let work = Workdir::new();
    let conf = spool_config(
        &work,
        &emu.endpoint,
        "segment_bytes = 1048576\nflush_interval_ms = 100",
        "",
    );
    let sender = Sender::start(work.path("in.sock"), 20, 300, Duration::from_millis(4));
    let streams = stream_dir(&work.spool());
    let runs = 10;
    for run in 0..runs {
        // Kinesis refuses in runs 0–2 (everything accumulates in segments), then
        // accepts every other run (acks, removals, copies forward).
        let refuse = run < 3 || run % 2 == 1;
        emu.faults
            .fail_requests
            .store(if refuse { u32::MAX } else { 0 }, Ordering::Relaxed);
        let mut agent = AgentProcess::spawn(&work, &format!("run{run}"), &conf, &[], |_| {});
        tokio::time::sleep(Duration::from_millis(fastrand::u64(400..1800))).await;
        agent.child.kill().unwrap();
        agent.child.wait().unwrap();
        match run % 4 {
            // A torn last frame: half a frame's worth of garbage after the end.
            0 => {
                if let Some(seg) = files_with(&streams, "seg").pop() {
                    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
                    f.write_all(b"SLf2\x00\x10\x00\x00torn").unwrap();
                }
            }
            // A short ack file: its last bytes cut.
            1 => {
                if let Some(ack) = files_with(&streams, "ack").pop() {
                    let len = std::fs::metadata(&ack).unwrap().len();
                    let f = std::fs::OpenOptions::new().write(true).open(&ack).unwrap();
                    f.set_len(len.saturating_sub(7)).unwrap();
                }
            }
            // The index lost.
            2 => {
                let _ = std::fs::remove_dir_all(work.spool().join("index"));
            }
            _ => {}
        }
    }
    assert!(sender.acked() > 0);
    emu.faults.fail_requests.store(0, Ordering::Relaxed);
    let mut agent = AgentProcess::spawn(&work, "last", &conf, &[], |_| {});
    let addr = agent.metrics_addr().await;
    let (acked, _) = sender.finish();
    let log = || {
        (0..runs)
            .map(|r| format!("run{r}.log"))
            .chain(["last.log".to_owned()])
            .map(|name| std::fs::read_to_string(work.path(&name)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let data = wait_delivered(&client, &acked, &log).await;
    for d in &data {
        assert!(d.starts_with(b"rec-"), "never sent: {d:?}");
    }
    let (_, text) = shardline::status::get(addr, "/metrics", Duration::from_secs(10))
        .await
        .unwrap();
    let text = String::from_utf8(text.to_vec()).unwrap();
    assert!(
        text.contains("shardline_spool_damaged_frames_total 0"),
        "a crash is not damage:\n{text}\n{}",
        log()
    );
    agent.stop().await;
}

/// Acked records pile up in 1 MiB segments while Kinesis refuses, then the agent
/// is SIGKILLed with every request answered. Returns what was acked.
pub(crate) async fn fill_segments_and_kill(
    emu: &Emulator,
    work: &Workdir,
    conf: &Path,
) -> Vec<Bytes> {
    emu.faults.fail_requests.store(u32::MAX, Ordering::Relaxed);
    let mut agent = AgentProcess::spawn(work, "fill", conf, &[], |_| {});
    agent.metrics_addr().await;
    let sender = Sender::start(work.path("in.sock"), 50, 300, Duration::ZERO);
    let deadline = Instant::now() + Duration::from_secs(60);
    while sender.acked() < 16_000 {
        assert!(Instant::now() < deadline, "{}", agent.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every request answered before the kill: all that is in the spool was acked.
    let (acked, refused) = sender.finish();
    assert!(refused.is_empty(), "{refused:?}");
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    acked
}

/// A sealed segment cut mid-frame and the newest segment deleted.
pub(crate) fn damage_segments(work: &Workdir) {
    let streams = stream_dir(&work.spool());
    let segs = files_with(&streams, "seg");
    assert!(segs.len() >= 4, "{segs:?}");
    let middle = &segs[segs.len() / 2];
    let len = std::fs::metadata(middle).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(middle)
        .unwrap();
    f.set_len(len / 2 + 7).unwrap();
    std::fs::remove_file(segs.last().unwrap()).unwrap();
}

/// The value of the unlabelled sample `name` in metrics `text`.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// How many of `acked` reached the stream, once that and `lost` make them all
/// (or two minutes passed).
async fn delivered_of(client: &aws_sdk_kinesis::Client, acked: &[Bytes], lost: u64) -> u64 {
    let want: HashSet<&Bytes> = acked.iter().collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let data = stream_data(client, "logs").await;
        let got: HashSet<Bytes> = data.into_iter().filter(|d| want.contains(d)).collect();
        if got.len() as u64 + lost >= acked.len() as u64 || Instant::now() > deadline {
            return got.len() as u64;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The report outlives a restart, in /status, until the file is deleted.
async fn check_report_after_restart(work: &Workdir, conf: &Path, lost: u64) {
    let mut agent = AgentProcess::spawn(work, "after", conf, &[], |_| {});
    let addr = agent.metrics_addr().await;
    let (_, body) = shardline::status::get(addr, "/status", Duration::from_secs(10))
        .await
        .unwrap();
    let status: shardline::status::Status = serde_json::from_slice(&body).unwrap();
    let damage = status.spool.damage.expect("the damage report is shown");
    assert_eq!((damage.events, damage.lost_records), (2, lost));
    assert_eq!(
        Path::new(&damage.path),
        work.spool().join("damaged").join("report")
    );
    agent.stop().await;
}

/// Regression (issue 22, N2): the release binary met damage it did not report.
/// Acked records pile up in 1 MiB segments (Kinesis refuses), the agent is
/// SIGKILLed, then a sealed segment is cut mid-frame and the newest segment is
/// deleted. The next start reports exactly the acked records that did not
/// reach the stream: in the metric, in `/status` and in `damaged/report`, which
/// a second restart still shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_segments_report_exactly_the_acked_records_lost() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 2).await;
    let work = Workdir::new();
    let conf = spool_config(
        &work,
        &emu.endpoint,
        "segment_bytes = 1048576\nflush_interval_ms = 50",
        "",
    );
    let acked = fill_segments_and_kill(&emu, &work, &conf).await;
    damage_segments(&work);

    emu.faults.fail_requests.store(0, Ordering::Relaxed);
    let mut agent = AgentProcess::spawn(&work, "damaged", &conf, &[], |_| {});
    let addr = agent.metrics_addr().await;
    let log = agent.log.clone();
    let log = || std::fs::read_to_string(&log).unwrap_or_default();
    let (_, text) = shardline::status::get(addr, "/metrics", Duration::from_secs(10))
        .await
        .unwrap();
    let lost = metric(
        std::str::from_utf8(&text).unwrap(),
        "shardline_spool_lost_records_total",
    );
    assert!(lost > 0, "{}", log());
    // What reaches the stream is everything acked but the records reported lost.
    let delivered = delivered_of(&client, &acked, lost).await;
    assert_eq!(delivered + lost, acked.len() as u64, "{}", log());
    let text = log();
    assert!(
        text.contains("A spool segment file is missing: the records it held are lost"),
        "{text}"
    );
    assert!(
        text.contains("Part of a spool segment that was synced is damaged or missing"),
        "{text}"
    );
    assert!(!text.contains("never acknowledged as durable"), "{text}");
    agent.stop().await;
    check_report_after_restart(&work, &conf, lost).await;
}

/// Unmounts (lazily) the filesystem at its path when dropped.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A 12 MiB tmpfs at `mount`, unmounted when the guard is dropped.
fn mount_small_tmpfs(mount: &Path) -> Unmount {
    std::fs::create_dir_all(mount).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=12m", "tmpfs"])
        .arg(mount)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount tmpfs");
    Unmount(mount.to_path_buf())
}

/// Sends until the full filesystem refuses; every refusal is SPOOL_FULL. Returns
/// what was acked.
async fn send_until_the_disk_is_full(work: &Workdir, agent: &AgentProcess) -> Vec<Bytes> {
    let sender = Sender::start(work.path("in.sock"), 50, 1000, Duration::ZERO);
    let deadline = Instant::now() + Duration::from_secs(60);
    while sender.refused.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the filesystem never filled:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (acked, refused) = sender.finish();
    assert!(acked.len() > 1000, "{} acked", acked.len());
    assert!(
        refused.iter().all(|s| *s == Status::SpoolFull),
        "a full disk is SPOOL_FULL, nothing else: {refused:?}"
    );
    acked
}

/// Once delivery freed the disk, 100 records are taken again; returns them.
async fn send_after_the_drain(work: &Workdir, agent: &AgentProcess) -> Vec<Bytes> {
    let sender = Sender::start(work.path("in.sock"), 10, 100, Duration::ZERO);
    let deadline = Instant::now() + Duration::from_secs(60);
    while sender.acked() < 100 {
        assert!(
            Instant::now() < deadline,
            "no record taken after the drain:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (more, _) = sender.finish();
    more
}

/// A real full filesystem (a 12 MiB tmpfs; root only): frames clients get
/// SPOOL_FULL, nothing acked is lost, the agent starts on the full disk, drains
/// it and takes records again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_filesystem_is_backpressure_and_the_agent_recovers_on_it() {
    // SAFETY: geteuid takes nothing, cannot fail and touches no memory of ours.
    if unsafe { libc_geteuid() } != 0 {
        eprintln!("skipped: mounting a small filesystem needs root");
        return;
    }
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 2).await;
    let work = Workdir::new();
    let _unmount = mount_small_tmpfs(&work.path("spool"));
    // No reserve: the spool meets the real ENOSPC, not only its own bound.
    let conf = spool_config(
        &work,
        &emu.endpoint,
        "segment_bytes = 1048576\nmin_free_bytes = 0",
        "on_full = \"refuse\"",
    );
    emu.faults.fail_requests.store(u32::MAX, Ordering::Relaxed);
    let mut agent = AgentProcess::spawn(&work, "full", &conf, &[], |_| {});
    agent.metrics_addr().await;
    let acked = send_until_the_disk_is_full(&work, &agent).await;
    // SIGKILL on the full disk, then a start on it: it opens and drains.
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    emu.faults.fail_requests.store(0, Ordering::Relaxed);
    let mut agent = AgentProcess::spawn(&work, "drain", &conf, &[], |_| {});
    let addr = agent.metrics_addr().await;
    let log = agent.log.clone();
    wait_delivered(&client, &acked, &|| {
        std::fs::read_to_string(&log).unwrap_or_default()
    })
    .await;
    // It takes records again once delivery freed the disk.
    let more = send_after_the_drain(&work, &agent).await;
    wait_delivered(&client, &more, &|| {
        std::fs::read_to_string(&log).unwrap_or_default()
    })
    .await;
    let (_, text) = shardline::status::get(addr, "/metrics", Duration::from_secs(10))
        .await
        .unwrap();
    let text = String::from_utf8(text.to_vec()).unwrap();
    assert!(text.contains("shardline_spool_disk_free_bytes "), "{text}");
    agent.stop().await;
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// The descriptor limit of the test below.
const DESCRIPTORS: u64 = 192;

/// Makes the agent start under a limit of [`DESCRIPTORS`] open files.
fn limit_descriptors(c: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit only, between fork and exec.
    unsafe {
        c.pre_exec(|| {
            let l = libc::rlimit {
                rlim_cur: DESCRIPTORS as libc::rlim_t,
                rlim_max: DESCRIPTORS as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Sends until the spool holds twice as many segments as descriptors, nothing
/// refused. Returns what was acked.
async fn send_twice_the_limit_in_segments(work: &Workdir, agent: &AgentProcess) -> Vec<Bytes> {
    let sender = Sender::start(work.path("in.sock"), 16, 60_000, Duration::ZERO);
    let deadline = Instant::now() + Duration::from_secs(300);
    while files_with(&stream_dir(&work.spool()), "seg").len() < 2 * DESCRIPTORS as usize {
        assert!(
            Instant::now() < deadline,
            "{} segments\n{}",
            files_with(&stream_dir(&work.spool()), "seg").len(),
            agent.log_text()
        );
        assert!(
            sender.refused.lock().unwrap().is_empty(),
            "{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (acked, refused) = sender.finish();
    assert!(
        refused.is_empty(),
        "refused {refused:?}\n{}",
        agent.log_text()
    );
    acked
}

/// Regression (issue 22, N8): every segment and ack file held a descriptor; with
/// 1 MiB segments and a limit of 1,024, at some 1,100 segments every commit
/// failed with EMFILE, every acked write was answered `INTERNAL`, and the next
/// start failed the same way. Under a limit of 192, twice as many segments as
/// descriptors are written and acked, the agent restarts on them, recovers every
/// acked record and delivers from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_segments_than_descriptors_are_written_reopened_and_delivered() {
    let work = Workdir::new();
    // Nothing answers at first: every segment stays.
    let spool_extra = "max_bytes = 2147483648\nsegment_bytes = 1048576\nmin_free_bytes = 0\n";
    let socket_extra = "max_connections = 8\n";
    let config = spool_config(&work, "http://127.0.0.1:9", spool_extra, socket_extra);
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("[delivery]\n", "[delivery]\nmax_connections = 4\n"),
    )
    .unwrap();
    let mut agent = AgentProcess::spawn(&work, "first", &config, &[], limit_descriptors);
    agent.metrics_addr().await;
    let acked = send_twice_the_limit_in_segments(&work, &agent).await;
    let log = agent.stop().await;
    assert!(!log.contains("Too many open files"), "{log}");

    // Restart under the same limit, now with Kinesis there.
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 4).await;
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("http://127.0.0.1:9", &emu.endpoint)).unwrap();
    let mut agent = AgentProcess::spawn(&work, "second", &config, &[], limit_descriptors);
    let addr = agent.metrics_addr().await;
    let status = shardline::status::fetch(addr, Duration::from_secs(10))
        .await
        .unwrap();
    // Every acked record was recovered (delivery may have begun already).
    assert!(
        status.spool.records + status.delivered_records_total >= acked.len() as u64,
        "{} spooled and {} delivered of {} acked\n{}",
        status.spool.records,
        status.delivered_records_total,
        acked.len(),
        agent.log_text()
    );
    // Delivering reads and acks segment after segment under the limit (all of
    // them would take minutes on the emulator).
    let log = || agent.log_text();
    wait_delivered(&client, &acked[..2000], &log).await;
    let log = agent.stop().await;
    assert!(!log.contains("Too many open files"), "{log}");
}
