//! The agent's config for a run. Owns no state: `deliver` and `backlog` build the
//! config of the agent in this process with [`config`], `backlog` writes the
//! phase 1 agent's file with [`config_text`]; [`STREAM`] is also the stream the
//! emulator endpoint creates and the one whose deliveries are counted.

use std::path::Path;

pub(crate) const STREAM: &str = "bench";

/// The agent's config: this benchmark's stream at `endpoint`, the spool in `work`,
/// the given source section, and the `E2E_DELIVERY` / `E2E_SPOOL` lines.
pub(crate) fn config_text(endpoint: &str, work: &Path, source: &str) -> String {
    format!(
        "[kinesis]\nstream = \"{STREAM}\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\n\
         [delivery]\nshard_rate_factor = 0.0\n{}\n[metrics]\nlisten = \"127.0.0.1:0\"\n\
         [spool]\ndir = \"{}\"\n{}\n{source}",
        std::env::var("E2E_DELIVERY").unwrap_or_default(),
        work.join("spool").display(),
        std::env::var("E2E_SPOOL").unwrap_or_default(),
    )
}

/// [`config_text`], parsed and validated.
pub(crate) fn config(endpoint: &str, work: &Path, source: &str) -> shardline::config::Config {
    shardline::config::parse(&config_text(endpoint, work, source), "e2e.toml".as_ref())
        .expect("config")
}
