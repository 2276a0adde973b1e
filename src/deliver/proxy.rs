//! The HTTP(S) proxy Kinesis (and STS) requests go through.
//!
//! `kinesis.proxy` names one (`http://host:port`, with `user:password@` when the
//! proxy asks), or `"none"`; without it the usual environment variables decide:
//! `HTTPS_PROXY` for an `https://` endpoint (AWS's own), `HTTP_PROXY` for an
//! `http://` one, `ALL_PROXY` for either (each also in lower case), and
//! `NO_PROXY` / `kinesis.no_proxy` for hosts reached directly. The instance
//! metadata service (`169.254.169.254`, `fd00:ec2::254`) is always reached
//! directly. HTTPS goes through the proxy in a `CONNECT` tunnel (TLS end to end);
//! plain HTTP is forwarded.

use aws_smithy_http_client::proxy::ProxyConfig;

use super::redact::{text as redact_text, url as redact};

/// Hosts never sent through a proxy: the instance metadata service.
const ALWAYS_DIRECT: &str = "169.254.169.254,fd00:ec2::254";

/// What `kinesis.proxy` says. Its `Debug` hides the URL's userinfo, like every
/// other place it is shown: a config printed with `{:?}` shows no password.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum ProxySetting {
    /// Not set: the environment decides.
    #[default]
    FromEnvironment,
    /// `"none"`: no proxy, whatever the environment says.
    Disabled,
    /// A proxy URL.
    Url(String),
}

impl std::fmt::Debug for ProxySetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxySetting::FromEnvironment => f.write_str("FromEnvironment"),
            ProxySetting::Disabled => f.write_str("Disabled"),
            ProxySetting::Url(u) => f.debug_tuple("Url").field(&super::redact::url(u)).finish(),
        }
    }
}

impl ProxySetting {
    /// Reads the config value: absent, `"none"` or a URL.
    pub fn parse(value: Option<&str>) -> Result<ProxySetting, String> {
        match value {
            None => Ok(ProxySetting::FromEnvironment),
            Some(v) if v.eq_ignore_ascii_case("none") => Ok(ProxySetting::Disabled),
            Some(v) => {
                check_url(v)?;
                Ok(ProxySetting::Url(v.to_owned()))
            }
        }
    }
}

/// The proxy in use, for the client and the log.
#[derive(Debug, Clone)]
pub(crate) struct Proxy {
    pub config: ProxyConfig,
    /// The URL with its userinfo shown as `***`, and where it came from.
    pub shown: String,
    pub source: &'static str,
}

/// Checks a proxy URL: `http://` or `https://`, a host, and what the client
/// accepts.
fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "{:?} is not an http:// or https:// proxy URL",
            redact(url)
        ));
    }
    ProxyConfig::all(url).map(|_| ()).map_err(|e| {
        format!(
            "{:?} is not a usable proxy URL: {}",
            redact(url),
            redact_text(&e.to_string())
        )
    })
}

/// The proxy for an endpoint of this scheme, or `None` for direct connections.
/// `env` reads an environment variable (the process's, in the agent).
pub(crate) fn resolve(
    setting: &ProxySetting,
    no_proxy: Option<&str>,
    https: bool,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Proxy>, String> {
    let var = |names: &[&'static str]| {
        names.iter().find_map(|&n| {
            env(n)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (v.trim().to_owned(), n))
        })
    };
    let (url, source) = match setting {
        ProxySetting::Disabled => return Ok(None),
        ProxySetting::Url(u) => (u.clone(), "kinesis.proxy"),
        ProxySetting::FromEnvironment => {
            let names: &[&'static str] = if https {
                &["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
            } else {
                &["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
            };
            match var(names) {
                Some(found) => found,
                None => return Ok(None),
            }
        }
    };
    check_url(&url).map_err(|e| format!("{source}: {e}"))?;
    let mut direct = vec![ALWAYS_DIRECT.to_owned()];
    if let Some(n) = no_proxy {
        direct.push(n.to_owned());
    } else if let Some((n, _)) = var(&["NO_PROXY", "no_proxy"]) {
        direct.push(n);
    }
    let config = ProxyConfig::all(url.as_str())
        .map_err(|e| format!("{source}: {}", redact_text(&e.to_string())))?
        .no_proxy(direct.join(","));
    // Credentials in the URL are sent as Basic auth (`ProxyConfig::all` takes
    // them from the URL).
    Ok(Some(Proxy {
        config,
        shown: redact(&url).into_owned(),
        source,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_proxy_password() {
        let p = ProxySetting::Url("http://alice:s3cret@proxy:3128".into());
        let shown = format!("{p:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("alice"),
            "{shown}"
        );
        assert!(shown.contains("proxy:3128"), "{shown}");
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |n| {
            vars.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn the_environment_decides_by_scheme_and_the_setting_overrides_it() {
        let vars = [
            ("HTTPS_PROXY", "http://secure:3128"),
            ("http_proxy", "http://plain:3128"),
        ];
        let p = resolve(&ProxySetting::FromEnvironment, None, true, env(&vars))
            .unwrap()
            .unwrap();
        assert_eq!(
            (p.shown.as_str(), p.source),
            ("http://secure:3128", "HTTPS_PROXY")
        );
        let p = resolve(&ProxySetting::FromEnvironment, None, false, env(&vars))
            .unwrap()
            .unwrap();
        assert_eq!(
            (p.shown.as_str(), p.source),
            ("http://plain:3128", "http_proxy")
        );
        let all = [("ALL_PROXY", "http://every:1")];
        let p = resolve(&ProxySetting::FromEnvironment, None, true, env(&all))
            .unwrap()
            .unwrap();
        assert_eq!(p.source, "ALL_PROXY");
        assert!(
            resolve(&ProxySetting::FromEnvironment, None, true, env(&[]))
                .unwrap()
                .is_none()
        );
        assert!(resolve(&ProxySetting::Disabled, None, true, env(&vars))
            .unwrap()
            .is_none());
        let set = ProxySetting::Url("http://mine:8080".into());
        let p = resolve(&set, None, true, env(&vars)).unwrap().unwrap();
        assert_eq!(
            (p.shown.as_str(), p.source),
            ("http://mine:8080", "kinesis.proxy")
        );
    }

    #[test]
    fn bad_urls_are_refused_and_passwords_never_shown() {
        assert!(ProxySetting::parse(Some("proxy:3128")).is_err());
        assert!(ProxySetting::parse(Some("socks5://proxy:1080")).is_err());
        assert_eq!(
            ProxySetting::parse(Some("NONE")),
            Ok(ProxySetting::Disabled)
        );
        assert_eq!(ProxySetting::parse(None), Ok(ProxySetting::FromEnvironment));
        let bad = [("HTTPS_PROXY", "proxy.example:3128")];
        let e = resolve(&ProxySetting::FromEnvironment, None, true, env(&bad)).unwrap_err();
        assert!(e.starts_with("HTTPS_PROXY: "), "{e}");
        assert_eq!(
            redact("http://alice:s3cret@proxy:3128/x"),
            "http://***@proxy:3128/x"
        );
        assert_eq!(redact("http://proxy:3128"), "http://proxy:3128");
        let e = ProxySetting::parse(Some("ftp://alice:s3cret@proxy")).unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
    }
}
