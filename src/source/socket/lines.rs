//! The `lines` framing: newline-delimited records, split out of a connection's read
//! buffer without copying, over-long lines refused.

use bytes::{Buf, Bytes, BytesMut};

/// Splits a read buffer into lines, refusing those over the limit.
///
/// The newline search resumes where the previous one stopped: a line trickled in
/// small writes costs work linear in its length, not quadratic.
pub(super) struct LineSplitter {
    max: usize,
    /// Inside an over-long line: drop bytes until its newline.
    discarding: bool,
    pub(super) rejected: u64,
    /// Length of the last refused line (so far, if it was refused before its end).
    pub(super) last_rejected_len: usize,
    /// Bytes at the front of the buffer already searched for a newline.
    searched: usize,
    /// Bytes searched for a newline over the splitter's life (the cost the
    /// resumed search keeps linear).
    pub(super) scanned_bytes: u64,
}

impl LineSplitter {
    pub(super) fn new(max: usize) -> Self {
        LineSplitter {
            max,
            discarding: false,
            rejected: 0,
            last_rejected_len: 0,
            searched: 0,
            scanned_bytes: 0,
        }
    }

    /// The first newline in `buf`, searching only bytes not searched before.
    fn find_newline(&mut self, buf: &[u8]) -> Option<usize> {
        let from = self.searched.min(buf.len());
        let found = memchr::memchr(b'\n', &buf[from..]).map(|i| from + i);
        self.scanned_bytes += (found.map_or(buf.len(), |i| i + 1) - from) as u64;
        // Up to the newline, or all of it: the next search starts there.
        self.searched = found.unwrap_or(buf.len());
        found
    }

    /// The next complete, non-empty line (without `\n` or `\r\n`); at EOF a final
    /// line without a newline counts too.
    pub(super) fn next_line(&mut self, buf: &mut BytesMut, eof: bool) -> Option<Bytes> {
        loop {
            let newline = self.find_newline(buf);
            if self.discarding {
                match newline {
                    // Refused when it crossed the limit; the rest goes.
                    Some(i) => {
                        buf.advance(i + 1);
                        self.searched = 0;
                        self.discarding = false;
                        continue;
                    }
                    None => {
                        buf.clear();
                        self.searched = 0;
                        if eof {
                            self.discarding = false;
                        }
                        return None;
                    }
                }
            }
            let end = match newline {
                Some(i) => i,
                None if eof && !buf.is_empty() => buf.len(),
                None => {
                    if buf.len() > self.max {
                        // Already too long and still growing: refused now (not
                        // when, or whether, its newline comes).
                        self.discarding = true;
                        self.reject(buf.len());
                        continue;
                    }
                    return None;
                }
            };
            let mut line = buf.split_to(end);
            self.searched = 0;
            if !buf.is_empty() {
                buf.advance(1); // the newline
            }
            if line.last() == Some(&b'\r') {
                line.truncate(line.len() - 1);
            }
            if line.len() > self.max {
                self.reject(line.len());
                continue;
            }
            if line.is_empty() {
                continue;
            }
            return Some(line.freeze());
        }
    }

    fn reject(&mut self, len: usize) {
        self.rejected += 1;
        self.last_rejected_len = len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], max: usize) -> (Vec<String>, u64) {
        let mut s = LineSplitter::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            buf.extend_from_slice(c);
            let eof = i == chunks.len() - 1;
            while let Some(l) = s.next_line(&mut buf, eof) {
                out.push(String::from_utf8(l.to_vec()).unwrap());
            }
        }
        (out, s.rejected)
    }

    #[test]
    fn lines_across_reads_and_crlf() {
        let (lines, rejected) = split(&[b"ab", b"c\r\nde\n\n", b"f"], 10);
        assert_eq!(lines, vec!["abc", "de", "f"]);
        assert_eq!(rejected, 0);
    }

    #[test]
    fn long_lines_are_refused_and_the_rest_flows() {
        let (lines, rejected) = split(&[b"ok\n0123456789", b"0123\nafter\n", b"x"], 10);
        assert_eq!(lines, vec!["ok", "after", "x"]);
        assert_eq!(rejected, 1);
        let (lines, rejected) = split(&[b"01234567890\nz\n"], 10);
        assert_eq!(lines, vec!["z"]);
        assert_eq!(rejected, 1);
        // Refused as soon as it crossed the limit, before its newline.
        let mut s = LineSplitter::new(10);
        let mut buf = BytesMut::from(&b"0123456789012"[..]);
        assert_eq!(s.next_line(&mut buf, false), None);
        assert_eq!((s.rejected, s.last_rejected_len), (1, 13));
        let (lines, rejected) = split(&[b"0123456789"], 10);
        assert_eq!(lines, vec!["0123456789"]);
        assert_eq!(rejected, 0);
    }

    /// Feeds `line` and a newline in `piece`-byte reads; returns the lines and the
    /// bytes searched.
    fn trickle(line: &[u8], piece: usize, max: usize) -> (Vec<usize>, u64, u64) {
        let mut s = LineSplitter::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut input = line.to_vec();
        input.extend_from_slice(b"\nafter\n");
        for chunk in input.chunks(piece) {
            buf.extend_from_slice(chunk);
            while let Some(l) = s.next_line(&mut buf, false) {
                out.push(l.len());
            }
        }
        (out, s.rejected, s.scanned_bytes)
    }

    /// Regression (issue 14, row 6): a line trickled in 64-byte writes was searched
    /// from its start on every read, ~7 CPU-s for 4 MiB.
    #[test]
    fn a_trickled_line_is_searched_once() {
        // Over the limit: refused, the rest flows.
        let big = vec![b'x'; 4 << 20];
        let (lines, rejected, scanned) = trickle(&big, 64, (1 << 20) - 16);
        assert_eq!(lines, vec![5]);
        assert_eq!(rejected, 1);
        let input = (big.len() + 7) as u64;
        assert!(scanned <= input, "searched {scanned} bytes for {input}");
        // Within the limit: delivered whole, each byte searched once.
        let line = vec![b'y'; 1 << 20];
        let (lines, rejected, scanned) = trickle(&line, 64, (1 << 20) + 1);
        assert_eq!(lines, vec![1 << 20, 5]);
        assert_eq!(rejected, 0);
        let input = (line.len() + 7) as u64;
        assert!(scanned <= input, "searched {scanned} bytes for {input}");
    }
}
