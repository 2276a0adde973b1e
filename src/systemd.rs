//! systemd's service notification protocol (`sd_notify(3)`), by hand: one datagram
//! of `KEY=VALUE` lines to the Unix socket named by `NOTIFY_SOCKET` (a path, or an
//! abstract socket when it starts with `@`). No crate: the protocol is a `sendto`.
//!
//! The agent says `READY=1` once [`Agent::start`](crate::agent::Agent::start) has
//! returned (spool open, sources listening), `WATCHDOG=1` from its main loop every
//! half `WATCHDOG_USEC`, and `STOPPING=1` when it begins to stop. Outside systemd
//! (`NOTIFY_SOCKET` unset) every call does nothing.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Why systemd cannot be notified.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SystemdError {
    #[error(
        "NOTIFY_SOCKET {value:?} is neither an absolute path nor an abstract socket name ('@name')"
    )]
    BadSocket { value: String },
    #[error("NOTIFY_SOCKET {value:?} cannot be used")]
    Address {
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("WATCHDOG_USEC {value:?} is not a positive number of microseconds")]
    BadWatchdog { value: String },
    #[error("cannot send {state:?} to systemd at NOTIFY_SOCKET {socket:?}")]
    Send {
        state: String,
        socket: String,
        #[source]
        source: io::Error,
    },
}

/// Notifies systemd (or nobody, outside systemd).
#[derive(Debug)]
pub(crate) struct Notifier {
    target: Option<Target>,
    watchdog: Option<Duration>,
}

#[derive(Debug)]
struct Target {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// `NOTIFY_SOCKET` as given, for messages.
    name: String,
}

impl Notifier {
    /// A notifier that does nothing.
    pub(crate) fn disabled() -> Notifier {
        Notifier {
            target: None,
            watchdog: None,
        }
    }

    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`.
    pub(crate) fn from_env() -> Result<Notifier, SystemdError> {
        let var = |name| std::env::var(name).ok();
        Self::from_vars(
            var("NOTIFY_SOCKET").as_deref(),
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
            std::process::id(),
        )
    }

    /// From the values of `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`, for
    /// the process `pid`.
    pub(crate) fn from_vars(
        notify_socket: Option<&str>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        pid: u32,
    ) -> Result<Notifier, SystemdError> {
        let Some(name) = notify_socket.filter(|s| !s.is_empty()) else {
            return Ok(Notifier::disabled());
        };
        let addr = socket_addr(name)?;
        let socket = UnixDatagram::unbound()
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|source| SystemdError::Address {
                value: name.to_owned(),
                source,
            })?;
        // The watchdog is meant for WATCHDOG_PID only (a child started by the
        // service inherits the variables, not the duty).
        let ours = watchdog_pid.is_none_or(|p| p.trim().parse::<u32>().ok() == Some(pid));
        let watchdog = match watchdog_usec.filter(|_| ours) {
            None => None,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(usec) if usec > 0 => Some(Duration::from_micros(usec)),
                _ => {
                    return Err(SystemdError::BadWatchdog {
                        value: v.to_owned(),
                    })
                }
            },
        };
        Ok(Notifier {
            target: Some(Target {
                socket,
                addr,
                name: name.to_owned(),
            }),
            watchdog,
        })
    }

    /// Whether messages go anywhere.
    #[cfg(test)]
    pub(crate) fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often to send `WATCHDOG=1`: half the watchdog timeout, as
    /// `sd_watchdog_enabled(3)` advises; `None` without a watchdog.
    pub(crate) fn watchdog_interval(&self) -> Option<Duration> {
        self.target.as_ref()?;
        self.watchdog.map(|t| t / 2)
    }

    /// Sends `state` (`KEY=VALUE` lines), if systemd listens.
    pub(crate) fn notify(&self, state: &str) -> Result<(), SystemdError> {
        let Some(t) = &self.target else {
            return Ok(());
        };
        t.socket
            .send_to_addr(state.as_bytes(), &t.addr)
            .map(|_| ())
            .map_err(|source| SystemdError::Send {
                state: state.to_owned(),
                socket: t.name.clone(),
                source,
            })
    }
}

fn socket_addr(name: &str) -> Result<SocketAddr, SystemdError> {
    let failed = |source| SystemdError::Address {
        value: name.to_owned(),
        source,
    };
    if let Some(abstract_name) = name.strip_prefix('@') {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            return SocketAddr::from_abstract_name(abstract_name.as_bytes()).map_err(failed);
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = abstract_name;
            return Err(SystemdError::BadSocket {
                value: name.to_owned(),
            });
        }
    }
    if !name.starts_with('/') {
        return Err(SystemdError::BadSocket {
            value: name.to_owned(),
        });
    }
    SocketAddr::from_pathname(name).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_notify_socket_nothing_is_sent() {
        let n = Notifier::from_vars(None, Some("2000000"), None, 1).unwrap();
        assert!(!n.is_enabled());
        assert_eq!(n.watchdog_interval(), None);
        n.notify("READY=1").unwrap();
    }

    #[test]
    fn sends_to_a_path_socket_with_the_watchdog_at_half_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::from_vars(path.to_str(), Some("3000000"), None, 7).unwrap();
        assert_eq!(n.watchdog_interval(), Some(Duration::from_millis(1500)));
        n.notify("READY=1\nSTATUS=up").unwrap();
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=up");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!(
            "shardline-test-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        );
        let listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let n = Notifier::from_vars(Some(&format!("@{name}")), None, None, 7).unwrap();
        assert_eq!(n.watchdog_interval(), None);
        n.notify("WATCHDOG=1").unwrap();
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }

    #[test]
    fn the_watchdog_belongs_to_watchdog_pid_only() {
        let n = Notifier::from_vars(Some("/run/x"), Some("1000000"), Some("8"), 7).unwrap();
        assert_eq!(n.watchdog_interval(), None);
        let n = Notifier::from_vars(Some("/run/x"), Some("1000000"), Some("7"), 7).unwrap();
        assert_eq!(n.watchdog_interval(), Some(Duration::from_millis(500)));
    }

    #[test]
    fn bad_values_are_quoted() {
        let e = Notifier::from_vars(Some("relative/path"), None, None, 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "NOTIFY_SOCKET \"relative/path\" is neither an absolute path nor an abstract socket name ('@name')"
        );
        let e = Notifier::from_vars(Some("/run/x"), Some("soon"), None, 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "WATCHDOG_USEC \"soon\" is not a positive number of microseconds"
        );
    }
}
