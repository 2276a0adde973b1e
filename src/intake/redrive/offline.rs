//! Where a redrive runs: through the running agent (its inbox) when one holds
//! the spool, else here, with the spool opened by this process (its lock
//! taken, so an agent starting meanwhile waits for nothing: it refuses, and
//! systemd starts it again). Records written here spill (no dispatcher reads
//! them); the next agent delivers them.

use std::collections::HashMap;
use std::path::Path;

use super::{inbox, redrive_file, RedriveError, RedriveReport};
use crate::config::Config;
use crate::spool::{lock_holder, LockState, Spool};

/// Redrives the dead-letter file `file` into the spool of `config`: through
/// the agent that holds it, or directly when none does. Blocking.
pub fn redrive(config: &Config, file: &Path) -> Result<RedriveReport, RedriveError> {
    let dir = config.spool.dir.as_ref().ok_or(RedriveError::MemoryOnly)?;
    let file = std::path::absolute(file).map_err(|source| RedriveError::Read {
        path: file.to_owned(),
        source,
    })?;
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    let own = config.delivery.overrides.iter();
    let mut live = own.filter_map(|(_, o)| o.dead_letter_path.as_deref());
    if same(&file, &config.dead_letter_path) || live.any(|d| same(&file, d)) {
        return Err(RedriveError::LiveFile { path: file });
    }
    match lock_holder(dir) {
        LockState::Held { .. } => inbox::submit(dir, &file),
        LockState::Free => {
            refuse_other_owner(dir)?;
            let report = here(config, &file)?;
            if report.refused.is_empty() {
                inbox::forget(dir, &file);
            }
            Ok(report)
        }
    }
}

/// Refuses to write into a spool another user owns (root for the agent's
/// `shardline` user): the files it would create could not be opened by the
/// agent.
fn refuse_other_owner(dir: &Path) -> Result<(), RedriveError> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(dir) else {
        return Ok(());
    };
    // SAFETY: geteuid cannot fail and touches no memory.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(RedriveError::Agent(format!(
            "the spool {} belongs to uid {}, not to this user (uid {me}): run redrive as its owner (sudo -u shardline shardline redrive …), so that the files it writes stay the agent's",
            dir.display(),
            meta.uid()
        )));
    }
    Ok(())
}

/// The redrive in this process, the spool opened here.
fn here(config: &Config, file: &Path) -> Result<RedriveReport, RedriveError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| RedriveError::Read {
            path: file.to_owned(),
            source,
        })?;
    runtime.block_on(async {
        let spool = Spool::open(&config.spool)?;
        let mut intakes = HashMap::new();
        // Kept open while the intakes write: nothing reads them, the
        // entries wait in the spool for the agent.
        let mut outlets = Vec::new();
        for stream in config.streams() {
            let (intake, outlet) = crate::intake::open(spool.stream(&stream)?);
            intakes.insert(stream, intake);
            outlets.push(outlet);
        }
        let s = &spool;
        let result = redrive_file(&intakes, || s.durable(), file).await;
        drop(outlets);
        spool.close().await?;
        result
    })
}

#[cfg(test)]
mod tests {
    use super::{redrive, RedriveError};

    /// A destination's own dead-letter file is live as `[delivery]`'s is:
    /// refused before anything is read.
    #[test]
    fn a_destinations_live_dead_letter_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join("audit-dead.ndjson");
        std::fs::write(&dead, "").unwrap();
        let text = format!(
            "[kinesis]\nstream = \"logs\"\nregion = \"us-east-1\"\n[spool]\ndir = \"{}\"\n\
             [[destination]]\nstream = \"audit\"\ndead_letter_path = \"{}\"\n\
             [[socket]]\npath = \"/run/a.sock\"\nstream = \"audit\"\n",
            dir.path().join("spool").display(),
            dead.display()
        );
        let config = crate::config::parse(&text, std::path::Path::new("t.toml")).unwrap();
        match redrive(&config, &dead) {
            Err(RedriveError::LiveFile { path }) => assert_eq!(path, dead),
            other => panic!("{other:?}"),
        }
    }
}
