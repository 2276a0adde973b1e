//! What an open finds wrong in a stream's directory, and what it reports:
//! segments missing, frames damaged before what was synced, headers damaged,
//! segments with nothing readable. [`Findings`] owns that bookkeeping from the
//! first file read until the report is written; the open
//! ([`Loading`](super::Loading)) calls it as it reads, and only it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::spool::damage::DamageEvent;
use crate::spool::frame::{self, Fact};
use crate::spool::storage::Storage;
use crate::spool::stream::manifest::Manifest;
use crate::spool::stream::{report_damage, seg_name, Recovered, Segment};

use super::segment::Scanned;

/// Damage found in a segment the manifest knows.
struct Suspect {
    seq: u64,
    offset: u64,
    bytes: u64,
    what: &'static str,
}

/// The damage an open of one stream found, and what reporting it changes.
pub(super) struct Findings<'a> {
    name: &'a str,
    dir: &'a Path,
    /// The counts for the log and the counters.
    pub(super) found: Recovered,
    /// Damage before a segment's synced end; the records lost are counted once
    /// the acks are applied.
    suspects: Vec<Suspect>,
    /// Damage for the report.
    events: Vec<DamageEvent>,
    /// Segments the manifest lists and the directory lacks: forgotten once reported.
    missing: Vec<u64>,
    /// Damaged segments whose facts are recorded anew once reported (synced as
    /// they are now), so the next start does not report them again.
    restated: Vec<u64>,
}

