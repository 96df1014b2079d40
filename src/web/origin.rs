//! The `Origin` check: a browser page may open a connection (WebSocket,
//! long-poll, SSE, a form post) only from an origin the host trusts.
//!
//! - Same origin is always allowed: the `Origin`'s host and port equal the
//!   request's `Host` (a missing port means the scheme's default).
//! - `allowed_origins` adds origins (`https://app.example.com`,
//!   `http://localhost:5173`); `*` allows every origin and must be
//!   configured explicitly.
//! - A request without `Origin` is not from a browser page (browsers send it
//!   on every WebSocket handshake and every cross-origin request) and is
//!   allowed, unless `Sec-Fetch-Site: cross-site` says otherwise.
//! - `Origin: null` (sandboxed frames, `file:` pages) is never same-origin.
//!
//! Proxy headers (`Forwarded`, `X-Forwarded-Host`) are not trusted: a proxy
//! in front of roomhost must pass `Host` through or the page's origin must
//! be listed.

use axum::http::{HeaderMap, header};

/// An origin reduced to what is compared: scheme, host and port.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// Parses `scheme://host[:port]` (no path, query or userinfo).
    pub(crate) fn parse(text: &str) -> Option<Origin> {
        let text = text.trim();
        let (scheme, rest) = text.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default = default_port(&scheme)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
            return None;
        }
        let (host, port) = split_host_port(rest)?;
        Some(Origin {
            scheme,
            host,
            port: port.unwrap_or(default),
        })
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// `host[:port]` or `[v6][:port]`, host lowercased.
fn split_host_port(text: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(v6) = text.strip_prefix('[') {
        let (host, rest) = v6.split_once(']')?;
        let port = match rest {
            "" => None,
            rest => Some(rest.strip_prefix(':')?),
        };
        (format!("[{}]", host.to_ascii_lowercase()), port)
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host.to_ascii_lowercase(), Some(port)),
            None => (text.to_ascii_lowercase(), None),
        }
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    Some((host, port))
}

/// Checks that an `allowed_origins` entry is `*` or a valid origin.
pub(crate) fn validate_allowed(entry: &str) -> Result<(), String> {
    if entry.trim() == "*" || Origin::parse(entry).is_some() {
        Ok(())
    } else {
        Err(format!(
            "allowed origin {entry:?}: expected `*` or scheme://host[:port], e.g. https://chat.example.com"
        ))
    }
}

/// `Ok` if the request may connect; otherwise the reason for the 403.
pub(crate) fn check(allowed: &[String], headers: &HeaderMap) -> Result<(), String> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        let cross_site = headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"));
        if cross_site && !allowed.iter().any(|a| a.trim() == "*") {
            return Err("cross-site request refused (Sec-Fetch-Site: cross-site)".into());
        }
        return Ok(());
    };
    if allowed.iter().any(|a| a.trim() == "*") {
        return Ok(());
    }
    let text = origin.to_str().unwrap_or("");
    let refused = || {
        let shown: String = text.chars().take(100).collect();
        Err(format!(
            "origin {shown:?} not allowed: same-origin only, or list it with --allowed-origins"
        ))
    };
    let Some(parsed) = Origin::parse(text) else {
        return refused();
    };
    let same_origin = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(split_host_port)
        .is_some_and(|(host, port)| {
            host == parsed.host
                && port.unwrap_or(default_port(&parsed.scheme).unwrap_or(0)) == parsed.port
        });
    if same_origin
        || allowed
            .iter()
            .filter_map(|a| Origin::parse(a))
            .any(|a| a == parsed)
    {
        return Ok(());
    }
    refused()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn origins_parse() {
        let o = Origin::parse("HTTPS://Chat.Example.com").unwrap();
        assert_eq!(
            (o.scheme.as_str(), o.host.as_str(), o.port),
            ("https", "chat.example.com", 443)
        );
        assert_eq!(Origin::parse("http://[::1]:4000").unwrap().host, "[::1]");
        assert_eq!(Origin::parse("http://a:8080/").unwrap().port, 8080);
        for bad in [
            "null",
            "a.com",
            "ftp://a",
            "http://",
            "http://a/b",
            "http://a:x",
            "http://u@a",
        ] {
            assert_eq!(Origin::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn same_origin_is_allowed_and_cross_origin_is_not() {
        let same = headers(&[
            ("host", "127.0.0.1:4000"),
            ("origin", "http://127.0.0.1:4000"),
        ]);
        assert!(check(&[], &same).is_ok());
        let default_port = headers(&[
            ("host", "chat.example.com"),
            ("origin", "https://chat.example.com"),
        ]);
        assert!(check(&[], &default_port).is_ok());
        let other_port = headers(&[
            ("host", "127.0.0.1:4000"),
            ("origin", "http://127.0.0.1:5000"),
        ]);
        assert!(check(&[], &other_port).unwrap_err().contains("not allowed"));
        let evil = headers(&[
            ("host", "127.0.0.1:4000"),
            ("origin", "http://evil.example"),
        ]);
        assert!(check(&[], &evil).is_err());
        let null = headers(&[("host", "127.0.0.1:4000"), ("origin", "null")]);
        assert!(check(&[], &null).is_err());
    }

    #[test]
    fn listed_origins_and_star() {
        let allowed = vec!["https://app.example.com".to_string()];
        let listed = headers(&[
            ("host", "api.example.com"),
            ("origin", "https://app.example.com"),
        ]);
        assert!(check(&allowed, &listed).is_ok());
        let http = headers(&[
            ("host", "api.example.com"),
            ("origin", "http://app.example.com"),
        ]);
        assert!(check(&allowed, &http).is_err(), "scheme and port count");
        let star = vec!["*".to_string()];
        assert!(check(&star, &http).is_ok());
    }

    #[test]
    fn no_origin_is_allowed_unless_marked_cross_site() {
        assert!(check(&[], &headers(&[("host", "a")])).is_ok());
        let cross = headers(&[("host", "a"), ("sec-fetch-site", "cross-site")]);
        assert!(check(&[], &cross).is_err());
        assert!(check(&["*".into()], &cross).is_ok());
    }

    #[test]
    fn allowed_entries_are_validated() {
        assert!(validate_allowed("*").is_ok());
        assert!(validate_allowed("http://localhost:5173").is_ok());
        assert!(validate_allowed("localhost").is_err());
    }
}
