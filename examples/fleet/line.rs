//! The lines of the load and the id each carries. Owns no state: the writer
//! (`writer`) formats each line with [`write_line`] into a buffer it reuses; the
//! tap (`tap`, through `layer`) and the audit (`audit`) read the id back from a
//! user record's data with [`parse_line`].
//!
//! A line is `a007 0000000042 1765090000000000 xxxx…`: the agent's number, the
//! line's sequence number in that agent's file and the time it was written
//! (microseconds since the epoch, this host's clock), then filler up to the
//! line's length. Fixed widths make reading the id a slice, not a parse of the
//! whole line.

use std::io::Write as _;

/// Bytes of the id at the start of a line, its trailing space included.
pub(crate) const ID_BYTES: usize = 1 + 3 + 1 + 10 + 1 + 16 + 1;
/// Most agents a line can name (three digits).
pub(crate) const MAX_AGENTS: usize = 1000;

/// Who wrote a line, which one it is and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LineId {
    pub(crate) agent: usize,
    pub(crate) seq: u64,
    /// Microseconds since the epoch.
    pub(crate) written_us: u64,
}

/// Appends one line of `bytes` bytes (its newline included, at least
/// [`ID_BYTES`] + 1) to `buf`.
pub(crate) fn write_line(buf: &mut Vec<u8>, id: LineId, bytes: usize) {
    let start = buf.len();
    // Writing into a Vec cannot fail.
    let _ = write!(
        buf,
        "a{:03} {:010} {:016} ",
        id.agent, id.seq, id.written_us
    );
    let end = start + bytes.max(ID_BYTES + 1) - 1;
    buf.resize(end, b'x');
    buf.push(b'\n');
}

/// The id at the start of a record's data (a line without its newline).
pub(crate) fn parse_line(data: &[u8]) -> Option<LineId> {
    if data.len() < ID_BYTES || data[0] != b'a' {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<u64> {
        let digits = &data[from..to];
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(
            digits
                .iter()
                .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')),
        )
    };
    Some(LineId {
        agent: number(1, 4)? as usize,
        seq: number(5, 15)?,
        written_us: number(16, 32)?,
    })
}

/// Microseconds since the epoch, now.
pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_back_as_its_id() {
        let id = LineId {
            agent: 7,
            seq: 42,
            written_us: 1_765_090_000_123_456,
        };
        let mut buf = Vec::new();
        write_line(&mut buf, id, 100);
        assert_eq!(buf.len(), 100);
        assert_eq!(buf.last(), Some(&b'\n'));
        assert_eq!(parse_line(&buf[..99]), Some(id));
        assert_eq!(parse_line(b"something else"), None);
    }
}
