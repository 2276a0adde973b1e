//! The journal cursor as a spool checkpoint value: a version byte, then the
//! cursor journalctl printed.

const CHECKPOINT_PREFIX: &[u8] = b"journald/";
pub(super) const CHECKPOINT_VERSION: u8 = 1;

/// The checkpoint name of block `name`.
pub(crate) fn checkpoint_name(name: &str) -> Vec<u8> {
    [CHECKPOINT_PREFIX, name.as_bytes()].concat()
}

/// Why a stored cursor cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum CursorError {
    #[error(
        "journal checkpoint has format version {0}; this build reads version {CHECKPOINT_VERSION}"
    )]
    Version(u8),
    #[error("journal checkpoint is not a cursor")]
    Invalid,
}

pub(super) fn encode_cursor(cursor: &str) -> Vec<u8> {
    [&[CHECKPOINT_VERSION][..], cursor.as_bytes()].concat()
}

/// The cursor kept in a checkpoint value.
pub(crate) fn decode_cursor(value: &[u8]) -> Result<String, CursorError> {
    match value.split_first() {
        Some((&CHECKPOINT_VERSION, rest)) if !rest.is_empty() => {
            String::from_utf8(rest.to_vec()).map_err(|_| CursorError::Invalid)
        }
        Some((&v, _)) if v != CHECKPOINT_VERSION => Err(CursorError::Version(v)),
        _ => Err(CursorError::Invalid),
    }
}
