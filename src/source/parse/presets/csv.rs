//! CSV lines (RFC 4180 quoting) and the Kinesis Agent's CSVTOJSON split.
use super::super::value::Failure;
use std::borrow::Cow;
pub(crate) struct Csv {
    pub delimiter: u8,
    pub quote: Option<u8>,
}
impl Csv {
    pub(crate) fn split<'a>(
        &self,
        _line: &'a str,
        _out: &mut Vec<Cow<'a, str>>,
    ) -> Result<(), Failure> {
        Err(Failure::no_match("unwritten", 0))
    }
}
pub(crate) fn agent_split<'a>(_line: &'a str, _delimiter: &regex::Regex) -> Vec<&'a str> {
    Vec::new()
}
