//! Line and multiline assembly: lines cut at newlines, oversized lines split or
//! truncated, invalid UTF-8 passed, replaced or rejected, and lines joined into
//! multiline records.

use super::*;

/// A multiline record collecting lines.
pub(super) struct Multiline {
    pub(super) data: BytesMut,
    /// Offset of its first line.
    pub(super) start: u64,
    /// When its last line was added.
    pub(super) last: Instant,
    pub(super) truncated: bool,
}

/// An oversized line being truncated: its head is kept, the rest dropped.
pub(super) struct Truncating {
    pub(super) head: Bytes,
    pub(super) line_start: u64,
    pub(super) len: u64,
}

/// Counts gathered per read and emitted with its batch.
#[derive(Default)]
pub(super) struct Counts {
    pub(super) split: u64,
    pub(super) truncated: u64,
    pub(super) utf8: u64,
    pub(super) rejected_utf8: u64,
    pub(super) key_fallbacks: u64,
}

impl<S: Sink> Tail<S> {
    /// Turns the complete lines in the buffer into records. `last`: the file is
    /// finished, so a final line without a newline counts too.
    pub(super) fn lines(&mut self, t: &mut Tailed, last: bool) -> Result<(), FileError> {
        let max = t.block.max_record_bytes;
        loop {
            let from = t.searched.min(t.buf.len());
            let newline = memchr(&t.buf[from..]).map(|i| from + i);
            self.scanned_bytes += (newline.map_or(t.buf.len(), |i| i + 1) - from) as u64;
            // Every branch below consumes the buffer's front, except the last.
            t.searched = 0;
            if t.truncating.is_some() {
                let drop = newline.map_or(t.buf.len(), |i| i + 1);
                let _ = t.buf.split_to(drop);
                t.start += drop as u64;
                let tr = t.truncating.as_mut().expect("checked above");
                tr.len += newline.unwrap_or(drop) as u64;
                if newline.is_none() && !last {
                    return Ok(());
                }
                // Counted and logged when it crossed the limit.
                let tr = t.truncating.take().expect("checked above");
                self.line(t, tr.head, tr.line_start)?;
                if newline.is_none() {
                    return Ok(());
                }
                continue;
            }
            match newline {
                Some(i) => {
                    let line_start = t.start;
                    let mut line = t.buf.split_to(i + 1);
                    t.start += (i + 1) as u64;
                    line.truncate(i);
                    if line.last() == Some(&b'\r') {
                        line.truncate(i - 1);
                    }
                    self.whole_line(t, line.freeze(), line_start)?;
                }
                None if t.buf.len() > max => self.cut_unended(t, max)?,
                None if last && !t.buf.is_empty() => {
                    let line_start = t.start;
                    let n = t.buf.len();
                    let mut line = t.buf.split_to(n);
                    t.start += n as u64;
                    if line.last() == Some(&b'\r') {
                        line.truncate(n - 1);
                    }
                    self.whole_line(t, line.freeze(), line_start)?;
                    return Ok(());
                }
                None => {
                    t.searched = t.buf.len();
                    return Ok(());
                }
            }
        }
    }

    /// A line longer than the record limit with no end in the buffer yet: split
    /// off a record, or keep its head and drop the rest, per `oversized`.
    fn cut_unended(&mut self, t: &mut Tailed, max: usize) -> Result<(), FileError> {
        match t.block.oversized {
            Oversized::Split => {
                self.emit_multiline(t)?;
                if t.long_line.is_none() {
                    // Counted and logged now, not when (or whether)
                    // its newline comes.
                    let (so_far, at) = (t.buf.len() as u64, t.start);
                    self.oversized_line(t, so_far, at, Oversized::Split, false);
                }
                let cut = char_boundary(&t.buf, max);
                let (line_start, len) = t.long_line.unwrap_or((t.start, 0));
                t.long_line = Some((line_start, len + cut as u64));
                let chunk = t.buf.split_to(cut).freeze();
                t.start += cut as u64;
                self.record(t, chunk)?;
            }
            Oversized::Truncate => {
                let (so_far, at) = (t.buf.len() as u64, t.start);
                self.oversized_line(t, so_far, at, Oversized::Truncate, false);
                let cut = char_boundary(&t.buf, max);
                let head = t.buf.split_to(cut).freeze();
                t.truncating = Some(Truncating {
                    head,
                    line_start: t.start,
                    len: cut as u64,
                });
                t.start += cut as u64;
            }
        }
        Ok(())
    }

