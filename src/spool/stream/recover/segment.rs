//! Reading one segment file at an open: its footer when it was sealed, a scan of
//! its frames when it was not (the segment open at a crash, or one whose end is
//! damaged). Owns no state: each function takes the file and returns what it
//! holds. Called by the open ([`Loading::load_segment`](super::Loading)) only.

use std::collections::BTreeMap;
use std::path::Path;

use crate::spool::frame::{self, CheckpointRecord, Placed, Walk};
use crate::spool::storage::{Storage, StoredFile};
use crate::spool::stream::{io_err, keep_later};
use crate::spool::SpoolError;

/// A segment's entries and checkpoints.
pub(super) type Found = (Vec<Placed>, Vec<CheckpointRecord>);

/// A segment read: its entries and checkpoints, where its frames end, and
/// whether its header was readable.
pub(super) struct Read {
    pub(super) found: Found,
    pub(super) data_len: u64,
    pub(super) header_ok: bool,
}

/// What a scan found.
pub(super) struct Scanned {
    pub(super) found: Found,
    /// Where the good frames end.
    pub(super) end: u64,
    /// Byte ranges with no good frame, followed by a good frame.
    pub(super) damaged: Vec<(u64, u64)>,
    pub(super) header_ok: bool,
}

impl From<Scanned> for Read {
    fn from(scanned: Scanned) -> Read {
        Read {
            found: scanned.found,
            data_len: scanned.end,
            header_ok: scanned.header_ok,
        }
    }
}

/// The whole of a (small) file: an ack file, the checkpoint table.
pub(super) fn read_whole(storage: &dyn Storage, path: &Path) -> std::io::Result<Vec<u8>> {
    let f = storage.open(path, false)?;
    let mut b = vec![0u8; f.len()? as usize];
    f.read_at(0, &mut b)?;
    Ok(b)
}

/// Reads a sealed segment's footer: `None` when it has none (or a bad one),
/// `Some(Err(version))` for a format this binary does not know. A damaged
/// header does not hide a good footer: the footer's own CRC vouches for it.
pub(super) fn read_sealed(file: &dyn StoredFile, len: u64) -> Option<Result<Read, u8>> {
    let mut head = vec![0u8; len.min(4096) as usize];
    file.read_at(0, &mut head).ok()?;
    let first = frame::walk(&head, 0)
        .frames
        .first()
        .filter(|(at, _)| *at == 0)
        .and_then(|(_, b)| frame::parse_header(b));
    let header_ok = match first {
        Some((v, ..)) if v != frame::VERSION => return Some(Err(v)),
        Some((_, role, ..)) if role != frame::ROLE_SEGMENT => return None,
        Some(_) => true,
        None => false,
    };
    if len < frame::TRAILER as u64 {
        return None;
    }
    let mut t = [0u8; frame::TRAILER];
    file.read_at(len - frame::TRAILER as u64, &mut t).ok()?;
    let at = frame::parse_trailer(&t)?;
    let flen = (len - frame::TRAILER as u64).checked_sub(at)?;
    let mut f = vec![0u8; flen as usize];
    file.read_at(at, &mut f).ok()?;
    let body = frame::check(&f)?;
    frame::parse_footer(body).map(|found| {
        Ok(Read {
            found,
            data_len: at,
            header_ok,
        })
    })
}

/// Scans a segment without a footer (the one open at a crash, or one whose end
/// is damaged): every good frame is taken, the end after the last one is cut
/// and a footer written. `None` when it holds no readable frame at all.
pub(super) fn scan(
    path: &Path,
    file: &dyn StoredFile,
    len: u64,
) -> Result<Option<Scanned>, SpoolError> {
    let mut b = vec![0u8; len as usize];
    file.read_at(0, &mut b).map_err(|e| io_err(path, e))?;
    let w = frame::walk(&b, 0);
    let header_ok = header_ok(path, &w)?;
    let body_frames: Vec<(u64, &[u8])> = w
        .frames
        .iter()
        .copied()
        .filter(|(_, body)| {
            matches!(
                body.first(),
                Some(&frame::ENTRY) | Some(&frame::CHECKPOINT) | Some(&frame::FOOTER)
            )
        })
        .collect();
    if !header_ok
        && (body_frames.is_empty()
            || w.frames
                .first()
                .is_some_and(|(_, b)| b.first() == Some(&frame::HEADER)))
    {
        // Not a segment at all (another file's header), or nothing in it.
        return Ok(None);
    }
    let (placed, checkpoints) = collect_frames(&body_frames);
    if w.end < len {
        file.set_len(w.end).map_err(|e| io_err(path, e))?;
    }
    seal_scanned(file, w.end, &placed, &checkpoints);
    let end = w.end;
    Ok(Some(Scanned {
        found: (placed, checkpoints),
        end,
        damaged: damaged_ranges(w, header_ok),
        header_ok,
    }))
}

/// Whether a scanned segment starts with its own readable header; a header of
/// a format this binary does not know is refused.
fn header_ok(path: &Path, w: &Walk<'_>) -> Result<bool, SpoolError> {
    Ok(match w.frames.first() {
        Some(&(0, body)) => match frame::parse_header(body) {
            Some((v, ..)) if v != frame::VERSION => {
                return Err(SpoolError::Version {
                    path: path.to_owned(),
                    version: v,
                })
            }
            Some((_, role, ..)) => role == frame::ROLE_SEGMENT,
            None => false,
        },
        _ => false,
    })
}

/// The entries and the latest record of each checkpoint in a scanned
/// segment's good frames.
pub(in crate::spool) fn collect_frames(body_frames: &[(u64, &[u8])]) -> Found {
    let (mut placed, mut checkpoints) = (Vec::new(), BTreeMap::new());
    for &(offset, body) in body_frames {
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
    (placed, checkpoints.into_values().collect())
}

/// Seals a scanned segment at `end`, so the next open reads its footer (best
/// effort: on a full disk it stays as it is and is scanned again).
fn seal_scanned(
    file: &dyn StoredFile,
    end: u64,
    placed: &[Placed],
    checkpoints: &[CheckpointRecord],
) {
    let body = frame::footer(placed, checkpoints);
    let mut tail = frame::frame(&body);
    tail.extend_from_slice(&frame::trailer(end));
    if file.write_at(end, &tail).is_err() {
        let _ = file.set_len(end);
    }
}

/// The byte ranges of a scanned segment with no good frame: a damaged first
/// frame counts from 0 to the first good one.
fn damaged_ranges(w: Walk<'_>, header_ok: bool) -> Vec<(u64, u64)> {
    if header_ok {
        return w.damaged;
    }
    let first = w.frames.first().map_or(w.end, |(at, _)| *at);
    let mut d = w.damaged;
    if first > 0 && d.first().is_none_or(|(from, _)| *from != 0) {
        d.insert(0, (0, first));
    }
    d
}

#[cfg(test)]
mod tests {
    use super::damaged_ranges;
    use crate::spool::frame::Walk;

    #[test]
    fn a_damaged_header_counts_as_damage_from_the_first_byte() {
        let body: &[u8] = b"x";
        let w = Walk {
            frames: vec![(40, body)],
            damaged: Vec::new(),
            end: 60,
        };
        assert_eq!(damaged_ranges(w, false), vec![(0, 40)]);
        let w = Walk {
            frames: vec![(0, body), (40, body)],
            damaged: vec![(20, 40)],
            end: 60,
        };
        assert_eq!(damaged_ranges(w, true), vec![(20, 40)]);
    }
}
