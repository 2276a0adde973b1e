//! The release's container image (`shardline-VERSION-ARCH-oci.tar`), read back
//! with buildah and run: `podman run` cannot start containers in a sandbox that
//! refuses crun's `setrlimit`, so the image's root is mounted (`buildah mount`)
//! and its entry point run with `chroot` as the image's user, with `/proc` and
//! `/dev` mounted and volumes bound in as a container runtime would. Its files,
//! user and configs are checked; run as shipped it delivers lines sent through
//! the socket it shares to an emulator on 127.0.0.1 and publishes its metrics,
//! and run on a host's `/var/log` mounted read-only it delivers a file's lines
//! and the journal's entries. Root only (CI).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{artifact, files_under, run, text};
use crate::journald::{Journal, Written};
use crate::util::{aws_env, create_stream, send_lines, stream_data, AgentProcess, Emulator};

/// The user the image runs as.
const UID: u32 = 10001;

/// The groups that may read the host's logs and journal mounted into the image
/// (a host's adm and systemd-journal, given with `--group-add`).
const LOG_GID: u32 = 10189;
const JOURNAL_GID: u32 = 10190;

/// A working container made from the release's image archive, its root mounted;
/// removed on drop.
struct Mounted {
    id: String,
    root: PathBuf,
    /// What was mounted into the root, to unmount in reverse.
    mounts: Vec<PathBuf>,
}

impl Mounted {
    fn new() -> Mounted {
        assert_eq!(
            effective_uid(),
            0,
            "the image tests need root (CI runs as root)"
        );
        let archive = artifact("-oci.tar");
        let from = run(Command::new("buildah")
            .args(["from", "--quiet", "--pull-never"])
            .arg(format!("oci-archive:{}", archive.display())));
        assert!(from.status.success(), "buildah from: {}", text(&from));
        let id = String::from_utf8_lossy(&from.stdout).trim().to_owned();
        let mount = run(Command::new("buildah").arg("mount").arg(&id));
        assert!(mount.status.success(), "buildah mount: {}", text(&mount));
        let root = PathBuf::from(String::from_utf8_lossy(&mount.stdout).trim());
        Mounted {
            id,
            root,
            mounts: Vec::new(),
        }
    }

    /// `mount ARGS… SOURCE ROOT/inside`, undone on drop.
    fn mount(&mut self, args: &[&str], source: &Path, inside: &str) {
        let target = self.root.join(inside);
        std::fs::create_dir_all(&target).unwrap();
        let out = run(Command::new("mount").args(args).arg(source).arg(&target));
        assert!(out.status.success(), "mount {inside}: {}", text(&out));
        self.mounts.push(target);
    }

    /// `/proc` and `/dev` inside the root, as a container runtime mounts them.
    fn mount_runtime(&mut self) {
        self.mount(&["-t", "proc"], Path::new("proc"), "proc");
        self.mount(&["--bind"], Path::new("/dev"), "dev");
    }

    /// A host directory as a volume at `inside`, read-only if asked.
    fn volume(&mut self, host: &Path, inside: &str, read_only: bool) {
        self.mount(&["--bind"], host, inside);
        if read_only {
            let target = self.root.join(inside);
            let out = run(Command::new("mount")
                .args(["-o", "remount,bind,ro"])
                .arg(&target));
            assert!(out.status.success(), "read-only {inside}: {}", text(&out));
        }
    }

    /// `program` run inside the image as its user, with the image's environment.
    fn command(&self, program: &str) -> Command {
        self.command_in_groups(program, &[])
    }

    /// `program` run inside the image as its user, also in `groups` (as
    /// `--group-add` gives them).
    fn command_in_groups(&self, program: &str, groups: &[u32]) -> Command {
        let mut c = Command::new("/usr/sbin/chroot");
        c.arg(format!("--userspec={UID}:{UID}"));
        if !groups.is_empty() {
            let list: Vec<String> = groups.iter().map(u32::to_string).collect();
            c.arg(format!("--groups={}", list.join(",")));
        }
        c.arg(&self.root).arg(program).env_clear();
        for var in self.config_list("Env") {
            let (name, value) = var.split_once('=').unwrap();
            c.env(name, value);
        }
        c
    }

    /// The image's configuration (`buildah inspect`: `OCIv1.config`).
    fn config(&self) -> serde_json::Value {
        let out = run(Command::new("buildah")
            .args(["inspect", "--type", "container"])
            .arg(&self.id));
        assert!(out.status.success(), "{}", text(&out));
        let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        all["OCIv1"]["config"].clone()
    }