impl<'a> Findings<'a> {
    /// Nothing found yet in the stream `name`'s directory `dir`.
    pub(super) fn new(name: &'a str, dir: &'a Path) -> Findings<'a> {
        Findings {
            name,
            dir,
            found: Recovered::default(),
            suspects: Vec::new(),
            events: Vec::new(),
            missing: Vec::new(),
            restated: Vec::new(),
        }
    }

    /// Records one damage event for the report.
    fn event(&mut self, path: &Path, records: Option<u64>, what: &'static str) {
        self.events.push(DamageEvent {
            stream: self.name.to_owned(),
            path: path.to_owned(),
            records,
            what,
        });
    }

    /// Reports the catalogued segments that are gone (but for what a crash
    /// during a removal, or before the first sync, leaves).
    pub(super) fn missing_catalogued(
        &mut self,
        catalog: &BTreeSet<u64>,
        segs: &BTreeSet<u64>,
        acks: &BTreeSet<u64>,
    ) {
        for seq in catalog.difference(segs) {
            if acks.contains(seq) || *seq >= segs.last().copied().unwrap_or(0) {
                // An ack file without its segment is what a crash during a
                // removal leaves; the newest segment may have been lost with
                // nothing durable in it.
                continue;
            }
            self.found.damaged_frames += 1;
            let path = self.dir.join(seg_name(*seq));
            tracing::error!(stream = self.name, segment = %path.display(),
                "A spool segment file is missing: the records it held are lost");
            self.event(&path, None, "a segment file is missing");
        }
    }

    /// Reports the segments the manifest lists that are gone, whatever their
    /// number and whether or not their ack file stayed: a removal is recorded
    /// before its unlink, so each of these was lost.
    pub(super) fn missing_known(&mut self, facts: &BTreeMap<u64, Fact>, segs: &BTreeSet<u64>) {
        for (&seq, fact) in facts.iter().filter(|(q, _)| !segs.contains(q)) {
            self.missing.push(seq);
            let path = self.dir.join(seg_name(seq));
            if fact.unsent == 0 {
                tracing::warn!(stream = self.name, segment = %path.display(),
                    "A spool segment file is missing; it held no undelivered records");
                continue;
            }
            self.found.damaged_frames += 1;
            self.found.lost_records += fact.unsent;
            tracing::error!(stream = self.name, segment = %path.display(), records = fact.unsent,
                "A spool segment file is missing: the records it held are lost");
            self.event(&path, Some(fact.unsent), "a segment file is missing");
        }
    }

    /// Reports the checkpoint table unreadable (it is moved aside).
    pub(super) fn table_damaged(&mut self, path: &Path) {
        self.found.damaged_frames += 1;
        tracing::error!(stream = self.name, path = %path.display(),
            "The spool's checkpoint table is damaged; files whose last batch was delivered start again from their newest readable checkpoint");
    }

    /// Reports a segment with no readable frame (it is moved aside): what it
    /// held is lost, as far as the manifest knows; a segment the manifest
    /// lists is then forgotten with the missing ones.
    pub(super) fn unreadable(&mut self, seq: u64, path: &Path, fact: Option<Fact>) {
        let records = fact.map(|f| f.unsent);
        self.found.damaged_frames += 1;
        self.found.lost_records += records.unwrap_or(0);
        tracing::error!(stream = self.name, segment = %path.display(), records,
            "A spool segment has no readable frame; it is moved aside and its records are lost");
        self.event(path, records, "a segment had no readable frame");
        if fact.is_some() {
            self.missing.push(seq);
        }
    }

    /// Reports a segment whose header is damaged but whose entries were all
    /// read (the header is rewritten, its facts recorded anew).
    pub(super) fn header_damaged(&mut self, seq: u64, path: &Path) {
        self.found.damaged_frames += 1;
        tracing::warn!(stream = self.name, segment = %path.display(),
            "The header of a spool segment is damaged; its entries were read all the same and the header is rewritten");
        self.event(
            path,
            Some(0),
            "a segment header was damaged (its entries were kept)",
        );
        self.restated.push(seq);
    }

    /// Tells a scanned segment's damage from a crash's torn tail by the
    /// manifest's synced end: damage before it is lost records (counted once
    /// the acks are applied), bytes after it were never reported durable.
    pub(super) fn scanned(
        &mut self,
        seq: u64,
        path: &Path,
        fact: Option<Fact>,
        len: u64,
        scanned: &Scanned,
    ) {
        let synced = fact.map(|f| f.data_len);
        let header_len =
            frame::frame(&frame::header(frame::ROLE_SEGMENT, self.name, seq)).len() as u64;
        for &(from, to) in &scanned.damaged {
            if from == 0 && !scanned.header_ok && to == header_len {
                // The header alone: reported by the caller.
                continue;
            }
            match synced {
                Some(end) if from >= end => {
                    tracing::warn!(stream = self.name, segment = %path.display(), offset = from, bytes = to - from,
                        "Skipped a torn frame written after the spool's last commit (never acknowledged as durable)");
                }
                Some(_) => self.suspects.push(Suspect {
                    seq,
                    offset: from,
                    bytes: to - from,
                    what: "a damaged frame was skipped",
                }),
                None => {
                    self.found.damaged_frames += 1;
                    tracing::error!(stream = self.name, segment = %path.display(), offset = from, bytes = to - from,
                        "A damaged frame in the spool was skipped: the records it held are lost");
                    self.event(path, None, "a damaged frame was skipped");
                }
            }
        }
        self.scanned_end(seq, path, synced, len, scanned.end);
    }

    /// Tells a scanned segment cut short of its synced end (damage) from a
    /// torn end written after the last commit.
    fn scanned_end(&mut self, seq: u64, path: &Path, synced: Option<u64>, len: u64, end: u64) {
        match synced {
            Some(synced) if end < synced => self.suspects.push(Suspect {
                seq,
                offset: end,
                bytes: synced - end,
                what: "a segment ends before what was synced",
            }),
            Some(_) if end < len => {
                tracing::warn!(stream = self.name, segment = %path.display(), offset = end, bytes = len - end,
                    "Cut the torn end of a spool segment, written after the last commit (never acknowledged as durable)");
            }
            None if end < len => {
                tracing::warn!(stream = self.name, segment = %path.display(), offset = end, bytes = len - end,
                    "Cut the torn end of a spool segment open at a crash (no record says how far it was synced)");
            }
            _ => {}
        }
    }

    /// Counts what the damage found before synced ends took: the records the
    /// manifest says the segment's frames held, less those read, at most those
    /// not delivered then.
    pub(super) fn count_losses(
        &mut self,
        facts: Option<&BTreeMap<u64, Fact>>,
        segments: &BTreeMap<u64, Segment>,
    ) {
        let mut by_seg: BTreeMap<u64, Vec<&Suspect>> = BTreeMap::new();
        for s in &self.suspects {
            by_seg.entry(s.seq).or_default().push(s);
        }
        for (seq, list) in by_seg {
            let Some(fact) = facts.and_then(|f| f.get(&seq)) else {
                continue;
            };
            let read = segments.get(&seq).map_or(0, |s| s.records);
            let lost = fact.records.saturating_sub(read).min(fact.unsent);
            let path = self.dir.join(seg_name(seq));
            let first = list[0];
            let bytes: u64 = list.iter().map(|s| s.bytes).sum();
            self.found.damaged_frames += list.len() as u64;
            self.found.lost_records += lost;
            self.restated.push(seq);
            tracing::error!(stream = self.name, segment = %path.display(), offset = first.offset,
                bytes, records = lost, damage = first.what,
                "Part of a spool segment that was synced is damaged or missing: the records it held are lost");
            self.events.push(DamageEvent {
                stream: self.name.to_owned(),
                path,
                records: Some(lost),
                what: first.what,
            });
        }
    }

    /// Writes the damage report, then records in the manifest what it covers:
    /// the missing segments forgotten, the damaged ones restated as they are
    /// now (synced first). The report is durable before the manifest forgets
    /// the missing segments: a crash in between reports them again, never not
    /// at all.
    pub(super) fn report(
        &self,
        storage: &dyn Storage,
        damaged_dir: &Path,
        manifest: &mut Manifest,
        segments: &BTreeMap<u64, Segment>,
    ) {
        if !report_damage(storage, damaged_dir, &self.events) {
            return;
        }
        let mut records: Vec<(u64, Option<Fact>)> =
            self.missing.iter().map(|&q| (q, None)).collect();
        for &seq in &self.restated {
            let Some(seg) = segments.get(&seq) else {
                continue;
            };
            let path = self.dir.join(seg_name(seq));
            let synced = storage.open(&path, false).and_then(|f| f.sync_data());
            if synced.is_ok() {
                records.push((seq, Some(seg.fact())));
            }
        }
        if let Err(e) = manifest.record(storage, &records) {
            tracing::warn!(stream = self.name, error = %e,
                "Updating the spool's manifest failed; the missing segments are reported again at the next start");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::Findings;

    #[test]
    fn a_segment_cut_short_of_its_synced_end_is_damage_and_a_torn_end_past_it_is_not() {
        let mut f = Findings::new("s", Path::new("/d"));
        f.scanned_end(1, Path::new("/d/1.seg"), Some(100), 120, 80);
        assert_eq!(f.suspects.len(), 1);
        assert_eq!((f.suspects[0].offset, f.suspects[0].bytes), (80, 20));
        // Past the synced end, or with no record of it: a crash's torn end.
        f.scanned_end(2, Path::new("/d/2.seg"), Some(100), 120, 110);
        f.scanned_end(3, Path::new("/d/3.seg"), None, 120, 110);
        assert_eq!(f.suspects.len(), 1);
        assert_eq!(f.found.damaged_frames, 0);
        assert!(f.events.is_empty());
    }
}
