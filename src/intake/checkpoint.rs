//! The checkpoint sources speak: a source's read position (a file's identity
//! and offset, a journal cursor), stored with the records read up to it.
//!
//! Sources build and read these through the producer (`crate::producer::Checkpoint`
//! is this type) and never see the spool's own; intake turns one into the
//! spool's at the door ([`Checkpoint::as_stored`], a borrow: nothing is copied
//! on the way to the frame) and back when a source asks what was stored.

use crate::spool::{self, CheckpointRef};

/// A source's read position, written in the same atomic write as the records
/// read up to it, so a crash can neither lose nor duplicate what lies between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Source-defined name (for a file: its identity).
    pub name: Vec<u8>,
    /// Source-defined value (for a file: its position and fingerprint).
    pub value: Vec<u8>,
}

impl Checkpoint {
    /// The spool's view of it, borrowed.
    pub(super) fn as_stored(&self) -> CheckpointRef<'_> {
        CheckpointRef {
            name: &self.name,
            value: &self.value,
        }
    }
}

impl From<spool::Checkpoint> for Checkpoint {
    fn from(c: spool::Checkpoint) -> Self {
        Checkpoint {
            name: c.name,
            value: c.value,
        }
    }
}
