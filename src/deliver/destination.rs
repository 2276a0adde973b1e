//! Where a stream's records go and as whom: its region, endpoint, credentials
//! profile and the role assumed to write to it.
//!
//! `[kinesis]` is the default destination; a `[[destination]]` block gives one
//! stream its own. This file holds what a destination is and the checks of its
//! names; the clients made from destinations are in `clients` (one per
//! destination) and `kinesis` (the SDK client).

/// Session name of an assumed role when the config names none.
pub(crate) const DEFAULT_SESSION_NAME: &str = "shardline";

/// A stream's destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Destination {
    /// AWS region; `None`: the aws-config chain (`AWS_REGION`, the profile, IMDS).
    pub region: Option<String>,
    /// Endpoint override (an emulator, a VPC endpoint).
    pub endpoint: Option<String>,
    /// Profile of `~/.aws/credentials` / `~/.aws/config` the credentials (or, with
    /// a role, the credentials that assume it) come from; `None`: the default
    /// chain (environment, profile, web identity, ECS, instance role).
    pub profile: Option<String>,
    /// A role assumed with those credentials; its credentials sign the requests.
    pub role: Option<AssumeRole>,
}

/// An IAM role to assume through STS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRole {
    pub role_arn: String,
    /// The external id the role's trust policy asks for.
    pub external_id: Option<String>,
    pub session_name: String,
    /// STS endpoint override; `None`: the region's STS endpoint.
    pub sts_endpoint: Option<String>,
}

impl Destination {
    /// A short description for the log and `shardline status`.
    pub fn describe(&self) -> String {
        let mut out = self
            .region
            .clone()
            .unwrap_or_else(|| "default region".into());
        if let Some(e) = &self.endpoint {
            out.push_str(&format!(" at {}", super::redact::url(e)));
        }
        if let Some(p) = &self.profile {
            out.push_str(&format!(", profile {p}"));
        }
        if let Some(r) = &self.role {
            out.push_str(&format!(", as {}", r.role_arn));
        }
        out
    }
}

/// Checks an IAM role ARN: `arn:<partition>:iam::<12-digit account>:role/<path/name>`.
pub(crate) fn check_role_arn(arn: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{arn:?} is not an IAM role ARN ({why})"));
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts[..] else {
        return bad("expected arn:aws:iam::123456789012:role/name");
    };
    if prefix != "arn" {
        return bad("it does not start with arn:");
    }
    if partition.is_empty()
        || !partition
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '-')
    {
        return bad("the partition is not aws, aws-cn, aws-us-gov, ...");
    }
    if service != "iam" || !region.is_empty() {
        return bad("expected arn:<partition>:iam::<account>:role/<name>");
    }
    if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
        return bad("the account is not 12 digits");
    }
    let Some(name) = resource.strip_prefix("role/") else {
        return bad("the resource is not role/<name>");
    };
    let valid = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c);
    let last = name.rsplit('/').next().unwrap_or_default();
    if last.is_empty() || last.len() > 64 || !name.chars().all(valid) {
        return bad("the role name is not 1-64 characters of a-z, A-Z, 0-9, +=,.@_-");
    }
    Ok(())
}

/// Checks a role session name: 2-64 characters of `[\w+=,.@-]`.
pub(crate) fn check_session_name(name: &str) -> Result<(), String> {
    let valid = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
    if (2..=64).contains(&name.len()) && name.chars().all(valid) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a role session name (2-64 characters of a-z, A-Z, 0-9, +=,.@_-)"
        ))
    }
}

/// Checks an external id: 2-1224 characters of `[\w+=,.@:/-]`.
pub(crate) fn check_external_id(id: &str) -> Result<(), String> {
    let valid = |c: char| c.is_ascii_alphanumeric() || "+=,.@:/_-".contains(c);
    if (2..=1224).contains(&id.len()) && id.chars().all(valid) {
        Ok(())
    } else {
        Err("it is not 2-1224 characters of a-z, A-Z, 0-9, +=,.@:/_-".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_are_checked() {
        for good in [
            "arn:aws:iam::123456789012:role/shardline-writer",
            "arn:aws-cn:iam::123456789012:role/ops/logs/writer",
            "arn:aws-us-gov:iam::000000000000:role/a+b=c,d.e@f_g-h",
        ] {
            assert_eq!(check_role_arn(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("shardline-writer", "expected arn:aws:iam"),
            ("arn:aws:iam::12345678901:role/w", "12 digits"),
            ("arn:aws:iam::123456789012:user/w", "role/<name>"),
            (
                "arn:aws:sts::123456789012:role/w",
                "expected arn:<partition>:iam",
            ),
            (
                "arn:aws:iam:us-east-1:123456789012:role/w",
                "expected arn:<partition>:iam",
            ),
            ("arn:aws:iam::123456789012:role/", "role name"),
            ("arn:aws:iam::123456789012:role/a b", "role name"),
            ("arn:AWS:iam::123456789012:role/w", "partition"),
            ("urn:aws:iam::123456789012:role/w", "arn:"),
        ] {
            let e = check_role_arn(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn session_names_and_external_ids_are_checked() {
        assert!(check_session_name("shardline-web-1").is_ok());
        assert!(check_session_name("x").is_err());
        assert!(check_session_name("has space").is_err());
        assert!(check_session_name(&"a".repeat(65)).is_err());
        assert!(check_external_id("tenant:42/logs").is_ok());
        assert!(check_external_id("a").is_err());
        assert!(check_external_id("no spaces").is_err());
    }

    #[test]
    fn a_destination_describes_itself() {
        let d = Destination {
            region: Some("eu-west-1".into()),
            endpoint: None,
            profile: Some("audit".into()),
            role: Some(AssumeRole {
                role_arn: "arn:aws:iam::123456789012:role/w".into(),
                external_id: None,
                session_name: DEFAULT_SESSION_NAME.into(),
                sts_endpoint: None,
            }),
        };
        assert_eq!(
            d.describe(),
            "eu-west-1, profile audit, as arn:aws:iam::123456789012:role/w"
        );
        assert_eq!(Destination::default().describe(), "default region");
    }

    /// Regression (issue 22, N4): `user:pass@` in the endpoint was shown in the
    /// log and in `shardline status`.
    #[test]
    fn a_description_hides_the_endpoint_userinfo() {
        let d = Destination {
            region: Some("eu-west-1".into()),
            endpoint: Some("https://alice:s3cret@kinesis.example:443/".into()),
            ..Destination::default()
        };
        assert_eq!(
            d.describe(),
            "eu-west-1 at https://***@kinesis.example:443/"
        );
    }
}
