//! Who may reach the socket: the socket file's mode and owner, stale files, the
//! modes of the files the agent creates, and peers refused or served by uid and
//! group.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use shardline::testkit::frame::Status;

use super::{encoded, exchange, frames_socket, request, status};
use crate::util::{config, start_agent, wait_for, AgentProcess, Workdir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_files_get_their_mode_and_stale_ones_are_replaced_safely() {
    let work = Workdir::new();
    let dead = "http://127.0.0.1:9".to_string();
    // A stale socket file from a crashed run is replaced.
    let sock = work.path("s.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let agent = start_agent(config(
        &work,
        &dead,
        "logs",
        &frames_socket(&sock, "file_mode = \"0600\""),
    ))
    .await;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // A second agent may not take a socket someone listens on.
    let work2 = Workdir::new();
    let e =
        shardline::agent::Agent::start(config(&work2, &dead, "logs", &frames_socket(&sock, "")))
            .await
            .err()
            .expect("a live socket was taken over");
    assert!(format!("{:?}", e).contains("InUse"), "{e:?}");
    agent.stop().await.unwrap();
    // Never a file that is not a socket.
    let plain = work.path("plain");
    std::fs::write(&plain, "keep me").unwrap();
    let e =
        shardline::agent::Agent::start(config(&work2, &dead, "logs", &frames_socket(&plain, "")))
            .await
            .err()
            .expect("a regular file was replaced");
    assert!(format!("{e:?}").contains("NotASocket"), "{e:?}");
    assert_eq!(std::fs::read_to_string(&plain).unwrap(), "keep me");
    // The default mode is 0660.
    let agent = start_agent(config(
        &work2,
        &dead,
        "logs",
        &frames_socket(&work2.path("d.sock"), ""),
    ))
    .await;
    let mode = std::fs::metadata(work2.path("d.sock"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660);
    agent.stop().await.unwrap();
}

/// Regression (issue 14, rows 8 and 9): the socket's mode and owner were set by
/// path after bind, and the spool directory and dead-letter file took the umask
/// (0755 / 0644: log data world-readable). Under umask 0 the agent's files are
/// still private and the socket appears with its configured mode and owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_the_agent_creates_are_private_whatever_the_umask() {
    let work = Workdir::new();
    let sock = work.path("run/in.sock");
    let root = unsafe_euid() == 0;
    let owner = if root {
        "owner = \"65534\"\ngroup = \"4242\"\n"
    } else {
        ""
    };
    let conf = work.path("shardline.toml");
    std::fs::write(
        &conf,
        format!(
            "[kinesis]\nstream = \"logs\"\nregion = \"us-east-1\"\nendpoint = \"http://127.0.0.1:9\"\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n[spool]\ndir = \"{}\"\n\
             [[socket]]\npath = \"{}\"\nfile_mode = \"0640\"\n{owner}",
            work.path("state/spool").display(),
            sock.display()
        ),
    )
    .unwrap();
    let mut agent = AgentProcess::spawn(&work, "agent", &conf, &[], |c| {
        use std::os::unix::process::CommandExt;
        // SAFETY: umask is async-signal-safe.
        unsafe {
            c.pre_exec(|| {
                libc::umask(0);
                Ok(())
            });
        }
    });
    agent.metrics_addr().await;
    let mode =
        |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&work.path("state/spool")), 0o700);
    assert_eq!(mode(&work.path("state/spool/dead-letter.ndjson")), 0o600);
    assert_eq!(mode(&sock), 0o640);
    if root {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(&sock).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (65534, 4242));
    }
    // The private directory the socket was bound in is gone.
    let left: Vec<_> = std::fs::read_dir(work.path("run"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("in.sock")]);
    agent.stop().await;
}

