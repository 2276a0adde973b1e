//! A stream's manifest: the facts the damage report rests on, kept where the
//! group commit makes them durable.
//!
//! A segment file says what it holds, not what it should hold: a file cut short,
//! a frame damaged before the synced end or a file gone look like a crash's torn
//! tail or a delivered segment unless something durable says otherwise. The
//! manifest says, for every segment a commit synced, how far its frames go and
//! how many undelivered records it held then, and it records a removal before
//! the unlink. The group commit appends and fdatasyncs it *after* the segments
//! it speaks of, so it never claims bytes the disk may not have; it is rewritten
//! (temp → fsync → rename) when it grows. It does not rest on sled, whose flush
//! does not reach the disk.
//!
//! A spool written before the manifest has none: its segments are unknown
//! (damage is found as before) until the first commit records them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::super::frame::{self, Fact};
use super::super::storage::{Storage, StoredFile};
use super::{io_err, SpoolError};

/// The manifest's name in a stream's directory.
pub(crate) const MANIFEST_FILE: &str = "manifest";
/// The manifest is rewritten once it is past this size and four times what a
/// rewrite writes: appends stay small, and the file stays small.
const REWRITE_BYTES: u64 = 64 << 10;

pub(in crate::spool) struct Manifest {
    dir: PathBuf,
    stream: String,
    /// `None` until the file exists (a new stream, a spool from before it).
    file: Option<Arc<dyn StoredFile>>,
    len: u64,
    facts: BTreeMap<u64, Fact>,
}

impl Manifest {
    /// Reads a stream's manifest. The facts are `None` when there is none.
    pub(in crate::spool) fn load(
        storage: &dyn Storage,
        dir: &Path,
        stream: &str,
    ) -> Result<(Manifest, Option<BTreeMap<u64, Fact>>), SpoolError> {
        let path = dir.join(MANIFEST_FILE);
        let mut m = Manifest {
            dir: dir.to_owned(),
            stream: stream.to_owned(),
            file: None,
            len: 0,
            facts: BTreeMap::new(),
        };
        if !storage.exists(&path) {
            return Ok((m, None));
        }
        let file = storage.open(&path, false).map_err(|e| io_err(&path, e))?;
        let mut b = vec![0u8; file.len().map_err(|e| io_err(&path, e))? as usize];
        file.read_at(0, &mut b).map_err(|e| io_err(&path, e))?;
        let w = frame::walk(&b, 0);
        match w.frames.first().and_then(|(_, b)| frame::parse_header(b)) {
            Some((v, ..)) if v != frame::VERSION => {
                return Err(SpoolError::Version { path, version: v })
            }
            Some((_, frame::ROLE_MANIFEST, ..)) => {}
            _ => {
                // Unreadable: what it knew is unknown now, as for a spool from
                // before it. Rewritten by the next commit.
                tracing::warn!(stream, path = %path.display(),
                    "The spool's manifest is damaged; segments damaged before the next commit may go unreported");
                return Ok((m, None));
            }
        }
        if !w.damaged.is_empty() {
            tracing::warn!(stream, path = %path.display(),
                "Part of the spool's manifest is damaged; its other records are used");
        }
        for (_, body) in &w.frames[1..] {
            match frame::parse_manifest_record(body) {
                Some((seq, Some(f))) => {
                    m.facts.insert(seq, f);
                }
                Some((seq, None)) => {
                    m.facts.remove(&seq);
                }
                None => {}
            }
        }
        if w.end < b.len() as u64 {
            // A torn append (a crash during a commit that reported nothing).
            file.set_len(w.end).map_err(|e| io_err(&path, e))?;
        }
        m.len = w.end;
        m.file = Some(file);
        let facts = m.facts.clone();
        Ok((m, Some(facts)))
    }

    /// What the manifest says now.
    pub(in crate::spool) fn facts(&self) -> &BTreeMap<u64, Fact> {
        &self.facts
    }

    /// Records facts (`Some`) and removals (`None`) durably: appended and
    /// fdatasynced, or the whole manifest rewritten when it has grown.
    pub(in crate::spool) fn record(
        &mut self,
        storage: &dyn Storage,
        records: &[(u64, Option<Fact>)],
    ) -> Result<(), SpoolError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut facts = self.facts.clone();
        let mut buf = Vec::new();
        for &(seq, fact) in records {
            match fact {
                Some(f) => facts.insert(seq, f),
                None => facts.remove(&seq),
            };
            frame::push_frame(&mut buf, &frame::manifest_record(seq, fact));
        }
        let whole = (facts.len() as u64 + 1) * 56;
        match &self.file {
            Some(f) if self.len < REWRITE_BYTES || self.len < 4 * whole => {
                let path = self.dir.join(MANIFEST_FILE);
                if let Err(e) = f.write_at(self.len, &buf).and_then(|()| f.sync_data()) {
                    let _ = f.set_len(self.len);
                    return Err(io_err(&path, e));
                }
                self.len += buf.len() as u64;
            }
            _ => self.rewrite(storage, &facts)?,
        }
        self.facts = facts;
        Ok(())
    }

    /// Writes the whole manifest (temp file, fdatasync, rename, directory fsync).
    fn rewrite(
        &mut self,
        storage: &dyn Storage,
        facts: &BTreeMap<u64, Fact>,
    ) -> Result<(), SpoolError> {
        let tmp = self.dir.join(format!("{MANIFEST_FILE}.tmp"));
        let path = self.dir.join(MANIFEST_FILE);
        let _ = storage.remove_file(&tmp);
        let f = storage.open(&tmp, true).map_err(|e| io_err(&tmp, e))?;
        let mut b = frame::frame(&frame::header(frame::ROLE_MANIFEST, &self.stream, 0));
        for (&seq, &fact) in facts {
            frame::push_frame(&mut b, &frame::manifest_record(seq, Some(fact)));
        }
        f.write_at(0, &b).map_err(|e| io_err(&tmp, e))?;
        f.sync_data().map_err(|e| io_err(&tmp, e))?;
        storage.rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
        storage
            .sync_dir(&self.dir)
            .map_err(|e| io_err(&self.dir, e))?;
        self.file = Some(f);
        self.len = b.len() as u64;
        Ok(())
    }
}
