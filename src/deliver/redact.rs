//! Credentials in URLs are never shown.
//!
//! A URL may carry `user:password@` (a proxy that asks for a login does; an
//! endpoint should not, and the config refuses one there). Whatever prints a URL
//! or a message that may echo one (the log at every level, `shardline status`,
//! which any local user can read, the config's problems, the SDK's errors) goes
//! through this module, so the userinfo is shown as `***` in one way everywhere.

use std::borrow::Cow;

/// What the userinfo of a URL is shown as.
pub(crate) const HIDDEN: &str = "***";

/// `url` with its userinfo shown as `***`: everything between the scheme and
/// the last `@` (a password may hold `/` or `?` unescaped, so the last `@`
/// decides, not the end of the authority). Without a scheme, everything up to
/// the last `@`.
pub(crate) fn url(url: &str) -> Cow<'_, str> {
    let Some(at) = url.rfind('@') else {
        return Cow::Borrowed(url);
    };
    let start = url.find("://").map_or(0, |i| i + 3);
    if start > at {
        return Cow::Borrowed(url);
    }
    Cow::Owned(format!("{}{HIDDEN}{}", &url[..start], &url[at..]))
}

/// Whether `url` carries a userinfo (`user@`, `user:password@`).
pub(crate) fn has_userinfo(url: &str) -> bool {
    matches!(self::url(url), Cow::Owned(_))
}

/// `text` with the userinfo of every URL in it shown as `***` (an error message
/// that quotes a URL). A URL's authority ends at `/`, `?`, `#`, white space or a
/// quote.
pub(crate) fn text(text: &str) -> Cow<'_, str> {
    let mut out = String::new();
    let mut copied = 0;
    let mut from = 0;
    while let Some(i) = text[from..].find("://") {
        let start = from + i + 3;
        let rest = &text[start..];
        let end = rest
            .find(|c: char| {
                c.is_whitespace() || matches!(c, '/' | '?' | '#' | '"' | '\'' | '`' | '<' | '>')
            })
            .unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@') {
            out.push_str(&text[copied..start]);
            out.push_str(HIDDEN);
            copied = start + at;
        }
        from = start + end;
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_userinfo_of_a_url_is_hidden_whole() {
        for (given, shown) in [
            (
                "http://alice:s3cret@proxy:3128/x",
                "http://***@proxy:3128/x",
            ),
            ("https://alice@host", "https://***@host"),
            ("https://u:p@ss/w?rd@host:443", "https://***@host:443"),
            ("alice:s3cret@proxy:3128", "***@proxy:3128"),
            ("http://proxy:3128", "http://proxy:3128"),
            ("http://[::1]:4567/", "http://[::1]:4567/"),
            ("", ""),
        ] {
            assert_eq!(url(given), shown, "{given}");
            assert_eq!(has_userinfo(given), given != shown, "{given}");
        }
    }

    #[test]
    fn every_url_in_a_message_has_its_userinfo_hidden() {
        assert_eq!(
            text("error sending request for url (http://u:p@127.0.0.1:1/): connection refused; retried https://k@h/a?b"),
            "error sending request for url (http://***@127.0.0.1:1/): connection refused; retried https://***@h/a?b"
        );
        assert_eq!(
            text("\"https://a:b@host\" and 'http://c@d'"),
            "\"https://***@host\" and 'http://***@d'"
        );
        let plain = "no url here, or one without credentials: http://host:80/p@q";
        assert!(matches!(text(plain), Cow::Borrowed(_)));
        assert_eq!(text("a mail@example.com"), "a mail@example.com");
    }
}
