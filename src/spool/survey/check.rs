//! `shardline spool check`: every frame of every file of a stream's directory
//! read and its CRC checked, without the spool open and while an agent may be
//! appending to it.
//!
//! Damage is told from a torn tail the way the open tells them
//! (`stream/recover/findings.rs`): the stream's manifest says how far each
//! segment was synced, so bytes missing or bad before that point are damage,
//! and bytes after the last good frame past it are a write in progress (or a
//! crash's torn tail, which the next open cuts): reported, not damage. The
//! manifest is read first, so a segment can only have grown since; a segment
//! it lists that is gone is looked for again, and the manifest read again,
//! before it is called missing (the agent records a removal before the unlink).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::read::footer_offset;
use super::{list, read_all, Finding, FindingKind, Look, SurveyError};
use crate::spool::frame::{self, Fact};
use crate::spool::stream::{ack_name, parse_seq, seg_name, CHECKPOINT_FILE, MANIFEST_FILE};

/// Checks one stream's directory; `stream` names it in the findings.
pub(super) fn check_stream(
    look: &dyn Look,
    stream: &str,
    dir: &Path,
    out: &mut Vec<Finding>,
) -> Result<(), SurveyError> {
    let mut found = Found { look, stream, out };
    let facts = found.manifest(dir)?;
    let names = list(look, dir)?;
    let segs: BTreeSet<u64> = names.iter().filter_map(|n| parse_seq(n, ".seg")).collect();
    for &seq in &segs {
        let fact = facts.as_ref().and_then(|f| f.get(&seq)).copied();
        found.segment(&dir.join(seg_name(seq)), fact)?;
    }
    for seq in names.iter().filter_map(|n| parse_seq(n, ".ack")) {
        found.acks(&dir.join(ack_name(seq)))?;
    }
    found.table(&dir.join(CHECKPOINT_FILE))?;
    if let Some(facts) = &facts {
        found.missing(dir, facts, &segs)?;
    }
    Ok(())
}

/// The findings of one stream, as they are made.
struct Found<'a> {
    look: &'a dyn Look,
    stream: &'a str,
    out: &'a mut Vec<Finding>,
}

