//! The release's container image (`shardline-VERSION-ARCH-oci.tar`), read back
//! with buildah and run: `podman run` cannot start containers in a sandbox that
//! refuses crun's `setrlimit`, so the image's root is mounted (`buildah mount`)
//! and its agent run with `chroot` as the image's user, with `/proc` and `/dev`
//! mounted as a container runtime would. It validates its configs, delivers records sent
//! through the socket it shares and entries of a journal mounted into it to an
//! emulator on 127.0.0.1, serves metrics, and stops cleanly. Root only (CI).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{artifact, run, text};
use crate::journald::{Journal, Written};
use crate::util::{aws_env, create_stream, send_lines, stream_data, AgentProcess, Emulator};

/// The user the image runs as.
const UID: u32 = 10001;

/// The group that may read the journal mounted into the image (a host's
/// systemd-journal).
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
        for var in self
            .inspect("{{range .OCIv1.Config.Env}}{{println .}}{{end}}")
            .lines()
        {
            let (name, value) = var.split_once('=').unwrap();
            c.env(name, value);
        }
        c
    }

    fn inspect(&self, format: &str) -> String {
        let out = run(Command::new("buildah")
            .args(["inspect", "--type", "container", "--format", format])
            .arg(&self.id));
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
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

/// Every file (not directory) under `root`, as absolute paths inside it.
fn files(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                dirs.push(p);
            } else {
                found.push(format!("/{}", p.strip_prefix(root).unwrap().display()));
            }
        }
    }
    found.sort();
    found
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
    let all = files(&image.root);
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

    assert_eq!(
        image.inspect("{{.OCIv1.Config.User}}"),
        format!("{UID}:{UID}")
    );
    assert!(image
        .inspect("{{.OCIv1.Config.Volumes}}")
        .contains("/var/lib/shardline"));
    assert!(image
        .inspect("{{.OCIv1.Config.ExposedPorts}}")
        .contains("9717/tcp"));
    assert_eq!(
        image.inspect("{{.OCIv1.Config.Entrypoint}}"),
        "[/usr/bin/shardline]"
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

/// The image's own socket config with the emulator's endpoint and a journal.
fn test_config(endpoint: &str) -> String {
    format!(
        "[kinesis]\nstream = \"logs\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\n\
         [delivery]\nlinger_ms = 20\n\
         [spool]\ndir = \"/var/lib/shardline\"\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n\
         [[socket]]\npath = \"/run/shardline/ingest.sock\"\nfile_mode = \"0666\"\n\
         [[journald]]\ndirectory = \"/var/log/journal\"\nsince = \"beginning\"\n"
    )
}

/// The socket's directory shared as a volume (a short path on the host, as
/// socket addresses are short), and a journal holding one entry mounted
/// read-only, readable by its group (a host's systemd-journal), which the
/// agent is given. Returns the shared directory.
fn share_volumes(image: &mut Mounted, work: &Path) -> PathBuf {
    let shared = work.join("run");
    std::fs::create_dir(&shared).unwrap();
    let chown = run(Command::new("chown")
        .arg(format!("{UID}:{UID}"))
        .arg(&shared));
    assert!(chown.status.success(), "{}", text(&chown));
    image.volume(&shared, "run/shardline", false);
    let mut journal = Journal::new(work.join("journal"));
    journal.append(&[Written::new("from the journal")]);
    let chgrp = run(Command::new("chgrp")
        .args(["-R", &JOURNAL_GID.to_string()])
        .arg(work.join("journal")));
    assert!(chgrp.status.success(), "{}", text(&chgrp));
    image.volume(&work.join("journal"), "var/log/journal", true);
    shared
}

/// The image's agent on its test config, as its user in the journal's group,
/// logging to `log`.
fn spawn_agent(image: &Mounted, log: PathBuf) -> AgentProcess {
    let mut c = image.command_in_groups("/usr/bin/shardline", &[JOURNAL_GID]);
    c.args(["run", "--config", "/etc/shardline/test.toml"])
        .args(["--status-file", "/var/lib/shardline/status.json"])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    AgentProcess {
        child: c.spawn().unwrap(),
        log,
        status_file: image.root.join("var/lib/shardline/status.json"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_runs_the_agent_delivering_socket_lines_and_journal_entries() {
    aws_env();
    let mut image = Mounted::new();
    image.mount_runtime();
    let emulator = Emulator::start().await;
    let client = emulator.client().await;
    create_stream(&client, "logs", 1).await;

    std::fs::write(
        image.root.join("etc/shardline/test.toml"),
        test_config(&emulator.endpoint),
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let shared = share_volumes(&mut image, work.path());
    let mut agent = spawn_agent(&image, work.path().join("agent.log"));
    let metrics = agent.metrics_addr().await;

    // The socket the image shares, reached from outside it.
    let lines: Vec<String> = (0..1000).map(|i| format!("line {i}")).collect();
    send_lines(&shared.join("ingest.sock"), lines.clone()).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let got = loop {
        let got = stream_data(&client, "logs").await;
        if got.len() > lines.len() {
            break got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} records:\n{}",
            got.len(),
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Metrics are served from inside the image.
    let (_, body) = shardline::status::get(metrics, "/metrics", Duration::from_secs(10))
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&body).into_owned();
    assert!(
        body.contains("shardline_records_delivered_total{stream=\"logs\"} 1001"),
        "{body}"
    );
    let log = agent.stop().await;

    let mut expected: Vec<Vec<u8>> = lines.iter().map(|l| l.clone().into_bytes()).collect();
    expected.push(b"from the journal".to_vec());
    expected.sort();
    let mut got: Vec<Vec<u8>> = got.iter().map(|b| b.to_vec()).collect();
    got.sort();
    assert_eq!(got, expected, "{log}");
}
