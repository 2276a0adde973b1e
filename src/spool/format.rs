//! The spool's format file (`spool.format`), which says which layout a
//! directory holds: written last when a spool is created or migrated (temp →
//! fsync → rename), so a directory without it is a new or a 0.1 spool. Owns no
//! state; called by the open (`open.rs`) and the 0.1 migration (`legacy.rs`),
//! which both report a failure as an open error.

use std::path::Path;

use super::storage::Storage;
use super::{SpoolError, FORMAT_FILE, FORMAT_TEXT};

/// An error opening the spool at `dir`.
pub(super) fn open_error(dir: &Path, source: std::io::Error) -> SpoolError {
    SpoolError::Open {
        path: dir.to_owned(),
        source,
    }
}

/// Writes the format file of the current layout into `dir`, durably (the file,
/// the directory, and the directory's own entry in its parent).
pub(super) fn write_format(storage: &dyn Storage, dir: &Path) -> std::io::Result<()> {
    let tmp = dir.join(format!("{FORMAT_FILE}.tmp"));
    let f = storage.open(&tmp, true)?;
    f.set_len(0)?;
    f.write_at(0, FORMAT_TEXT.as_bytes())?;
    f.sync_data()?;
    storage.rename(&tmp, &dir.join(FORMAT_FILE))?;
    storage.sync_dir(dir)?;
    // A new spool's own entry in its parent.
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => storage.sync_dir(parent),
        None => Ok(()),
    }
}