    /// A list of strings in the image's configuration.
    fn config_list(&self, key: &str) -> Vec<String> {
        serde_json::from_value(self.config()[key].clone()).unwrap_or_else(|e| panic!("{key}: {e}"))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        for target in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg(target).status();
        }
        let _ = Command::new("buildah").arg("rm").arg(&self.id).output();
    }
}

/// The effective user id of this process (from /proc, without `unsafe`).
fn effective_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn image_holds_only_the_agent_what_it_links_and_its_configs() {
    let image = Mounted::new();
    let expected = [
        "/etc/group",
        "/etc/nsswitch.conf",
        "/etc/passwd",
        "/etc/shardline/host-logs.toml",
        "/etc/shardline/shardline.toml",
        "/etc/ssl/certs/ca-certificates.crt",
        "/usr/bin/journalctl",
        "/usr/bin/shardline",
        "/usr/share/doc/shardline/LICENSE",
    ];
    let all = files_under(&image.root);
    let others: Vec<&String> = all
        .iter()
        .filter(|f| !expected.contains(&f.as_str()))
        .collect();
    // Anything else is a shared library a program links (no shell, no package
    // manager).
    for f in &others {
        assert!(f.contains(".so"), "{f} in the image: {all:?}");
    }
    for f in expected {
        assert!(all.iter().any(|a| a == f), "{f} missing: {all:?}");
    }
    assert!(!image.root.join("bin/sh").exists());
    assert_eq!(
        std::fs::read(image.root.join("usr/bin/shardline")).unwrap(),
        std::fs::read(super::release_binary(tempfile::tempdir().unwrap().path())).unwrap()
    );

    let config = image.config();
    assert_eq!(config["User"], format!("{UID}:{UID}"));
    assert!(
        config["Volumes"].get("/var/lib/shardline").is_some(),
        "{config}"
    );
    assert!(config["ExposedPorts"].get("9717/tcp").is_some(), "{config}");
    assert_eq!(image.config_list("Entrypoint"), ["/usr/bin/shardline"]);
    assert_eq!(
        image.config_list("Cmd"),
        ["run", "--config", "/etc/shardline/shardline.toml"]
    );
    let spool = std::fs::metadata(image.root.join("var/lib/shardline")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&spool), UID);

    for config in ["shardline.toml", "host-logs.toml"] {
        let out = run(image
            .command("/usr/bin/shardline")
            .args(["validate", "--config"])
            .arg(format!("/etc/shardline/{config}")));
        assert!(out.status.success(), "{config}: {}", text(&out));
    }
    // journalctl finds every library it needs inside the image.
    let out = run(image.command("/usr/bin/journalctl").arg("--version"));
    assert!(out.status.success(), "{}", text(&out));
}

/// A directory on the host the image's user owns, mounted at `inside` (as a
/// named volume would be). Its host path is short, as socket addresses are.
fn owned_volume(image: &mut Mounted, work: &Path, inside: &str) -> PathBuf {
    let host = work.join(inside.replace('/', "-"));
    std::fs::create_dir(&host).unwrap();
    let chown = run(Command::new("chown").arg(format!("{UID}:{UID}")).arg(&host));
    assert!(chown.status.success(), "{}", text(&chown));
    image.volume(&host, inside, false);
    host
}

/// A host's `/var/log` with an application's log and a journal holding one
/// entry, both readable only by their groups (adm and systemd-journal, here
/// LOG_GID and JOURNAL_GID), mounted read-only. Returns the application log.
fn host_logs(image: &mut Mounted, work: &Path) -> PathBuf {
    let var_log = work.join("var-log");
    std::fs::create_dir_all(var_log.join("app")).unwrap();
    let app_log = var_log.join("app/app.log");
    std::fs::write(&app_log, "").unwrap();
    let mut journal = Journal::new(var_log.join("journal"));
    journal.append(&[Written::new("from the journal")]);
    for (gid, path) in [
        (LOG_GID, var_log.join("app")),
        (JOURNAL_GID, var_log.join("journal")),
    ] {
        let chgrp = run(Command::new("chgrp")
            .arg("-R")
            .arg(gid.to_string())
            .arg(&path));
        assert!(chgrp.status.success(), "{}", text(&chgrp));
        let chmod = run(Command::new("chmod").args(["-R", "o-rwx"]).arg(&path));
        assert!(chmod.status.success(), "{}", text(&chmod));
    }
    image.volume(&var_log, "var/log", true);
    app_log
}

