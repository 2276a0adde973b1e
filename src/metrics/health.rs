//! What delivery last found of each stream's destination, and each source's
//! state, for `shardline status`.

use std::time::SystemTime;

/// The most recent delivery problem (a refused request or entry, a failed
/// ListShards), for `shardline status`.
#[derive(Debug, Clone, PartialEq)]
pub struct LastError {
    pub stream: String,
    /// Kinesis's error code, or `Transport` / `Timeout`.
    pub code: String,
    /// What it says about the destination.
    pub trouble: Trouble,
    pub message: String,
    pub at: SystemTime,
}

/// What a delivery problem says about a stream's destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    /// The stream's shards are over their limits.
    Throttled,
    /// No credentials, refused credentials, or a role that cannot be assumed.
    Credentials,
    /// The stream does not exist (or is not active).
    StreamMissing,
    /// Anything else: server errors, transport failures, timeouts.
    Failing,
}

/// A stream's destination as delivery last found it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DestinationHealth {
    /// When Kinesis last accepted a request of the stream.
    pub last_ok: Option<SystemTime>,
    /// The stream's most recent problem.
    pub last_error: Option<LastError>,
}

impl DestinationHealth {
    /// The problem that holds the destination now: the last one, unless a
    /// request succeeded after it.
    pub fn trouble(&self) -> Option<&LastError> {
        self.last_error
            .as_ref()
            .filter(|e| self.last_ok.is_none_or(|ok| e.at >= ok))
    }
}

/// A source as it last reported itself: running, or held by a problem (a
/// journalctl that cannot start, a socket that cannot be bound).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceHealth {
    pub kind: super::Source,
    /// The journald block's name, the socket's path, a file block's patterns.
    pub name: String,
    /// What holds it now, and since when; `None` while it runs.
    pub problem: Option<(String, SystemTime)>,
}