/// A peer whose uid is not allowed is refused and counted. Switching uid needs root
/// (as in CI); elsewhere the decision itself is unit-tested
/// (`source::socket::peer::tests::credentials_and_groups_decide_access`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_not_allowed_are_refused() {
    let work = Workdir::new();
    std::fs::set_permissions(work.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = work.path("guarded.sock");
    let me = unsafe_euid();
    let extra = frames_socket(&sock, &format!("file_mode = \"0666\"\nallow_uids = [{me}]"));
    let agent = start_agent(config(&work, "http://127.0.0.1:9", "logs", &extra)).await;
    let m = agent.metrics().clone();
    // An allowed peer (ourselves) is served.
    let answers = exchange(&sock, &encoded(&request(1, vec![("k", "mine")], true))).await;
    assert_eq!(status(&answers[0]), Status::Ok);
    assert_eq!(
        m.read(
            "shardline_source_errors_total",
            &[("source", "socket"), ("kind", "peer_refused")]
        ),
        0
    );
    if me == 0 {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(env!("CARGO_BIN_EXE_shardline"))
            .args(["send", "--ack", "--socket"])
            .arg(&sock)
            .uid(65534)
            .gid(65534)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all_sync(b"from nobody\n");
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "a refused peer's send succeeded");
        wait_for("the refused peer counted", Duration::from_secs(10), || {
            m.read(
                "shardline_source_errors_total",
                &[("source", "socket"), ("kind", "peer_refused")],
            ) == 1
        })
        .await;
    }
    agent.stop().await.unwrap();
}

/// Regression (issue 14, row 7): `allow_gids` checked only the primary gid, yet the
/// README grants access with `adduser myapp shardline`, a supplementary group.
/// Switching credentials needs root (as in CI); elsewhere the decision itself is
/// unit-tested (`source::socket::peer::tests`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_in_an_allowed_supplementary_group_are_served() {
    if unsafe_euid() != 0 {
        return;
    }
    let work = Workdir::new();
    std::fs::set_permissions(work.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = work.path("group.sock");
    let extra = frames_socket(&sock, "file_mode = \"0666\"\nallow_gids = [4242]");
    let agent = start_agent(config(&work, "http://127.0.0.1:9", "logs", &extra)).await;
    let m = agent.metrics().clone();
    let send_as = |groups: &'static [libc::gid_t]| {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(env!("CARGO_BIN_EXE_shardline"));
        c.args(["send", "--ack", "--socket"])
            .arg(&sock)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: only async-signal-safe calls between fork and exec. Groups first:
        // once the uid is not root, they cannot be set.
        unsafe {
            c.pre_exec(move || {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(65534) != 0
                    || libc::setuid(65534) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all_sync(b"from a group member\n");
        child.wait_with_output().unwrap()
    };
    // nobody:nogroup, in 4242 as a supplementary group: served.
    let out = send_as(&[4242]);
    assert!(
        out.status.success(),
        "a peer in an allowed supplementary group was refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("acknowledged 1"));
    assert_eq!(
        m.read(
            "shardline_source_errors_total",
            &[("source", "socket"), ("kind", "peer_refused")]
        ),
        0
    );
    // The same peer without that group: refused.
    let out = send_as(&[4243]);
    assert!(
        !out.status.success(),
        "a peer outside allow_gids was served"
    );
    wait_for("the refused peer counted", Duration::from_secs(10), || {
        m.read(
            "shardline_source_errors_total",
            &[("source", "socket"), ("kind", "peer_refused")],
        ) == 1
    })
    .await;
    agent.stop().await.unwrap();
}

fn unsafe_euid() -> u32 {
    // The owner of a file we just created is our effective uid.
    use std::os::unix::fs::MetadataExt;
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().metadata().unwrap().uid()
}

trait WriteSync {
    fn write_all_sync(self, data: &[u8]);
}

impl WriteSync for std::process::ChildStdin {
    fn write_all_sync(mut self, data: &[u8]) {
        use std::io::Write;
        self.write_all(data).unwrap();
    }
}
