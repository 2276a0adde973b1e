//! The agent binary as a child process of the file tests: its config, its start
//! (checked with `shardline validate` first) and its stop. Used by
//! [`super::oversized`] and [`super::sigkill`]; holds no state of its own.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::open_append;
use crate::util::{shardline_bin, Emulator, Workdir};

fn shardline() -> Command {
    Command::new(shardline_bin())
}

/// Starts `shardline run --config conf`, stderr appended to `log`, after
/// `shardline validate` accepted the config.
pub(super) fn spawn_binary(conf: &Path, log: &Path, rust_log: &str) -> Child {
    // A binary that does not know the config would only show as a timeout later.
    let check = shardline()
        .args(["validate", "--config"])
        .arg(conf)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{} refuses the config: {}",
        shardline_bin().display(),
        String::from_utf8_lossy(&check.stderr)
    );
    shardline()
        .args(["run", "--config"])
        .arg(conf)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::null())
        .stderr(Stdio::from(open_append(log)))
        .spawn()
        .unwrap()
}

/// A config for the binary: stream `logs` at the emulator, the spool in `work`,
/// then `extra` (the sources).
pub(super) fn base_toml(emu: &Emulator, work: &Workdir, extra: &str) -> String {
    format!(
        "[kinesis]\nstream = \"logs\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\n[delivery]\nmax_buffered_time_ms = 20\n[metrics]\nlisten = \"127.0.0.1:0\"\n[spool]\ndir = \"{}\"\n{extra}",
        emu.endpoint,
        work.spool().display(),
    )
}

/// SIGTERM, then the exit status.
pub(super) async fn sigterm_and_wait(mut child: Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap()
}
