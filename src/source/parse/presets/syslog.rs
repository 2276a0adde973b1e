//! Syslog presets: RFC 3164 (BSD) and RFC 5424.
use super::super::value::{Failure, Fields};
pub(super) const RFC3164_KEYS: &[&str] = &[];
pub(super) const RFC5424_KEYS: &[&str] = &[];
pub(super) const RFC3164_TIME: (&str, &str) = ("time", "%b %e %H:%M:%S");
pub(super) const RFC5424_TIME: (&str, &str) = ("time", "rfc3339");
pub(super) fn rfc3164<'a>(_line: &'a str, _out: &mut Fields<'a>) -> Result<(), Failure> {
    Err(Failure::no_match("unwritten", 0))
}
pub(super) fn rfc5424<'a>(_line: &'a str, _out: &mut Fields<'a>) -> Result<(), Failure> {
    Err(Failure::no_match("unwritten", 0))
}
