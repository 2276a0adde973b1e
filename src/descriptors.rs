//! File descriptors: the agent checks at start-up that its configuration fits the
//! process's limit (`RLIMIT_NOFILE`), so that a full set of socket clients cannot
//! leave it without descriptors for what must keep working: tailed files, the
//! metrics endpoint, Kinesis connections and the spool (a bounded few files per
//! stream, whatever the number of segments).
//!
//! Every stream socket may hold `max_connections` clients; the rest is a reserve.
//! When the soft limit is too low the agent raises it towards the hard limit (as
//! many servers do); if even that is too low it refuses to start, naming both
//! numbers. The systemd unit sets `LimitNOFILE=65536`: systemd's default soft limit
//! (1024) is below the default `max_connections` alone.

use crate::config::{Config, SocketMode};

/// Descriptors kept for everything but socket clients and the spool: tailed
/// files and the inotify watch, the runtime's own, stdio.
pub(crate) const RESERVE: u64 = 64;

/// Why the configuration cannot run within the descriptor limit.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    #[error(
        "the configuration needs {needed} file descriptors ({sockets} for socket connections, \
         {others} for files, metrics and Kinesis) but the limit (RLIMIT_NOFILE) is {limit}; \
         raise LimitNOFILE= (or ulimit -n) or lower the sockets' max_connections"
    )]
    TooFew {
        needed: u64,
        sockets: u64,
        others: u64,
        limit: u64,
    },
}

/// Descriptors the configuration may use at once: `(socket connections and
/// listeners, everything else)`.
pub(crate) fn needed(config: &Config) -> (u64, u64) {
    let sockets = config
        .sockets
        .iter()
        .map(|s| match s.mode {
            SocketMode::Stream => s.max_connections as u64 + 1,
            SocketMode::Datagram => 1,
        })
        .sum();
    // The spool keeps a bounded few files open per stream, whatever its size.
    let spool = config.streams().len() as u64 * crate::spool::FILES_PER_STREAM;
    let others = config.delivery.max_connections as u64
        + crate::status::MAX_CONNECTIONS as u64
        + 1
        + spool
        + RESERVE;
    (sockets, others)
}

/// The process's descriptor limits, `(soft, hard)`.
// `rlim_t` is `u64` here but not on every target.
#[allow(clippy::unnecessary_cast)]
fn limits() -> std::io::Result<(u64, u64)> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((l.rlim_cur as u64, l.rlim_max as u64))
}

/// Raises the soft limit to `want` (at most the hard limit).
fn raise(want: u64, hard: u64) -> std::io::Result<()> {
    let l = libc::rlimit {
        rlim_cur: want.min(hard) as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit reads the struct it is given, nothing else.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes sure the configuration fits the descriptor limit, raising the soft limit
/// when the hard one allows. A limit that cannot be read is logged and not checked.
pub(crate) fn ensure(config: &Config) -> Result<(), DescriptorError> {
    let (sockets, others) = needed(config);
    let needed = sockets + others;
    let (soft, hard) = match limits() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "Cannot read the file descriptor limit; not checking it");
            return Ok(());
        }
    };
    let mut limit = soft;
    if needed > soft && hard > soft {
        match raise(needed, hard) {
            Ok(()) => {
                limit = needed.min(hard);
                tracing::info!(from = soft, to = limit, "Raised the file descriptor limit");
            }
            Err(e) => {
                tracing::warn!(error = %e, soft, hard, "Cannot raise the file descriptor limit")
            }
        }
    }
    if needed > limit {
        return Err(DescriptorError::TooFew {
            needed,
            sockets,
            others,
            limit,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn every_stream_socket_counts_its_connections() {
        let c = crate::config::parse(
            r#"
            [kinesis]
            stream = "s"
            [delivery]
            max_connections = 10
            [spool]
            dir = "/x"
            [[socket]]
            path = "/a.sock"
            max_connections = 100
            [[socket]]
            path = "/b.sock"
            [[socket]]
            path = "/c.sock"
            mode = "datagram"
            "#,
            Path::new("t.toml"),
        )
        .unwrap();
        let (sockets, others) = needed(&c);
        assert_eq!(sockets, 101 + 1025 + 1);
        assert_eq!(
            others,
            10 + crate::status::MAX_CONNECTIONS as u64
                + 1
                + crate::spool::FILES_PER_STREAM
                + RESERVE
        );
    }
}
