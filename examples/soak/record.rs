//! The records of the load and their ids. Owns no state: [`Source`] names where a
//! record came from, [`record_data`] makes a record's data (called by the file
//! writers and the socket client in `load`), [`parse_id`] reads the id back (called
//! by `tally` on every user record read from the stream).

/// Where a record came from; its index in the per-source tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    FileRename = 0,
    FileCopytruncate = 1,
    Socket = 2,
}

impl Source {
    pub(crate) const ALL: [Source; 3] =
        [Source::FileRename, Source::FileCopytruncate, Source::Socket];

    /// The id prefix in a record's data.
    pub(crate) fn tag(self) -> &'static str {
        match self {
            Source::FileRename => "fr",
            Source::FileCopytruncate => "fc",
            Source::Socket => "so",
        }
    }

    /// The log file a file source writes (none for the socket).
    pub(crate) fn file_name(self) -> &'static str {
        match self {
            Source::FileRename => "rename.log",
            Source::FileCopytruncate => "copytruncate.log",
            Source::Socket => "",
        }
    }
}

/// A record's data: its id (`fr-0000000042`), a space, and filler up to `bytes`.
pub(crate) fn record_data(source: Source, seq: u64, bytes: usize) -> Vec<u8> {
    let mut d = format!("{}-{seq:010} ", source.tag()).into_bytes();
    d.resize(bytes.max(d.len()), b'x');
    d
}

/// The id in a record's data.
pub(crate) fn parse_id(data: &[u8]) -> Option<(Source, u64)> {
    let source = Source::ALL
        .into_iter()
        .find(|s| data.starts_with(s.tag().as_bytes()))?;
    if data.get(2) != Some(&b'-') {
        return None;
    }
    let seq = std::str::from_utf8(data.get(3..13)?).ok()?.parse().ok()?;
    Some((source, seq))
}