impl Found<'_> {
    fn add(&mut self, path: &Path, offset: Option<u64>, bytes: Option<u64>, kind: FindingKind) {
        self.out.push(Finding {
            stream: self.stream.to_owned(),
            path: path.to_owned(),
            offset,
            bytes,
            kind,
        });
    }

    /// The manifest's facts (`None`: there is none, or it is unreadable).
    fn manifest(&mut self, dir: &Path) -> Result<Option<BTreeMap<u64, Fact>>, SurveyError> {
        let path = dir.join(MANIFEST_FILE);
        let Some(b) = read_all(self.look, &path)? else {
            return Ok(None);
        };
        let w = frame::walk(&b, 0);
        match w.frames.first().and_then(|(_, b)| frame::parse_header(b)) {
            Some((v, ..)) if v != frame::VERSION => {
                self.add(&path, Some(0), None, FindingKind::UnknownVersion(v));
                return Ok(None);
            }
            Some((_, frame::ROLE_MANIFEST, ..)) => {}
            _ => {
                self.add(&path, Some(0), None, FindingKind::BadHeader);
                return Ok(None);
            }
        }
        for &(from, to) in &w.damaged {
            self.add(
                &path,
                Some(from),
                Some(to - from),
                FindingKind::DamagedFrame,
            );
        }
        self.tail(&path, w.end, b.len() as u64);
        Ok(Some(facts_of(&w.frames[1..])))
    }

    fn segment(&mut self, path: &Path, fact: Option<Fact>) -> Result<(), SurveyError> {
        let Some(b) = read_all(self.look, path)? else {
            // Removed while checking: delivered.
            return Ok(());
        };
        let len = b.len() as u64;
        let sealed_at = footer_offset(&b);
        let data = &b[..sealed_at.unwrap_or(len) as usize];
        let w = frame::walk(data, 0);
        if w.frames.is_empty() && fact.is_none() {
            // Being created (its header not written yet), never synced.
            self.tail(path, 0, len);
            return Ok(());
        }
        let header = w
            .frames
            .first()
            .filter(|(at, _)| *at == 0)
            .and_then(|(_, b)| frame::parse_header(b));
        match header {
            Some((v, ..)) if v != frame::VERSION => {
                self.add(path, Some(0), None, FindingKind::UnknownVersion(v));
                return Ok(());
            }
            Some((_, frame::ROLE_SEGMENT, ..)) => {}
            _ => {
                let first = w.frames.first().map_or(w.end.max(len), |(at, _)| *at);
                self.add(path, Some(0), Some(first), FindingKind::BadHeader);
            }
        }
        let synced = fact.map(|f| f.data_len);
        for &(from, to) in w.damaged.iter().filter(|(from, _)| *from > 0) {
            match synced {
                // Written after the last commit: never reported durable.
                Some(end) if from >= end => {
                    self.add(path, Some(from), Some(to - from), FindingKind::TornTail)
                }
                _ => self.add(path, Some(from), Some(to - from), FindingKind::DamagedFrame),
            }
        }
        if sealed_at.is_none() {
            match synced {
                Some(end) if w.end < end => {
                    self.add(path, Some(w.end), Some(end - w.end), FindingKind::CutShort);
                }
                _ => self.tail(path, w.end, len),
            }
        }
        Ok(())
    }

    /// Bytes after the last good frame of a file written by appends.
    fn tail(&mut self, path: &Path, end: u64, len: u64) {
        if end < len {
            self.add(path, Some(end), Some(len - end), FindingKind::TornTail);
        }
    }

    fn acks(&mut self, path: &Path) -> Result<(), SurveyError> {
        let Some(b) = read_all(self.look, path)? else {
            return Ok(());
        };
        let w = frame::walk(&b, 0);
        if w.frames.is_empty() {
            // Created, its header not written yet (or torn): nothing acked.
            self.tail(path, 0, b.len() as u64);
            return Ok(());
        }
        match w
            .frames
            .first()
            .filter(|(at, _)| *at == 0)
            .and_then(|(_, b)| frame::parse_header(b))
        {
            Some((v, ..)) if v != frame::VERSION => {
                self.add(path, Some(0), None, FindingKind::UnknownVersion(v));
                return Ok(());
            }
            Some((_, frame::ROLE_ACKS, ..)) => {}
            _ => self.add(path, Some(0), None, FindingKind::AckDamaged),
        }
        for &(from, to) in w.damaged.iter().filter(|(from, _)| *from > 0) {
            self.add(path, Some(from), Some(to - from), FindingKind::AckDamaged);
        }
        self.tail(path, w.end, b.len() as u64);
        Ok(())
    }

    fn table(&mut self, path: &Path) -> Result<(), SurveyError> {
        let Some(b) = read_all(self.look, path)? else {
            return Ok(());
        };
        let w = frame::walk(&b, 0);
        let header = w.frames.first().and_then(|(_, b)| frame::parse_header(b));
        let table = w.frames.get(1).and_then(|(_, b)| frame::parse_table(b));
        match (header, table) {
            (Some((v, ..)), _) if v != frame::VERSION => {
                self.add(path, Some(0), None, FindingKind::UnknownVersion(v));
            }
            (Some(_), Some(_)) if w.end == b.len() as u64 => {}
            _ => self.add(path, None, None, FindingKind::TableDamaged),
        }
        Ok(())
    }

    /// Segments the manifest lists with undelivered records that are not
    /// there, after a second look.
    fn missing(
        &mut self,
        dir: &Path,
        facts: &BTreeMap<u64, Fact>,
        segs: &BTreeSet<u64>,
    ) -> Result<(), SurveyError> {
        let gone: Vec<u64> = facts
            .iter()
            .filter(|(q, f)| !segs.contains(q) && f.unsent > 0)
            .map(|(q, _)| *q)
            .filter(|q| self.look.len(&dir.join(seg_name(*q))).is_err())
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        // Read again after the files were found gone: a removal is recorded
        // before its unlink, so a segment the agent removed is no longer there.
        let now = read_all(self.look, &dir.join(MANIFEST_FILE))?
            .map(|b| facts_of(frame::walk(&b, 0).frames.get(1..).unwrap_or(&[])))
            .unwrap_or_default();
        for seq in gone {
            if let Some(f) = now.get(&seq).filter(|f| f.unsent > 0) {
                let records = f.unsent;
                self.add(
                    &dir.join(seg_name(seq)),
                    None,
                    None,
                    FindingKind::Missing { records },
                );
            }
        }
        Ok(())
    }
}

/// The facts the manifest's records (after its header) leave.
fn facts_of(frames: &[(u64, &[u8])]) -> BTreeMap<u64, Fact> {
    let mut facts = BTreeMap::new();
    for (_, body) in frames {
        match frame::parse_manifest_record(body) {
            Some((seq, Some(f))) => {
                facts.insert(seq, f);
            }
            Some((seq, None)) => {
                facts.remove(&seq);
            }
            None => {}
        }
    }
    facts
}
