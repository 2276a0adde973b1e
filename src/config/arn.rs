//! Kinesis streams named by ARN (`arn:aws:kinesis:eu-west-1:123456789012:stream/logs`)
//! wherever a stream name is written.
//!
//! Inside the agent a stream is known by a key: its spool entries, metric labels,
//! log fields and the routing of sources to destinations all use it. A stream
//! named by ARN has the ARN's stream name as its key, so that a source may name
//! it by the ARN or by that name alike, and the spool written before a name was
//! changed into an ARN is still delivered. Two different ARNs with one name
//! would share a key: refused. The ARN itself is what the client sends
//! (`StreamARN`), and its region is the stream's when its destination sets none.
//!
//! The sections check a stream's name or ARN as they read it ([`check`]); once every
//! section is read, [`StreamArns`] turns the ARNs into keys and settles regions.

use crate::deliver::destination::Destination;

/// Kinesis stream names: 1–128 characters of `a-zA-Z0-9_.-`.
fn check_stream_name(name: &str, field: &str, problems: &mut Vec<String>) {
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
    {
        problems.push(format!(
            "{field} {name:?} is not a valid stream name (1-128 characters of a-z, A-Z, 0-9, '_', '.', '-')"
        ));
    }
}

/// A Kinesis stream ARN, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StreamArn {
    /// `aws`, `aws-cn`, `aws-us-gov`, ...
    pub(super) partition: String,
    pub(super) region: String,
    pub(super) account: String,
    /// The stream's name: its key inside the agent.
    pub(super) name: String,
}

/// Whether a stream as written is an ARN rather than a name.
pub(super) fn is_arn(stream: &str) -> bool {
    stream.starts_with("arn:")
}

/// Takes a Kinesis stream ARN apart: `arn:<partition>:kinesis:<region>:<account>:stream/<name>`.
pub(super) fn parse(arn: &str) -> Result<StreamArn, String> {
    let bad = |why: &str| {
        Err(format!(
            "{arn:?} is not a Kinesis stream ARN ({why}; expected arn:aws:kinesis:<region>:<12-digit account>:stream/<name>)"
        ))
    };
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [_, partition, service, region, account, resource] = parts[..] else {
        return bad("too few ':'-separated parts");
    };
    let lower = |s: &str, digits: bool| {
        s.chars()
            .all(|c| c.is_ascii_lowercase() || c == '-' || (digits && c.is_ascii_digit()))
    };
    if !partition.starts_with("aws") || !lower(partition, false) {
        return bad("the partition is not aws, aws-cn, aws-us-gov, ...");
    }
    if service != "kinesis" {
        return bad("the service is not kinesis");
    }
    if region.is_empty() || !lower(region, true) {
        return bad("the region is missing or not like eu-west-1");
    }
    if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
        return bad("the account is not 12 digits");
    }
    let Some(name) = resource.strip_prefix("stream/") else {
        return bad("the resource is not stream/<name>");
    };
    let mut problems = Vec::new();
    check_stream_name(name, "its stream name", &mut problems);
    if let Some(p) = problems.pop() {
        return bad(&p);
    }
    Ok(StreamArn {
        partition: partition.to_owned(),
        region: region.to_owned(),
        account: account.to_owned(),
        name: name.to_owned(),
    })
}

/// Checks a Kinesis stream as written in `field`: a name or an ARN.
pub(super) fn check(stream: &str, field: &str, problems: &mut Vec<String>) {
    if !is_arn(stream) {
        check_stream_name(stream, field, problems);
    } else if let Err(e) = parse(stream) {
        problems.push(format!("{field} {e}"));
    }
}

/// One stream named by ARN.
struct Named {
    /// The key inside the agent (the ARN's stream name).
    key: String,
    arn: String,
    region: String,
    /// Where the ARN was first written, for messages.
    field: String,
}