    /// A line with its end: the tail of a split line, an oversized line, or a line.
    pub(super) fn whole_line(
        &mut self,
        t: &mut Tailed,
        line: Bytes,
        line_start: u64,
    ) -> Result<(), FileError> {
        let max = t.block.max_record_bytes;
        if t.long_line.take().is_some() {
            // The end of a line split as it came in (counted then).
            let mut rest = line;
            while !rest.is_empty() {
                let cut = char_boundary(&rest, max);
                let chunk = rest.split_to(cut);
                self.record(t, chunk)?;
            }
            return Ok(());
        }
        if line.len() <= max {
            return self.line(t, line, line_start);
        }
        match t.block.oversized {
            Oversized::Split => {
                self.oversized_line(t, line.len() as u64, line_start, Oversized::Split, true);
                self.emit_multiline(t)?;
                let mut rest = line;
                while !rest.is_empty() {
                    let cut = char_boundary(&rest, max);
                    let chunk = rest.split_to(cut);
                    self.record(t, chunk)?;
                }
                Ok(())
            }
            Oversized::Truncate => {
                self.oversized_line(t, line.len() as u64, line_start, Oversized::Truncate, true);
                let cut = char_boundary(&line, max);
                self.line(t, line.slice(..cut), line_start)
            }
        }
    }

    /// Counts (and, first in a file, logs) a line over the record limit: a whole
    /// one of `len` bytes, or one of `len` bytes so far that has no end yet.
    pub(super) fn oversized_line(
        &mut self,
        t: &mut Tailed,
        len: u64,
        at: u64,
        action: Oversized,
        complete: bool,
    ) {
        let max = t.block.max_record_bytes;
        match action {
            Oversized::Split => t.counts.split += 1,
            Oversized::Truncate => t.counts.truncated += 1,
        }
        if t.logged_oversized {
            return;
        }
        t.logged_oversized = true;
        let error = if complete {
            format!(
                "line of {len} bytes at offset {at} exceeds the {max}-byte record limit (max_record_bytes)"
            )
        } else {
            format!(
                "line at offset {at} exceeds the {max}-byte record limit (max_record_bytes): {len} bytes so far and no end yet"
            )
        };
        match action {
            Oversized::Split => tracing::warn!(
                path = %t.path.display(),
                error = %error,
                records = len.div_ceil(max as u64),
                "Split an oversized line into several records (oversized = \"split\"); further ones in this file are only counted"
            ),
            Oversized::Truncate => tracing::error!(
                path = %t.path.display(),
                error = %error,
                dropped_bytes = len.saturating_sub(max as u64),
                "Truncated an oversized line (oversized = \"truncate\"); further ones in this file are only counted"
            ),
        }
    }

    /// A line within the size limit.
    pub(super) fn line(
        &mut self,
        t: &mut Tailed,
        line: Bytes,
        line_start: u64,
    ) -> Result<(), FileError> {
        let Some(line) = self.valid_utf8(t, line, line_start)? else {
            return Ok(());
        };
        let Some(start_re) = &t.block.multiline_start else {
            if line.is_empty() {
                return Ok(());
            }
            return self.record(t, line);
        };
        let starts = start_re.is_match(&line);
        if starts || t.multiline.is_none() {
            self.emit_multiline(t)?;
            if line.is_empty() {
                return Ok(());
            }
            t.multiline = Some(Multiline {
                data: BytesMut::from(&line[..]),
                start: line_start,
                last: Instant::now(),
                truncated: false,
            });
            return Ok(());
        }
        self.continue_multiline(t, line, line_start)
    }

    /// The line as the `invalid_utf8` policy has it; `None`: nothing more to send
    /// (rejected, or split and sent already).
    fn valid_utf8(
        &mut self,
        t: &mut Tailed,
        line: Bytes,
        line_start: u64,
    ) -> Result<Option<Bytes>, FileError> {
        let e = match std::str::from_utf8(&line) {
            Ok(_) => return Ok(Some(line)),
            Err(e) => e,
        };
        let policy = t.block.invalid_utf8;
        if policy == InvalidUtf8::Reject {
            t.counts.rejected_utf8 += 1;
        } else {
            t.counts.utf8 += 1;
        }
        if !t.logged_utf8 {
            t.logged_utf8 = true;
            log_invalid_utf8(t, &line, &e, line_start);
        }
        match policy {
            InvalidUtf8::Pass => Ok(Some(line)),
            InvalidUtf8::Reject => Ok(None),
            InvalidUtf8::Replace => self.replaced(t, &line, line_start),
        }
    }

