//! Which web pages may use this node. A browser sends `Origin` with its
//! cross-origin requests; a page is allowed when its origin is this node's
//! own, listed in `cors_origins` (with credentials: cookies reach the
//! node, and the handshake the app-nodes see), or when the list holds `*`
//! (any page, without credentials: `Access-Control-Allow-Origin: *`).
//! Requests without `Origin` (non-browser clients) are not concerned.
//! Refused origins get 403 on the polling transport and its preflights;
//! WebSocket upgrades, which CORS does not protect, are checked only when
//! `websocket_origin_check` is on. The default list is empty: no page of
//! another origin may use the node, as with Node's Socket.IO.

use http::{HeaderMap, HeaderValue, header};

/// What a request's origin may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Access {
    /// No `Origin`, or the node's own: no CORS headers needed.
    NotCrossOrigin,
    /// A listed origin: echoed back, with credentials.
    Credentialed(HeaderValue),
    /// Any origin, without credentials (`*` in the list).
    Any,
    /// Not allowed.
    Refused,
}

/// The origin policy of one node, made once from its settings.
#[derive(Debug, Clone)]
pub(crate) struct OriginPolicy {
    origins: Vec<String>,
    any: bool,
    /// `Access-Control-Allow-Headers` for preflights.
    allow_headers: HeaderValue,
    websocket_check: bool,
    secure: bool,
}

impl OriginPolicy {
    pub(crate) fn new(
        origins: &[String],
        allow_headers: &[String],
        websocket_check: bool,
        secure: bool,
    ) -> OriginPolicy {
        let allow_headers = HeaderValue::from_str(&allow_headers.join(", "))
            .unwrap_or_else(|_| HeaderValue::from_static("content-type"));
        OriginPolicy {
            any: origins.iter().any(|origin| origin == "*"),
            origins: origins.iter().filter(|o| *o != "*").cloned().collect(),
            allow_headers,
            websocket_check,
            secure,
        }
    }

    /// What the request with these headers may do.
    pub(crate) fn access(&self, headers: &HeaderMap) -> Access {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Access::NotCrossOrigin;
        };
        let Ok(text) = origin.to_str() else {
            return Access::Refused;
        };
        if self.origins.iter().any(|allowed| allowed == text) {
            return Access::Credentialed(origin.clone());
        }
        if self.is_own(text, headers) {
            return Access::NotCrossOrigin;
        }
        if self.any {
            return Access::Any;
        }
        Access::Refused
    }

    /// Whether `origin` is this node's own, as the request reached it.
    fn is_own(&self, origin: &str, headers: &HeaderMap) -> bool {
        let scheme = if self.secure { "https://" } else { "http://" };
        let host = headers
            .get(header::HOST)
            .and_then(|host| host.to_str().ok());
        host.is_some_and(|host| {
            origin
                .strip_prefix(scheme)
                .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
        })
    }

    /// Whether a refused origin is refused for this request too: always on
    /// the polling transport, on WebSocket upgrades only with the check on.
    pub(crate) fn refuses(&self, access: &Access, websocket: bool) -> bool {
        *access == Access::Refused && (!websocket || self.websocket_check)
    }

    /// The CORS headers of a response to a request with `access`.
    pub(crate) fn apply(&self, access: &Access, headers: &mut HeaderMap) {
        match access {
            Access::NotCrossOrigin | Access::Refused => return,
            Access::Credentialed(origin) => {
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
                headers.insert(header::VARY, HeaderValue::from_static("Origin"));
            }
            Access::Any => {
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                );
            }
        }
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            self.allow_headers.clone(),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        headers
    }

    fn policy(origins: &[&str], websocket_check: bool) -> OriginPolicy {
        let origins: Vec<String> = origins.iter().map(|o| o.to_string()).collect();
        OriginPolicy::new(
            &origins,
            &["content-type".into(), "x-token".into()],
            websocket_check,
            false,
        )
    }

    #[test]
    fn by_default_only_the_nodes_own_pages_and_non_browsers_get_in() {
        let policy = policy(&[], false);
        assert_eq!(
            policy.access(&request(None, "io.example:3000")),
            Access::NotCrossOrigin
        );
        assert_eq!(
            policy.access(&request(Some("http://io.example:3000"), "io.example:3000")),
            Access::NotCrossOrigin
        );
        let other = policy.access(&request(Some("http://evil.example"), "io.example:3000"));
        assert_eq!(other, Access::Refused);
        assert!(policy.refuses(&other, false), "polling refused");
        assert!(
            !policy.refuses(&other, true),
            "WebSockets unchecked by default"
        );
        // The same host on another scheme or port is another origin.
        for origin in ["https://io.example:3000", "http://io.example:3001"] {
            assert_eq!(
                policy.access(&request(Some(origin), "io.example:3000")),
                Access::Refused
            );
        }
    }

    #[test]
    fn listed_origins_get_credentials_and_a_star_gets_none() {
        let policy = policy(&["https://app.example", "*"], true);
        let listed = policy.access(&request(Some("https://app.example"), "io:1"));
        let mut headers = HeaderMap::new();
        policy.apply(&listed, &mut headers);
        assert_eq!(
            headers["access-control-allow-origin"],
            "https://app.example"
        );
        assert_eq!(headers["access-control-allow-credentials"], "true");
        assert_eq!(headers["vary"], "Origin");
        assert_eq!(
            headers["access-control-allow-headers"],
            "content-type, x-token"
        );
        let anyone = policy.access(&request(Some("https://other.example"), "io:1"));
        assert_eq!(anyone, Access::Any);
        let mut headers = HeaderMap::new();
        policy.apply(&anyone, &mut headers);
        assert_eq!(headers["access-control-allow-origin"], "*");
        assert!(!headers.contains_key("access-control-allow-credentials"));
    }

    #[test]
    fn the_websocket_check_refuses_unlisted_origins() {
        let policy = policy(&["https://app.example"], true);
        let other = policy.access(&request(Some("https://evil.example"), "io:1"));
        assert!(policy.refuses(&other, true));
        let listed = policy.access(&request(Some("https://app.example"), "io:1"));
        assert!(!policy.refuses(&listed, true));
        let native = policy.access(&request(None, "io:1"));
        assert!(!policy.refuses(&native, true));
    }
}
