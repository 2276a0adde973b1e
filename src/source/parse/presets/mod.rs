//! The presets: formats with fixed, documented keys (docs/parsing.md), each a
//! hand-written reader of one line (no regex on the hot path).
//!
//! The upper-case presets read exactly what the Amazon Kinesis Agent's
//! `LOGTOJSON` options read, into the same keys and values (every value a
//! string; `-` as null in the Apache formats), so that consumers of a migrated
//! flow see the records they saw.

use super::value::{Failure, Fields};

mod agent;
mod apache;
pub(crate) mod container;
pub(crate) mod csv;
mod logfmt;
mod nginx;
mod syslog;

pub(crate) use crate::config::parse::{Preset, PRESETS as ALL};

/// A double-quoted value from `at` (after its opening quote): the value, with
/// each backslash decoded by `escape` (which appends what the escape stands for
/// and returns the offset after it), and the offset after the closing quote.
/// Borrowed from the line when it holds no backslash; `None` when no quote
/// closes it.
fn quoted_value(
    line: &str,
    at: usize,
    mut escape: impl FnMut(&str, usize, &mut String) -> usize,
) -> Option<(std::borrow::Cow<'_, str>, usize)> {
    let b = line.as_bytes();
    let mut owned: Option<String> = None;
    let mut from = at;
    let mut i = at;
    while let Some(&c) = b.get(i) {
        match c {
            b'"' => {
                let value = match owned {
                    Some(mut s) => {
                        s.push_str(&line[from..i]);
                        std::borrow::Cow::Owned(s)
                    }
                    None => std::borrow::Cow::Borrowed(&line[at..i]),
                };
                return Some((value, i + 1));
            }
            b'\\' => {
                let s = owned.get_or_insert_with(String::new);
                s.push_str(&line[from..i]);
                i = escape(line, i, s);
                from = i;
            }
            _ => i += 1,
        }
    }
    None
}

impl Preset {
    /// What the preset reads, in a few words.
    pub(crate) fn reads(self) -> &'static str {
        match self {
            Preset::ApacheCommon => "Apache httpd access log, Common Log Format",
            Preset::ApacheCombined => "Apache httpd access log, Combined Log Format",
            Preset::ApacheError => "Apache httpd error log (2.2 and 2.4)",
            Preset::NginxAccess => "nginx access log, the default `combined` format",
            Preset::NginxError => "nginx error log",
            Preset::SyslogRfc3164 => "BSD syslog (RFC 3164), as rsyslog writes files",
            Preset::SyslogRfc5424 => "syslog (RFC 5424), structured data included",
            Preset::Logfmt => "`key=value` pairs (the line's own keys)",
            Preset::Cri => "CRI container logs (containerd, CRI-O), partial lines joined",
            Preset::Docker => "Docker json-file lines, partial lines joined",
            Preset::AgentCommonApache => "the Kinesis Agent's LOGTOJSON `COMMONAPACHELOG`",
            Preset::AgentCombinedApache => "the Kinesis Agent's LOGTOJSON `COMBINEDAPACHELOG`",
            Preset::AgentApacheError => "the Kinesis Agent's LOGTOJSON `APACHEERRORLOG`",
            Preset::AgentSyslog => "the Kinesis Agent's LOGTOJSON `SYSLOG`",
            Preset::AgentRfc3339Syslog => "the Kinesis Agent's LOGTOJSON `RFC3339SYSLOG`",
        }
    }

    /// The preset's row of the table in docs/parsing.md (and `shardline parse
    /// --presets`).
    pub(crate) fn row(self) -> String {
        let keys: Vec<String> = self.keys().iter().map(|k| format!("`{k}`")).collect();
        let keys = if keys.is_empty() {
            "the line's".to_owned()
        } else {
            keys.join(", ")
        };
        let time = match self.time() {
            Some((key, format)) => format!("`{key}` as `{format}`"),
            None => "none".to_owned(),
        };
        format!("| `{}` | {} | {keys} | {time} |", self.name(), self.reads())
    }

    /// The keys the preset writes, in order (a key whose value is absent may be
    /// left out or null, as docs/parsing.md says per preset). Empty for
    /// `logfmt`, whose keys are the line's.
    pub(crate) fn keys(self) -> &'static [&'static str] {
        match self {
            Preset::ApacheCommon => apache::COMMON_KEYS,
            Preset::ApacheCombined => apache::COMBINED_KEYS,
            Preset::ApacheError => apache::ERROR_KEYS,
            Preset::NginxAccess => nginx::ACCESS_KEYS,
            Preset::NginxError => nginx::ERROR_KEYS,
            Preset::SyslogRfc3164 => syslog::RFC3164_KEYS,
            Preset::SyslogRfc5424 => syslog::RFC5424_KEYS,
            Preset::Logfmt => &[],
            Preset::Cri => container::CRI_KEYS,
            Preset::Docker => container::DOCKER_KEYS,
            Preset::AgentCommonApache => agent::COMMON_KEYS,
            Preset::AgentCombinedApache => agent::COMBINED_KEYS,
            Preset::AgentApacheError => agent::ERROR_KEYS,
            Preset::AgentSyslog | Preset::AgentRfc3339Syslog => agent::SYSLOG_KEYS,
        }
    }

    /// The preset's time key and the `time_format` it is written in, used when
    /// a block sets `time_key` to it without a `time_format`.
    pub(crate) fn time(self) -> Option<(&'static str, &'static str)> {
        match self {
            Preset::ApacheCommon | Preset::ApacheCombined => Some(apache::TIME),
            Preset::ApacheError => Some(apache::ERROR_TIME),
            Preset::NginxAccess => Some(nginx::ACCESS_TIME),
            Preset::NginxError => Some(nginx::ERROR_TIME),
            Preset::SyslogRfc3164 => Some(syslog::RFC3164_TIME),
            Preset::SyslogRfc5424 => Some(syslog::RFC5424_TIME),
            Preset::Logfmt => None,
            Preset::Cri => Some(container::CRI_TIME),
            Preset::Docker => Some(container::DOCKER_TIME),
            Preset::AgentCommonApache | Preset::AgentCombinedApache => Some(agent::APACHE_TIME),
            Preset::AgentApacheError => Some(agent::ERROR_TIME),
            Preset::AgentSyslog => Some(agent::SYSLOG_TIME),
            Preset::AgentRfc3339Syslog => Some(agent::RFC3339_TIME),
        }
    }

    /// Reads `line` (without its newline) into `out`.
    pub(crate) fn parse<'a>(self, line: &'a str, out: &mut Fields<'a>) -> Result<(), Failure> {
        match self {
            Preset::ApacheCommon => apache::common(line, out),
            Preset::ApacheCombined => apache::combined(line, out),
            Preset::ApacheError => apache::error(line, out),
            Preset::NginxAccess => nginx::access(line, out),
            Preset::NginxError => nginx::error(line, out),
            Preset::SyslogRfc3164 => syslog::rfc3164(line, out),
            Preset::SyslogRfc5424 => syslog::rfc5424(line, out),
            Preset::Logfmt => logfmt::parse(line, out),
            Preset::Cri => container::cri(line, out),
            Preset::Docker => container::docker(line, out),
            Preset::AgentCommonApache => agent::common_apache(line, out),
            Preset::AgentCombinedApache => agent::combined_apache(line, out),
            Preset::AgentApacheError => agent::apache_error(line, out),
            Preset::AgentSyslog => agent::syslog(line, out),
            Preset::AgentRfc3339Syslog => agent::rfc3339_syslog(line, out),
        }
    }
}