/// The streams named by ARN, gathered while the sections' streams are turned
/// into keys.
#[derive(Default)]
pub(super) struct StreamArns {
    named: Vec<Named>,
}

/// Where a stream's region may be written: `[kinesis]` or its `[[destination]]`
/// block.
pub(super) struct WrittenRegion<'a> {
    /// `kinesis` or `destination[i]`.
    pub(super) field: String,
    /// The stream the section names (its key).
    pub(super) key: &'a str,
    /// The region as written there.
    pub(super) region: Option<&'a str>,
}

impl StreamArns {
    /// The key inside the agent of `stream` as written in `field` (unchanged if it
    /// is a name, or an ARN already refused); notes the ARN and refuses a second
    /// ARN with the same stream name.
    pub(super) fn key(&mut self, field: &str, stream: &str, problems: &mut Vec<String>) -> String {
        if !is_arn(stream) {
            return stream.to_owned();
        }
        let Ok(arn) = parse(stream) else {
            return stream.to_owned();
        };
        match self.named.iter().find(|n| n.key == arn.name) {
            Some(n) if n.arn != stream => problems.push(format!(
                "{field} {stream:?} and {} {:?} are two streams named {:?}, and a stream's name is its key inside the agent (spool, metrics, routing): deliver one of them from a second shardline with its own spool, or write the same ARN in both",
                n.field, n.arn, arn.name
            )),
            Some(_) => {}
            None => self.named.push(Named {
                key: arn.name.clone(),
                arn: stream.to_owned(),
                region: arn.region,
                field: field.to_owned(),
            }),
        }
        arn.name
    }

    /// Settles the region of every stream named by ARN: a region written in
    /// `[kinesis]` (for its own stream) or in the stream's `[[destination]]` block
    /// must be the ARN's; without one, the ARN's is the stream's. A stream with no
    /// block of its own gets one (`[kinesis]`'s settings, the ARN's region) when
    /// `[kinesis]`'s region is not the ARN's.
    pub(super) fn settle_regions(
        &self,
        written: &[WrittenRegion<'_>],
        default: &mut Destination,
        destinations: &mut Vec<(String, Destination)>,
        problems: &mut Vec<String>,
    ) {
        for n in &self.named {
            let section = written.iter().find(|w| w.key == n.key);
            if let Some(region) = section.and_then(|w| w.region) {
                if region != n.region {
                    problems.push(format!(
                        "{}.region {region:?} is not the region of stream {:?} ({}): remove it (the ARN's region is used) or write the ARN of the stream in {region}",
                        section.expect("found").field,
                        n.arn,
                        n.region
                    ));
                }
                continue;
            }
            match section.map(|w| w.field.as_str()) {
                // Set as `[kinesis]` was read, so that blocks inherit it.
                Some("kinesis") => {}
                Some(_) => {
                    if let Some((_, d)) = destinations.iter_mut().find(|(k, _)| *k == n.key) {
                        d.region = Some(n.region.clone());
                    }
                }
                None if default.region.as_deref() != Some(n.region.as_str()) => {
                    let mut own = default.clone();
                    own.region = Some(n.region.clone());
                    destinations.push((n.key.clone(), own));
                }
                None => {}
            }
        }
    }

    /// The region of the ARN of the stream with `key`, if it is named by one.
    pub(super) fn region(&self, key: &str) -> Option<String> {
        let n = self.named.iter().find(|n| n.key == key)?;
        Some(n.region.clone())
    }

    /// The ARN of the stream with `key`, if it is named by one.
    pub(super) fn arn(&self, key: &str) -> Option<&str> {
        let n = self.named.iter().find(|n| n.key == key)?;
        Some(&n.arn)
    }

    /// Each stream named by ARN: (its key, its ARN).
    pub(super) fn into_pairs(self) -> Vec<(String, String)> {
        self.named.into_iter().map(|n| (n.key, n.arn)).collect()
    }
}

#[cfg(test)]
mod tests;
