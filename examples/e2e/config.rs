//! The agent's config for a run. Owns no state: `deliver` and `backlog` build the
//! config of the agent in this process with [`config`], `backlog` writes the
//! phase 1 agent's file with [`config_text`]; [`STREAM`] is also the stream the
//! emulator endpoint creates and the one whose deliveries are counted (the
//! Firehose stream has the same name: `[kinesis] delivery_stream`).

use std::path::Path;

use crate::cli::DestinationKind;

pub(crate) const STREAM: &str = "bench";

/// The agent's config: this benchmark's stream (a Kinesis data stream or a
/// Firehose stream, as `destination` says) at `endpoint`, the spool in `work`,
/// the given source section, and the `E2E_DELIVERY` / `E2E_SPOOL` lines; an
/// `E2E_PACKING` line (e.g. `packing_max_bytes = 65536`) goes to `[kinesis]`
/// beside a Firehose stream.
pub(crate) fn config_text(
    destination: DestinationKind,
    endpoint: &str,
    work: &Path,
    source: &str,
) -> String {
    let stream = match destination {
        DestinationKind::Kinesis => format!("stream = \"{STREAM}\""),
        DestinationKind::Firehose => format!(
            "delivery_stream = \"{STREAM}\"\n{}",
            std::env::var("E2E_PACKING").unwrap_or_default()
        ),
    };
    format!(
        "[kinesis]\n{stream}\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\n\
         [delivery]\nrate_limit_percent = 0\n{}\n[metrics]\nlisten = \"127.0.0.1:0\"\n\
         [spool]\ndir = \"{}\"\n{}\n{source}",
        std::env::var("E2E_DELIVERY").unwrap_or_default(),
        work.join("spool").display(),
        std::env::var("E2E_SPOOL").unwrap_or_default(),
    )
}

/// [`config_text`], parsed and validated.
pub(crate) fn config(
    destination: DestinationKind,
    endpoint: &str,
    work: &Path,
    source: &str,
) -> shardline::config::Config {
    let text = config_text(destination, endpoint, work, source);
    shardline::config::parse(&text, "e2e.toml".as_ref()).expect("config")
}
