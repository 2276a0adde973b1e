//! `shardline import`: another agent's configuration turned into a shardline
//! config file. One importer so far, for the Amazon Kinesis Agent's
//! `agent.json` ([`kinesis_agent`]).
//!
//! The output is TOML text with comments: each setting says which agent key it
//! came from, and each agent setting with no counterpart is a comment where it
//! would have gone and a warning, so that nothing is dropped unsaid. The input
//! is read loosely, as the agent reads it (`serde_json::Value`, any key): an
//! unknown key is reported, never an error. Secrets are never written.
//!
//! Steps, a file each: `read.rs` (the JSON and the agent's key lists),
//! `general.rs` (agent-wide keys), `endpoints.rs` and `destinations.rs`
//! (`[kinesis]`, `[[destination]]`), `delivery.rs` (buffering), `flow.rs`
//! (each flow's `[[file]]`), `processing.rs` (`dataProcessingOptions`),
//! `java_regex.rs` (the agent's patterns), `out.rs` (the TOML text).

mod delivery;
mod destinations;
mod endpoints;
mod flow;
mod general;
mod java_regex;
mod out;
mod processing;
mod read;
#[cfg(test)]
mod tests;

use out::Section;

/// Where the import puts the spool: the packages' state directory
/// (`StateDirectory=shardline` in the unit), as docs/configuration.md shows.
const SPOOL_DIR: &str = "/var/lib/shardline";

/// The config an import wrote, and what in the input did not map.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The shardline config, TOML with comments.
    pub toml: String,
    /// One line for each setting with no counterpart, or changed on the way.
    pub warnings: Vec<String>,
}

/// Why an agent.json cannot be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{from} is not JSON: {message}")]
    NotJson { from: String, message: String },
    #[error("{from} is not an agent configuration: its top level is {found}, not an object")]
    NotAnObject { from: String, found: String },
    #[error("{from} has no flows: \"flows\" is missing, empty or not a list")]
    NoFlows { from: String },
    #[error("flows[{index}] is {found}, not an object")]
    FlowNotAnObject { index: usize, found: String },
    #[error("flows[{index}] has no filePattern")]
    NoFilePattern { index: usize },
    #[error(
        "flows[{index}] ({pattern:?}) names no stream: it needs kinesisStream or deliveryStream"
    )]
    NoStream { index: usize, pattern: String },
}

/// The warnings of an import.
#[derive(Default)]
pub(super) struct Log {
    warnings: Vec<String>,
}

impl Log {
    /// A warning that is not also a comment.
    fn warn(&mut self, warning: String) {
        self.warnings.push(warning);
    }

    /// A setting with no counterpart: a comment where it would have gone and
    /// a warning naming where it was (`place`).
    fn lost(&mut self, s: &mut Section, place: &str, text: &str) {
        if text.ends_with('.') {
            s.comment(text);
        } else {
            s.comment(&format!("{text}."));
        }
        self.warnings.push(format!("{place}: {text}"));
    }
}

/// Converts the Amazon Kinesis Agent's `agent.json` (its text, `json`, read
/// from `from`, named in the header and in errors) into a shardline config.
pub fn kinesis_agent(json: &str, from: &str) -> Result<Imported, ImportError> {
    let root = read::root(json, from)?;
    let flows = read::flows(&root, from)?;
    let mut log = Log::default();
    let mut top = Section::new("");
    top.comment(&format!(
        "shardline configuration imported by `shardline import kinesis-agent` from\n{from}\n\nComments say where each setting came from and what had no counterpart; check the file with `shardline validate --config FILE` and read docs/migration.md before switching over."
    ));
    let general = general::read(&root, &mut top, &mut log);
    let (kinesis, blocks) = destinations::sections(&root, &flows, &general);
    let mut sections = vec![top, kinesis];
    let delivery = delivery::section(&root, &flows, &mut log);
    if !delivery.is_empty() {
        sections.push(delivery);
    }
    let mut spool = Section::new("[spool]");
    spool.key_noted(
        "dir",
        out::string(SPOOL_DIR),
        "records not yet delivered and the files' checkpoints",
    );
    sections.push(spool);
    for (i, f) in flows.iter().enumerate() {
        let block = flow::file_block(f, &flows[..i], &mut log);
        sections.push(block.file);
        sections.extend(block.parse);
    }
    // The Firehose streams' own blocks last, once the files that name them
    // were read.
    sections.extend(blocks);
    Ok(Imported {
        toml: out::render(&sections),
        warnings: log.warnings,
    })
}
