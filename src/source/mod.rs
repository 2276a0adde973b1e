//! Sources: where records come from. Each turns bytes into [`UserRecord`]s bound for
//! a stream and hands them to the [`Producer`], the one way into the spool.
//!
//! [`UserRecord`]: crate::record::UserRecord
//! [`Producer`]: crate::producer::Producer

pub(crate) mod budget;
pub(crate) mod file;
pub(crate) mod format;
pub(crate) mod journald;
mod json;
pub(crate) mod log_limit;
pub(crate) mod parse;
pub(crate) mod record_id;
pub(crate) mod socket;
