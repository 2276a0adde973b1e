//! Label values and label sets: every label value is an enum, spelled in one place.

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

/// An enum of label values, and the one place that spells them.
macro_rules! label_values {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                encoder.write_str(self.as_str())
            }
        }
    };
}

label_values! {
    /// Kind of source.
    Source {
        File => "file",
        Socket => "socket",
        /// An embedding program, through the `Producer`.
        Producer => "producer",
        Journald => "journald",
    }
}

label_values! {
    /// Why records were refused at intake.
    RejectReason {
        TooLarge => "too_large",
        InvalidRecord => "invalid_record",
        InvalidUtf8 => "invalid_utf8",
        SpoolError => "spool_error",
        /// Read from a client while the agent stopped with a full spool.
        ShuttingDown => "shutting_down",
    }
}

label_values! {
    /// A source's error that is not about one record.
    SourceError {
        BadFrame => "bad_frame",
        TruncatedFrame => "truncated_frame",
        PeerRefused => "peer_refused",
        IdleTimeout => "idle_timeout",
        NoBudget => "no_budget",
        UidLimit => "uid_limit",
        /// A journal entry that is not a JSON object.
        BadEntry => "bad_entry",
        /// A journal line longer than the reader takes.
        EntryTooLong => "entry_too_long",
    }
}

label_values! {
    /// What was done to a line: too long, or not valid UTF-8.
    LineAction {
        Split => "split",
        Truncated => "truncated",
        Passed => "passed",
        Replaced => "replaced",
        Rejected => "rejected",
    }
}

label_values! {
    /// What happened to a tailed file.
    FileEvent {
        Opened => "opened",
        /// Not tailed (older than `ignore_older`, say).
        Skipped => "skipped",
        /// A new file at a tailed path.
        Replaced => "replaced",
        /// The path is gone.
        Removed => "removed",
        Truncated => "truncated",
        Closed => "closed",
        /// Deleted once delivered (`delete_after_delivered`).
        Deleted => "deleted",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: Source,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub source: Source,
    pub reason: RejectReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceErrorLabels {
    pub source: Source,
    pub kind: SourceError,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LineLabels {
    pub source: Source,
    pub action: LineAction,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FileEventLabels {
    pub event: FileEvent,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    pub stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub stream: String,
    /// Kinesis error code.
    pub code: String,
}

/// A line block (`file[0]`, `socket[1]`, `journald[0]`), a failure reason and
/// what was done: all bounded (blocks by the config, the rest by the code).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ParseLabels {
    pub block: String,
    pub reason: String,
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BlockLabels {
    pub block: String,
}
