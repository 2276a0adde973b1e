//! The Kinesis Agent's LOGTOJSON formats.
use super::super::value::{Failure, Fields};
pub(super) const COMMON_KEYS: &[&str] = &[
    "host", "ident", "authuser", "datetime", "request", "response", "bytes",
];
pub(super) const COMBINED_KEYS: &[&str] = &[
    "host", "ident", "authuser", "datetime", "request", "response", "bytes", "referer", "agent",
];
pub(super) const ERROR_KEYS: &[&str] = &[
    "timestamp",
    "module",
    "severity",
    "processid",
    "threadid",
    "client",
    "message",
];
pub(super) const SYSLOG_KEYS: &[&str] =
    &["timestamp", "hostname", "program", "processid", "message"];
pub(super) const APACHE_TIME: (&str, &str) = ("datetime", "%d/%b/%Y:%H:%M:%S %z");
pub(super) const ERROR_TIME: (&str, &str) = ("timestamp", "%a %b %d %H:%M:%S%.f %Y");
pub(super) const SYSLOG_TIME: (&str, &str) = ("timestamp", "%b %e %H:%M:%S");
pub(super) const RFC3339_TIME: (&str, &str) = ("timestamp", "rfc3339");
pub(super) fn common_apache<'a>(_line: &'a str, _out: &mut Fields<'a>) -> Result<(), Failure> {
    Err(Failure::no_match("unwritten", 0))
}
pub(super) fn combined_apache<'a>(_line: &'a str, _out: &mut Fields<'a>) -> Result<(), Failure> {
    Err(Failure::no_match("unwritten", 0))
}
pub(super) fn apache_error<'a>(_line: &'a str, _out: &mut Fields<'a>) -> Result<(), Failure> {
    Err(Failure::no_match("unwritten", 0))
}
pub(super) fn syslog<'a>(_line: &'a str, _out: &mut Fields<'a>) -> Result<(), Failure> {
    Err(Failure::no_match("unwritten", 0))
}
pub(super) fn rfc3339_syslog<'a>(_line: &'a str, _out: &mut Fields<'a>) -> Result<(), Failure> {
    Err(Failure::no_match("unwritten", 0))
}
