//! Where the agent sent each kind of stream: `kinesis.endpoint` and
//! `kinesis.region` for Kinesis, `firehose.endpoint` for Firehose (the agent's
//! Firehose client has no region key: without an endpoint it writes to
//! us-east-1). An AWS endpoint URL names its region, which is all shardline
//! needs; any other endpoint (a VPC endpoint, FIPS, an emulator) is kept.

use super::read::{text, Object};

/// One service's region and endpoint, as shardline writes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Endpoint {
    pub region: Option<String>,
    /// Why `region` is what it is (a note beside it).
    pub region_note: String,
    /// An endpoint URL to keep (not a region's standard one).
    pub url: Option<String>,
    /// Why `url` is kept, or why it was changed.
    pub url_note: String,
}

/// The Kinesis endpoint: `kinesis.region` wins over the region the endpoint's
/// host names (the agent signs with `kinesis.region` when both are set).
pub(super) fn kinesis(root: &Object) -> Endpoint {
    let region = text(root, "kinesis.region");
    let url = text(root, "kinesis.endpoint");
    let mut out = from_url("kinesis", "kinesis.endpoint", url.as_deref());
    if let Some(r) = region {
        if out.region.as_deref() != Some(r.as_str()) && out.url.is_none() {
            // A standard endpoint of another region: the agent signed for
            // kinesis.region but sent to the endpoint's host.
            out.url = url.map(with_scheme);
            out.url_note = "kinesis.endpoint, kept: it is not kinesis.region's".into();
        }
        out.region = Some(r);
        out.region_note = "kinesis.region".into();
    }
    out
}

/// The Firehose endpoint; without one, us-east-1 as the agent's client.
pub(super) fn firehose(root: &Object) -> Endpoint {
    let url = text(root, "firehose.endpoint");
    if url.is_none() {
        return Endpoint {
            region: Some("us-east-1".into()),
            region_note: "no firehose.endpoint: the agent wrote to Firehose in us-east-1".into(),
            ..Endpoint::default()
        };
    }
    from_url("firehose", "firehose.endpoint", url.as_deref())
}

/// The region and endpoint an endpoint URL stands for.
fn from_url(service: &str, key: &str, url: Option<&str>) -> Endpoint {
    let Some(url) = url else {
        return Endpoint::default();
    };
    let host = host(url);
    let region = region_in(&host);
    let standard = region.as_deref().is_some_and(|r| {
        [".amazonaws.com", ".amazonaws.com.cn"]
            .iter()
            .any(|d| host == format!("{service}.{r}{d}"))
    });
    let mut out = Endpoint {
        region_note: match &region {
            Some(_) => format!("{key} {url}"),
            None => String::new(),
        },
        region,
        ..Endpoint::default()
    };
    if !standard {
        out.url = Some(with_scheme(url.to_owned()));
        out.url_note = if url.contains("://") {
            format!("{key}: not a region's standard endpoint")
        } else {
            format!("{key} {url:?}, with the https:// the agent assumed")
        };
    }
    out
}

/// An endpoint written without a scheme, as the agent's SDK took it: https.
fn with_scheme(url: String) -> String {
    if url.contains("://") {
        url
    } else {
        format!("https://{url}")
    }
}

/// The host of a URL (or of a bare `host[:port][/path]`), lower case.
fn host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit('@').next().unwrap_or_default();
    rest.split(['/', ':', '?', '#'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// The first label of `host` that reads as an AWS region (`us-west-2`,
/// `ap-southeast-1`, `us-gov-west-1`, `cn-north-1`).
pub(super) fn region_in(host: &str) -> Option<String> {
    host.split('.').find(|l| is_region(l)).map(str::to_owned)
}

fn is_region(label: &str) -> bool {
    let parts: Vec<&str> = label.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}
