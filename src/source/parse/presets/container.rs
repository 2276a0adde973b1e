//! Container runtime log lines: CRI (containerd, CRI-O) and Docker's json-file.
use super::super::value::{Failure, Fields};
pub(crate) const CRI_KEYS: &[&str] = &[];
pub(crate) const DOCKER_KEYS: &[&str] = &[];
pub(crate) const CRI_TIME: (&str, &str) = ("time", "rfc3339");
pub(crate) const DOCKER_TIME: (&str, &str) = ("time", "rfc3339");
pub(crate) fn cri<'a>(_line: &'a str, _out: &mut Fields<'a>) -> Result<(), Failure> {
    Err(Failure::no_match("unwritten", 0))
}
pub(crate) fn docker<'a>(_line: &'a str, _out: &mut Fields<'a>) -> Result<(), Failure> {
    Err(Failure::no_match("unwritten", 0))
}
