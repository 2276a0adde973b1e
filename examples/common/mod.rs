//! Helpers shared by the examples (each includes this file as a module: `mod
//! common;` beside a one-file example, `#[path = "../common/mod.rs"] mod common;`
//! in an example that is a directory). They own no state: finding (and building)
//! the agent binary, measuring a directory, a process's CPU time, backtraces of a
//! hang; `emulator` serves the Kinesis emulator for the examples, the benches and
//! the tests.

#![allow(dead_code)]

pub mod emulator;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The agent binary: `SHARDLINE_BIN`, else `shardline` beside `examples/` (built
/// first under `cargo run`).
pub fn agent_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("SHARDLINE_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    // target/<profile>/examples/<name> → target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("unexpected location {}", exe.display()))?;
    if let Some(cargo) = std::env::var_os("CARGO") {
        // Under `cargo run`: build the agent too, with the same profile, so a
        // stale binary is never run.
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_owned(),
            Some(p) => p.to_owned(),
        };
        let status = Command::new(cargo)
            .args(["build", "--bin", "shardline", "--profile", &profile])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!("building the agent failed: {status}"));
        }
    }
    let bin = profile_dir.join("shardline");
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "no agent binary at {}: run `cargo build --release --bin shardline` or set SHARDLINE_BIN",
            bin.display()
        ))
    }
}

/// Bytes of the files under `dir`: apparent (lengths) and allocated (blocks).
pub fn dir_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir).map_or((0, 0), |entries| {
        entries
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => dir_usage(&e.path()),
                Ok(m) => (m.len(), m.blocks() * 512),
                Err(_) => (0, 0),
            })
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    })
}

/// Prints every thread's backtrace of this process to stderr, with gdb if it is
/// installed (what a hang report needs).
pub fn print_backtraces() {
    let pid = std::process::id().to_string();
    match std::process::Command::new("gdb")
        .args(["-p", &pid, "-batch", "-ex", "thread apply all bt 30"])
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(out) => eprintln!("{}", String::from_utf8_lossy(&out.stdout)),
        Err(e) => eprintln!("no backtraces: cannot run gdb: {e}"),
    }
}

/// User + system CPU seconds of a process (`self` or a pid).
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .expect("stat")
        .split_whitespace()
        .collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}