    /// A line with its invalid bytes replaced by U+FFFD, which may make it
    /// oversized.
    fn replaced(
        &mut self,
        t: &mut Tailed,
        line: &[u8],
        line_start: u64,
    ) -> Result<Option<Bytes>, FileError> {
        let fixed = String::from_utf8_lossy(line).into_owned();
        let max = t.block.max_record_bytes;
        if fixed.len() <= max {
            return Ok(Some(Bytes::from(fixed)));
        }
        // U+FFFD is 3 bytes: the line grew past the limit.
        let cut = char_boundary(fixed.as_bytes(), max);
        let fixed = Bytes::from(fixed);
        let oversized = t.block.oversized;
        self.oversized_line(t, fixed.len() as u64, line_start, oversized, true);
        match oversized {
            Oversized::Truncate => Ok(Some(fixed.slice(..cut))),
            Oversized::Split => {
                self.emit_multiline(t)?;
                let mut rest = fixed;
                while !rest.is_empty() {
                    let cut = char_boundary(&rest, max);
                    let chunk = rest.split_to(cut);
                    self.record(t, chunk)?;
                }
                Ok(None)
            }
        }
    }

    /// Adds a continuation line to the multiline record in progress: the record
    /// is full past `max_record_bytes`, then split or truncated.
    fn continue_multiline(
        &mut self,
        t: &mut Tailed,
        line: Bytes,
        line_start: u64,
    ) -> Result<(), FileError> {
        let max = t.block.max_record_bytes;
        let p = t
            .multiline
            .as_mut()
            .expect("a multiline record is in progress");
        p.last = Instant::now();
        if p.data.len() + 1 + line.len() <= max {
            p.data.extend_from_slice(b"\n");
            p.data.extend_from_slice(&line);
            return Ok(());
        }
        match t.block.oversized {
            Oversized::Split => {
                // The record is full: this line starts the next one.
                let len = (p.data.len() + 1 + line.len()) as u64;
                let start = p.start;
                self.oversized_line(t, len, start, Oversized::Split, true);
                self.emit_multiline(t)?;
                t.multiline = Some(Multiline {
                    data: BytesMut::from(&line[..]),
                    start: line_start,
                    last: Instant::now(),
                    truncated: false,
                });
            }
            Oversized::Truncate => {
                let room = max.saturating_sub(p.data.len() + 1);
                if room > 0 {
                    let cut = char_boundary(&line, room);
                    p.data.extend_from_slice(b"\n");
                    p.data.extend_from_slice(&line[..cut]);
                }
                if !p.truncated {
                    p.truncated = true;
                    let (len, start) = ((p.data.len() + 1 + line.len()) as u64, p.start);
                    self.oversized_line(t, len, start, Oversized::Truncate, true);
                }
            }
        }
        Ok(())
    }

    /// Sends the multiline record in progress, if any.
    pub(super) fn emit_multiline(&mut self, t: &mut Tailed) -> Result<(), FileError> {
        match t.multiline.take() {
            Some(p) => self.record(t, p.data.freeze()),
            None => Ok(()),
        }
    }

    /// The file is finished: its last line without a newline and its multiline
    /// record in progress are records.
    pub(super) fn finish_lines(&mut self, t: &mut Tailed) -> Result<(), FileError> {
        self.lines(t, true)?;
        t.long_line = None;
        self.emit_multiline(t)
    }
}

/// The first invalid line of a file, logged with what its policy does with it.
fn log_invalid_utf8(t: &Tailed, line: &[u8], e: &std::str::Utf8Error, line_start: u64) {
    let bad = line.get(e.valid_up_to()).copied().unwrap_or_default();
    let error = format!(
        "line at offset {line_start} is not valid UTF-8: byte 0x{bad:02x} at position {}",
        e.valid_up_to()
    );
    match t.block.invalid_utf8 {
        InvalidUtf8::Pass => {
            tracing::warn!(path = %t.path.display(), error = %error, "Line is not valid UTF-8; sent as it is (invalid_utf8 = \"pass\"); further ones in this file are only counted")
        }
        InvalidUtf8::Replace => {
            tracing::warn!(path = %t.path.display(), error = %error, "Line is not valid UTF-8; invalid bytes replaced with U+FFFD (invalid_utf8 = \"replace\"); further ones in this file are only counted")
        }
        InvalidUtf8::Reject => {
            tracing::error!(path = %t.path.display(), error = %error, "Line is not valid UTF-8; not sent (invalid_utf8 = \"reject\"); further ones in this file are only counted")
        }
    }
}
