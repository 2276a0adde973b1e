//! `[kinesis]` and the `[[destination]]` blocks: the default destination (the
//! first Kinesis flow's stream, else the first flow's Firehose stream), the
//! regions and endpoints the agent used for each service, the role, and how
//! each Firehose stream's lines are packed.
//!
//! A Kinesis stream is written with `[kinesis]`'s settings. Every Firehose
//! stream other than the default gets a block of its own: the agent's Firehose
//! client has its own endpoint (and us-east-1 without one), shardline's
//! `[kinesis]` endpoint serves one service only, packing is per stream, and a
//! block does not inherit the role, so the role is repeated in each.

use super::delivery::smallest;
use super::endpoints::{self, Endpoint};
use super::general::General;
use super::out::{self, Section};
use super::read::{integer, text, Flow, Object, Target};

/// `[kinesis]`, and the `[[destination]]` blocks.
pub(super) fn sections(
    root: &Object,
    flows: &[Flow],
    general: &General,
) -> (Section, Vec<Section>) {
    let kinesis_ep = endpoints::kinesis(root);
    let firehose_ep = endpoints::firehose(root);
    let default = flows
        .iter()
        .find(|f| !f.target.is_firehose())
        .unwrap_or(&flows[0])
        .target
        .clone();
    let mut k = Section::new("[kinesis]");
    let mut out = Vec::new();
    match &default {
        Target::Kinesis(name) => {
            k.key_noted(
                "stream",
                out::string(name),
                "the first Kinesis flow's: the default destination",
            );
            endpoint(&mut k, &kinesis_ep);
            if kinesis_ep.region.is_none() && kinesis_ep.url.is_none() {
                k.comment("No kinesis.region nor kinesis.endpoint: the region comes from the environment (AWS_REGION, the profile, the instance), as for the agent.");
            }
        }
        Target::Firehose(name) => {
            k.key_noted(
                "delivery_stream",
                out::string(name),
                "the first flow's: the default destination",
            );
            endpoint(&mut k, &firehose_ep);
            packing(name, flows, &mut k);
        }
    }
    for (key, value, note) in general.role.iter().chain(&general.request_timeout) {
        k.key_noted(key, value.clone(), note);
    }
    unused_endpoints(root, flows, &mut k);
    let mut seen: Vec<&str> = vec![default.name()];
    for f in flows {
        let Target::Firehose(name) = &f.target else {
            continue;
        };
        if seen.contains(&name.as_str()) {
            continue;
        }
        seen.push(name);
        let mut d = Section::new("[[destination]]");
        d.key("delivery_stream", out::string(name));
        endpoint(&mut d, &firehose_ep);
        if firehose_ep.region.is_none() {
            d.comment("firehose.endpoint names no region: the region is [kinesis]'s.");
        }
        if !general.role.is_empty() {
            d.comment("The role again: a block does not inherit [kinesis]'s.");
        }
        for (key, value, note) in &general.role {
            d.key_noted(key, value.clone(), note);
        }
        packing(name, flows, &mut d);
        out.push(d);
    }
    (k, out)
}

/// `region` and `endpoint` of a section.
fn endpoint(s: &mut Section, ep: &Endpoint) {
    if let Some(r) = &ep.region {
        s.key_noted("region", out::string(r), &ep.region_note);
    }
    if let Some(u) = &ep.url {
        s.key_noted("endpoint", out::string(u), &ep.url_note);
    }
}

/// An endpoint for a service no flow writes.
fn unused_endpoints(root: &Object, flows: &[Flow], k: &mut Section) {
    for (key, firehose) in [("kinesis.endpoint", false), ("firehose.endpoint", true)] {
        if let Some(url) = text(root, key) {
            if !flows.iter().any(|f| f.target.is_firehose() == firehose) {
                k.comment(&format!(
                    "{key} {url}: no flow writes to that service, so it is not used."
                ));
            }
        }
    }
}

/// How the Firehose stream `name` packs lines: as the agent did for the flows
/// that write it (`aggregatedRecordSizeBytes`; the agent never packs a
/// multiline flow's records).
fn packing(name: &str, flows: &[Flow], s: &mut Section) {
    let mine: Vec<&Flow> = flows
        .iter()
        .filter(|f| f.target == Target::Firehose(name.to_owned()))
        .collect();
    let packs = mine.iter().all(|f| {
        integer(f.map, "aggregatedRecordSizeBytes").unwrap_or(0) > 0
            && text(f.map, "multiLineStartPattern").is_none()
    });
    if !packs {
        s.key_noted(
            "packing",
            "false".into(),
            "the agent sent one line (or multiline record) per Firehose record",
        );
        s.comment("packing = true (shardline's default) puts many lines in one Firehose record, billed far less where the destination reads lines (S3); keep false where each record must be one event (a transformation Lambda function, OpenSearch).");
        if let Some((ms, _)) = smallest(&mine, "maxBufferAgeMillis") {
            s.comment(&format!("maxBufferAgeMillis {ms}: shardline sends a Firehose batch as soon as it has lines, without waiting."));
        }
        return;
    }
    if let Some((bytes, differ)) = smallest(&mine, "aggregatedRecordSizeBytes") {
        let note = if differ {
            "the smallest aggregatedRecordSizeBytes of its flows"
        } else {
            "aggregatedRecordSizeBytes"
        };
        s.key_noted("packing_max_bytes", bytes.min(1_024_000).to_string(), note);
    }
    if let Some((ms, differ)) = smallest(&mine, "maxBufferAgeMillis") {
        let note = if differ {
            "the smallest maxBufferAgeMillis of its flows"
        } else {
            "maxBufferAgeMillis"
        };
        s.key_noted("packing_linger_ms", ms.max(1).to_string(), note);
    }
}
