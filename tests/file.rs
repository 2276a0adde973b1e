//! The file tailer: real files in temp dirs, the real agent (in process and as a
//! child process that is killed), and a model test of the tailer alone.
//!
//! - [`rotation`]: rotations under load, many files, a full spool (in process).
//! - [`oversized`]: invalid UTF-8 and oversized lines through the binary.
//! - [`sigkill`]: the binary killed at random moments, then audited.
//! - [`model`]: the tailer alone against a model of the files.
//! - [`process`]: starting and stopping the binary for the two above it.
//! - [`delivered`]: `shardline files`, `--wait-delivered` and
//!   `delete_after_delivered` against an endpoint that goes away and comes back.
//!
//! This module holds only what they all share: the time limit and how a test
//! appends to a file.

mod delivered;
mod ids;
mod model;
mod oversized;
mod process;
mod rotation;
mod sigkill;

use std::path::Path;
use std::time::Duration;

/// How long a test waits for the agent before it fails.
const LONG: Duration = Duration::from_secs(90);

/// Opens `path` for appending, creating it if needed.
fn open_append(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}
