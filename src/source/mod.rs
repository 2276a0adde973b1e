//! Sources: where records come from. Each turns bytes into [`UserRecord`]s bound for
//! a stream and hands them to the [`Producer`], the one way into the spool.
//!
//! [`UserRecord`]: crate::record::UserRecord
//! [`Producer`]: crate::producer::Producer

pub mod budget;
pub mod file;
pub mod format;
pub mod journald;
mod json;
pub mod log_limit;
pub mod socket;