/// The image's entry point and command, with `args` in place of the command
/// when given, run as its user in `groups`, the emulator as the endpoint
/// (AWS_ENDPOINT_URL, as the config names no endpoint), logging to `log`.
fn spawn_image(
    image: &Mounted,
    args: &[&str],
    groups: &[u32],
    endpoint: &str,
    log: PathBuf,
) -> AgentProcess {
    let entrypoint = image.config_list("Entrypoint");
    let cmd = if args.is_empty() {
        image.config_list("Cmd")
    } else {
        args.iter().map(|a| a.to_string()).collect()
    };
    let mut c = image.command_in_groups(&entrypoint[0], groups);
    c.args(&entrypoint[1..])
        .args(&cmd)
        .args(["--status-file", "/var/lib/shardline/status.json"])
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let status_file = image.root.join("var/lib/shardline/status.json");
    let _ = std::fs::remove_file(&status_file);
    AgentProcess {
        child: c.spawn().unwrap(),
        log,
        status_file,
    }
}

/// Waits until `stream` holds `count` records; returns them sorted.
async fn records(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    count: usize,
    agent: &AgentProcess,
) -> Vec<Vec<u8>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = stream_data(client, stream).await;
        if got.len() >= count {
            let mut got: Vec<Vec<u8>> = got.iter().map(|b| b.to_vec()).collect();
            got.sort();
            return got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} records:\n{}",
            got.len(),
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/metrics` of the image's agent, from outside it on the port it publishes.
async fn published_metrics() -> String {
    let addr = "127.0.0.1:9717".parse().unwrap();
    let (_, body) = shardline::status::get(addr, "/metrics", Duration::from_secs(10))
        .await
        .unwrap();
    String::from_utf8_lossy(&body).into_owned()
}

/// The image run as shipped (its entry point, command and default config):
/// lines sent through the socket it shares arrive, and its metrics are
/// reachable on the port it publishes. Then the documented run on the host's
/// logs (`host-logs.toml`, /var/log mounted read-only): a file's lines and a
/// journal entry arrive. Both stop cleanly on SIGTERM, as `podman stop` sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_runs_as_shipped_and_on_the_hosts_logs() {
    aws_env();
    let mut image = Mounted::new();
    image.mount_runtime();
    let emulator = Emulator::start().await;
    let client = emulator.client().await;
    create_stream(&client, "app-logs", 1).await;
    let work = tempfile::tempdir().unwrap();
    owned_volume(&mut image, work.path(), "var/lib/shardline");
    let shared = owned_volume(&mut image, work.path(), "run/shardline");

    let agent = spawn_image(
        &image,
        &[],
        &[],
        &emulator.endpoint,
        work.path().join("default.log"),
    );
    let lines: Vec<String> = (0..1000).map(|i| format!("line {i}")).collect();
    wait_for_socket(&shared.join("ingest.sock"), &agent).await;
    send_lines(&shared.join("ingest.sock"), lines.clone()).await;
    let mut expected: Vec<Vec<u8>> = lines.iter().map(|l| l.clone().into_bytes()).collect();
    expected.sort();
    assert_eq!(records(&client, "app-logs", 1000, &agent).await, expected);
    let body = published_metrics().await;
    let delivered = "shardline_records_delivered_total{stream=\"app-logs\"} 1000";
    assert!(body.contains(delivered), "{body}");
    agent.stop().await;

    let app_log = host_logs(&mut image, work.path());
    let host = ["run", "--config", "/etc/shardline/host-logs.toml"];
    let mut agent = spawn_image(
        &image,
        &host,
        &[LOG_GID, JOURNAL_GID],
        &emulator.endpoint,
        work.path().join("host.log"),
    );
    agent.metrics_addr().await;
    std::fs::write(&app_log, "from a file\n").unwrap();
    expected.extend([b"from a file".to_vec(), b"from the journal".to_vec()]);
    expected.sort();
    assert_eq!(records(&client, "app-logs", 1002, &agent).await, expected);
    agent.stop().await;
}

/// Waits until the agent's socket exists (its status file is written inside
/// the image's spool, which the test reads through the volume too).
async fn wait_for_socket(path: &Path, agent: &AgentProcess) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no socket:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
