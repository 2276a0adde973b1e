//! The damage report: every loss the spool found, kept in `damaged/report` until
//! an operator deletes the file. The file is the only state; a stream's open
//! and its reads append to it (through `stream/`), the status reads it back.
//!
//! A log line scrolls away and a counter restarts at zero with the process; an
//! operator who looks at `shardline status` a day after a power cut must still
//! learn that records were lost. So each damage the spool finds (a damaged
//! frame, a segment shorter than what was synced, a missing segment) is also
//! appended here, one line per event, and fdatasynced before the spool goes on
//! (before a manifest forgets a missing segment, for one). `status` sums it.
//! Clearing it is deleting the file.
//!
//! A line is tab-separated: `unix ms`, stream, records lost (`?` when not
//! known, as for a spool written before the manifest), the file, what happened.

use std::path::{Path, PathBuf};

use super::storage::{create_dir_durable, Storage};

/// The report's file name in `damaged/`.
pub(crate) const REPORT_FILE: &str = "report";

/// One damage found.
#[derive(Debug, Clone)]
pub(crate) struct DamageEvent {
    pub stream: String,
    /// The file damaged or missing.
    pub path: PathBuf,
    /// Records lost with it, when known.
    pub records: Option<u64>,
    pub what: &'static str,
}

/// What the report holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamageReport {
    /// The report file (delete it to clear the report).
    pub path: PathBuf,
    /// Damage events listed.
    pub events: u64,
    /// Records they lost, as far as known.
    pub lost_records: u64,
}

/// Appends `events` to the report and makes them durable.
pub(crate) fn record(
    storage: &dyn Storage,
    damaged_dir: &Path,
    events: &[DamageEvent],
) -> std::io::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    create_dir_durable(storage, damaged_dir)?;
    let path = damaged_dir.join(REPORT_FILE);
    let created = !storage.exists(&path);
    let f = storage.open(&path, true)?;
    let now = super::now_ms();
    let mut text = String::new();
    for e in events {
        let records = e.records.map_or_else(|| "?".to_owned(), |n| n.to_string());
        // Tabs and newlines cannot come from the spool's own paths and names
        // (stream directories are hex), but a line must stay one line.
        let clean = |s: &str| s.replace(['\t', '\n'], " ");
        text.push_str(&format!(
            "{now}\t{}\t{records}\t{}\t{}\n",
            clean(&e.stream),
            clean(&e.path.display().to_string()),
            e.what
        ));
    }
    f.write_at(f.len()?, text.as_bytes())?;
    f.sync_data()?;
    if created {
        storage.sync_dir(damaged_dir)?;
    }
    Ok(())
}

/// Reads the report; `None` when there is none (nothing found, or cleared).
pub(crate) fn read(storage: &dyn Storage, damaged_dir: &Path) -> Option<DamageReport> {
    let path = damaged_dir.join(REPORT_FILE);
    if !storage.exists(&path) {
        return None;
    }
    let f = storage.open(&path, false).ok()?;
    let mut b = vec![0u8; f.len().ok()? as usize];
    f.read_at(0, &mut b).ok()?;
    Some(summed(path, &String::from_utf8_lossy(&b)))
}

/// The report's lines summed up.
pub(crate) fn summed(path: PathBuf, text: &str) -> DamageReport {
    let mut report = DamageReport {
        path,
        events: 0,
        lost_records: 0,
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        report.events += 1;
        report.lost_records += line
            .split('\t')
            .nth(2)
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::storage::sim::Sim;

    #[test]
    fn events_add_up_and_survive_a_power_cut_once_recorded() {
        let sim = Sim::default();
        let dir = Path::new("/spool/damaged");
        sim.create_dir_all(Path::new("/spool")).unwrap();
        sim.sync_dir(Path::new("/")).unwrap();
        assert_eq!(read(&sim, dir), None);
        let event = |records| DamageEvent {
            stream: "s".into(),
            path: "/spool/streams/73/0000000000000001.seg".into(),
            records,
            what: "a segment file is missing",
        };
        record(&sim, dir, &[event(Some(1000)), event(None)]).unwrap();
        record(&sim, dir, &[event(Some(5))]).unwrap();
        sim.power_cut(&mut fastrand::Rng::with_seed(1));
        let r = read(&sim, dir).unwrap();
        assert_eq!((r.events, r.lost_records), (3, 1005));
        assert_eq!(r.path, dir.join(REPORT_FILE));
    }
}
