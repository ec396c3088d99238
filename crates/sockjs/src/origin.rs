//! The allow-list of browser origins that may open sessions.
//!
//! Browsers send an `Origin` header on WebSocket handshakes, cross-origin XHR and
//! EventSource requests, and POSTs. A page from an origin outside the list gets 403 and no
//! CORS headers, so another site cannot open sessions in its visitors' names. Requests
//! without an `Origin` header (non-browser clients, and the script and iframe loads of the
//! jsonp and htmlfile transports, which browsers send without one) are let through: the
//! list guards browsers, it does not authenticate. Same-origin requests (the `Origin` names
//! the host the request was sent to, as the iframe transports do) are always allowed.

/// Which origins may open sessions. The default allows any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origins(Option<Vec<Pattern>>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    /// `null`: sandboxed frames and local files.
    Null,
    Origin {
        scheme: String,
        /// The host, or its suffix (`.example.com`) when the pattern was `*.example.com`.
        host: String,
        wildcard_host: bool,
        /// `None`: no port in the origin; `Some("*")`: any port.
        port: Option<String>,
    },
}

/// Why an allow-list entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid origin {0:?}: expected *, null, or scheme://host[:port] (host may start with *., port may be *)")]
pub struct OriginError(pub String);

impl Origins {
    /// Any origin may open sessions.
    pub fn any() -> Origins {
        Origins(None)
    }

    /// Only these origins (and same-origin requests). Each entry is `*` (any: the list then
    /// allows everything), `null`, or `scheme://host[:port]`, where the host may be
    /// `*.example.com` (any subdomain) and the port `*` (any port). An empty list allows any.
    pub fn list<S: AsRef<str>>(
        entries: impl IntoIterator<Item = S>,
    ) -> Result<Origins, OriginError> {
        let mut patterns = Vec::new();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry == "*" {
                return Ok(Origins::any());
            }
            patterns.push(parse(entry).ok_or_else(|| OriginError(entry.to_owned()))?);
        }
        Ok(Origins((!patterns.is_empty()).then_some(patterns)))
    }

    /// Whether any origin is allowed.
    pub fn allows_any(&self) -> bool {
        self.0.is_none()
    }

    /// Whether a request with this `Origin` header, sent to this `Host`, may proceed.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let (Some(patterns), Some(origin)) = (&self.0, origin) else {
            return true;
        };
        if let (Some(host), Some((_, origin_host))) = (host, origin.split_once("://")) {
            if origin_host.eq_ignore_ascii_case(host) {
                return true;
            }
        }
        let Some(actual) = parse(origin) else {
            return false;
        };
        patterns.iter().any(|p| matches(p, &actual))
    }
}

fn parse(s: &str) -> Option<Pattern> {
    if s == "null" {
        return Some(Pattern::Null);
    }
    let (scheme, rest) = s.split_once("://")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if scheme.is_empty() || rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if p == "*" || (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) => {
            (h, Some(p.to_owned()))
        }
        Some(_) => return None,
        None => (rest, None),
    };
    let (host, wildcard_host) = match host.strip_prefix("*.") {
        Some(suffix) => (format!(".{suffix}"), true),
        None => (host.to_owned(), false),
    };
    if host.is_empty() || host.trim_start_matches('.').is_empty() || host.contains('*') {
        return None;
    }
    Some(Pattern::Origin {
        scheme: scheme.to_ascii_lowercase(),
        host: host.to_ascii_lowercase(),
        wildcard_host,
        port,
    })
}

fn matches(pattern: &Pattern, actual: &Pattern) -> bool {
    match (pattern, actual) {
        (Pattern::Null, Pattern::Null) => true,
        (
            Pattern::Origin {
                scheme,
                host,
                wildcard_host,
                port,
            },
            Pattern::Origin {
                scheme: a_scheme,
                host: a_host,
                port: a_port,
                ..
            },
        ) => {
            let host_ok = if *wildcard_host {
                a_host.ends_with(host.as_str())
            } else {
                a_host == host
            };
            let port_ok = match port.as_deref() {
                Some("*") => true,
                p => p == a_port.as_deref(),
            };
            scheme == a_scheme && host_ok && port_ok
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_and_a_star_allow_everything() {
        assert!(Origins::any().allows(Some("https://evil.example"), None));
        let star = Origins::list(["https://a.example", "*"]).unwrap();
        assert!(star.allows_any());
        assert!(Origins::list(Vec::<String>::new()).unwrap().allows_any());
    }

    #[test]
    fn listed_origins_match_scheme_host_and_port() {
        let o =
            Origins::list(["https://app.example.com", "http://*.dev.example:*", "null"]).unwrap();
        assert!(o.allows(Some("https://app.example.com"), None));
        assert!(o.allows(Some("HTTPS://APP.example.com"), None));
        assert!(!o.allows(Some("http://app.example.com"), None));
        assert!(!o.allows(Some("https://app.example.com:8443"), None));
        assert!(!o.allows(Some("https://app.example.com.evil"), None));
        assert!(o.allows(Some("http://a.dev.example:3000"), None));
        assert!(o.allows(Some("http://a.b.dev.example"), None));
        assert!(!o.allows(Some("http://dev.example"), None));
        assert!(!o.allows(Some("http://evildev.example"), None));
        assert!(o.allows(Some("null"), None));
        assert!(!o.allows(Some("garbage"), None));
    }

    #[test]
    fn requests_without_origin_and_same_origin_requests_pass() {
        let o = Origins::list(["https://app.example.com"]).unwrap();
        assert!(o.allows(None, Some("push.example.com")));
        assert!(o.allows(
            Some("https://push.example.com:8080"),
            Some("push.example.com:8080")
        ));
        assert!(!o.allows(Some("https://push.example.com"), Some("other.example")));
    }

    #[test]
    fn bad_entries_are_refused() {
        for bad in [
            "example.com",
            "https://",
            "https://a/b",
            "https://a:x",
            "https://*",
        ] {
            assert!(Origins::list([bad]).is_err(), "{bad}");
        }
    }
}
