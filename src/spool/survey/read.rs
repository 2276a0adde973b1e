//! One stream's directory read without the spool open: where its live entries
//! are, which of their records are still undelivered, and the checkpoints it
//! holds. What `inspect` counts and `export` prints.
//!
//! It reads as the open does (`stream/recover/`: a sealed segment's footer, a
//! scan of one without, then the ack files, then the checkpoint table), but
//! opens every file read-only and changes nothing: no torn tail is cut, no
//! footer written, nothing moved aside. A file the running agent removes while
//! it reads (a delivered segment) is taken as gone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{list, read_all, read_range, Look, SurveyError};
use crate::spool::frame::{self, CheckpointRecord, Placed};
use crate::spool::stream::{ack_name, keep_later, parse_seq, seg_name, CHECKPOINT_FILE};

/// A live entry: where it is, and the records of it already delivered.
#[derive(Debug, Clone)]
pub(super) struct LiveEntry {
    pub(super) seg: u64,
    pub(super) placed: Placed,
    /// Bit i = record i was accepted (a partly delivered entry).
    pub(super) done: Vec<u64>,
}

impl LiveEntry {
    /// Records of it not delivered yet.
    pub(super) fn unsent(&self) -> u64 {
        let done: u64 = self.done.iter().map(|w| u64::from(w.count_ones())).sum();
        u64::from(self.placed.count).saturating_sub(done)
    }

    /// Whether record `i` of it was delivered already.
    pub(super) fn is_done(&self, i: usize) -> bool {
        self.done
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

/// What a stream's directory holds, as far as it reads.
#[derive(Debug, Default)]
pub(super) struct StreamView {
    pub(super) dir: PathBuf,
    /// Segment number → bytes of its file.
    pub(super) segments: BTreeMap<u64, u64>,
    /// Live entries by id.
    pub(super) entries: BTreeMap<u64, LiveEntry>,
    /// Every checkpoint's latest record (a removal has no value).
    pub(super) checkpoints: BTreeMap<Vec<u8>, CheckpointRecord>,
}

impl StreamView {
    /// Reads the stream directory `dir`.
    pub(super) fn read(look: &dyn Look, dir: &Path) -> Result<StreamView, SurveyError> {
        let mut view = StreamView {
            dir: dir.to_owned(),
            ..StreamView::default()
        };
        let names = list(look, dir)?;
        view.load_table(look);
        for seq in names.iter().filter_map(|n| parse_seq(n, ".seg")) {
            view.load_segment(look, seq)?;
        }
        for seq in names.iter().filter_map(|n| parse_seq(n, ".ack")) {
            view.apply_acks(look, seq)?;
        }
        Ok(view)
    }

    fn load_table(&mut self, look: &dyn Look) {
        let Ok(Some(b)) = read_all(look, &self.dir.join(CHECKPOINT_FILE)) else {
            return;
        };
        let w = frame::walk(&b, 0);
        if let Some(table) = w.frames.get(1).and_then(|(_, b)| frame::parse_table(b)) {
            for c in table {
                keep_later(&mut self.checkpoints, c);
            }
        }
    }

    fn load_segment(&mut self, look: &dyn Look, seq: u64) -> Result<(), SurveyError> {
        let path = self.dir.join(seg_name(seq));
        let Some((len, placed, checkpoints)) = placement(look, &path)? else {
            return Ok(());
        };
        self.segments.insert(seq, len);
        for c in checkpoints {
            keep_later(&mut self.checkpoints, c);
        }
        for p in placed {
            // A copy made forward is the one kept, as at an open.
            self.entries.insert(
                p.id,
                LiveEntry {
                    seg: seq,
                    placed: p,
                    done: Vec::new(),
                },
            );
        }
        Ok(())
    }

    fn apply_acks(&mut self, look: &dyn Look, seq: u64) -> Result<(), SurveyError> {
        if !self.segments.contains_key(&seq) {
            return Ok(());
        }
        let Some(b) = read_all(look, &self.dir.join(ack_name(seq)))? else {
            return Ok(());
        };
        for (_, body) in frame::walk(&b, 0).frames.iter().skip(1) {
            match frame::parse_ack(body) {
                Some(frame::Ack::Done(ids)) => {
                    for id in ids {
                        self.entries.remove(&id);
                    }
                }
                Some(frame::Ack::Progress(id, bits)) => {
                    if let Some(e) = self.entries.get_mut(&id) {
                        if e.done.len() < bits.len() {
                            e.done.resize(bits.len(), 0);
                        }
                        for (a, b) in e.done.iter_mut().zip(bits) {
                            *a |= b;
                        }
                    }
                }
                None => {}
            }
        }
        Ok(())
    }
}

/// A segment's length, entries and checkpoints: from its footer when it is
/// sealed, from a scan of its good frames when it is not. `None`: gone.
type Placement = (u64, Vec<Placed>, Vec<CheckpointRecord>);

fn placement(look: &dyn Look, path: &Path) -> Result<Option<Placement>, SurveyError> {
    if let Some(found) = sealed(look, path)? {
        return Ok(Some(found));
    }
    let Some(b) = read_all(look, path)? else {
        return Ok(None);
    };
    let mut placed = Vec::new();
    let mut checkpoints = BTreeMap::new();
    for (offset, body) in frame::walk(&b, 0).frames {
        match body.first() {
            Some(&frame::ENTRY) => {
                if let Some((head, _)) = frame::entry_head(body) {
                    placed.push(Placed {
                        id: head.id,
                        offset,
                        len: (frame::FRAME_HEADER + body.len()) as u32,
                        count: head.count,
                        at_ms: head.at_ms,
                    });
                    if let Some(c) = head.checkpoint {
                        keep_later(&mut checkpoints, c);
                    }
                }
            }
            Some(&frame::CHECKPOINT) => {
                if let Some(c) = frame::parse_checkpoint(body) {
                    keep_later(&mut checkpoints, c);
                }
            }
            _ => {}
        }
    }
    Ok(Some((
        b.len() as u64,
        placed,
        checkpoints.into_values().collect(),
    )))
}

/// A sealed segment's footer, read without the rest of the file.
fn sealed(look: &dyn Look, path: &Path) -> Result<Option<Placement>, SurveyError> {
    let Some(len) = look.len(path).ok() else {
        return Ok(None);
    };
    if len < frame::TRAILER as u64 {
        return Ok(None);
    }
    let Some(t) = read_range(look, path, len - frame::TRAILER as u64, frame::TRAILER)? else {
        return Ok(None);
    };
    let Some(at) = frame::parse_trailer(&t) else {
        return Ok(None);
    };
    let Some(flen) = (len - frame::TRAILER as u64).checked_sub(at) else {
        return Ok(None);
    };
    let Some(f) = read_range(look, path, at, flen as usize)? else {
        return Ok(None);
    };
    Ok(frame::check(&f)
        .and_then(frame::parse_footer)
        .map(|(placed, checkpoints)| (len, placed, checkpoints)))
}

/// The sealed footer's start, when the segment has a good one.
pub(super) fn footer_offset(b: &[u8]) -> Option<u64> {
    let t = b.get(b.len().checked_sub(frame::TRAILER)?..)?;
    let at = frame::parse_trailer(t)?;
    let f = b.get(at as usize..b.len() - frame::TRAILER)?;
    frame::check(f).and_then(frame::parse_footer).map(|_| at)
}
