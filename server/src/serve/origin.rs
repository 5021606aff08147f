//! Which `Host` a request may name, and where a browser's write may come from.
//!
//! A web page can reach a server on the visitor's loopback through the browser: by DNS rebinding
//! (the page's own name re-pointed at 127.0.0.1, so its requests carry that name as `Host` and
//! count as same-origin to the browser) or by a plain cross-site form POST. So every request must
//! name this server in `Host`, and every write from a browser must come from this server's own
//! origin. Both hold in every auth mode: under `--no-auth` they are all that stands between a web
//! page and an admin.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::uri::Authority;
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::serve::error::ApiError;
use crate::serve::state::AppState;

/// The names a server answers to.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    /// The listening address; its port is the one bound (0 where no socket was bound, as for the
    /// in-process router of the fuzz target: then any port).
    bind: SocketAddr,
    /// `--allowed-host` values, lowercased: `NAME` (any port) or `NAME:PORT`.
    names: Vec<String>,
}

impl HostPolicy {
    pub fn new(bind: SocketAddr, names: &[String]) -> Self {
        HostPolicy {
            bind,
            names: names
                .iter()
                .map(|n| n.trim().to_ascii_lowercase())
                .collect(),
        }
    }

    fn port_matches(&self, port: Option<u16>) -> bool {
        // No port: the client reached us on its scheme's default port, through a proxy or a port
        // forward; only a different explicit port says the request was meant for another server.
        self.bind.port() == 0 || port.is_none_or(|p| p == self.bind.port())
    }

    /// Whether `authority` (a `Host` header's value) names this server.
    pub fn allows(&self, authority: &str) -> bool {
        let Ok(parsed) = authority.parse::<Authority>() else {
            return false;
        };
        let host = parsed.host().to_ascii_lowercase();
        let port = parsed.port_u16();
        let with_port = match port {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        if self.names.iter().any(|n| *n == host || *n == with_port) {
            return true;
        }
        let bind = self.bind.ip();
        let loopback_or_any = bind.is_loopback() || bind.is_unspecified();
        if host == "localhost" {
            return loopback_or_any && self.port_matches(port);
        }
        let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        else {
            // A DNS name not configured: what a rebinding page sends.
            return false;
        };
        // An address typed as such cannot be rebound: it names this machine only if the
        // connection reached us. A server bound to every address accepts every one of its own;
        // on loopback, every loopback form.
        let ours = ip == bind || bind.is_unspecified() || (bind.is_loopback() && ip.is_loopback());
        ours && self.port_matches(port)
    }
}

fn refuse(message: String) -> Response {
    ApiError::forbidden(message).into_response()
}

/// The middleware: a `Host` that is not ours, or a browser's write from another origin, is 403.
pub async fn check(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let policy = &state.settings.hosts;
    // HTTP/2 carries the authority in the URI rather than a Host header.
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()));
    // Browsers always send a Host; a request without one is a script's, which no web page can
    // make.
    if let Some(host) = &host {
        if !policy.allows(host) {
            return refuse(format!(
                "Host {host:?} is not a name of this server (serve with --allowed-host NAME to answer to it)"
            ));
        }
    }
    let writes = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if writes {
        let headers = request.headers();
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            // `https://name:port` → `name:port`; "null" (sandboxed frames, file: pages) has none.
            let authority = origin
                .split_once("://")
                .map(|(_, rest)| rest.trim_end_matches('/'));
            let same = match (authority, &host) {
                (Some(authority), Some(host)) => authority.eq_ignore_ascii_case(host),
                (Some(authority), None) => policy.allows(authority),
                (None, _) => false,
            };
            if !same {
                return refuse(format!(
                    "a change from the web page at {origin:?} is refused: only this server's own pages may send one"
                ));
            }
        } else if let Some(site) = headers.get("sec-fetch-site") {
            // A browser that left Origin out still says where the request comes from.
            if matches!(site.to_str(), Ok("cross-site" | "same-site")) {
                return refuse(
                    "a change from another site's web page is refused (Sec-Fetch-Site)".into(),
                );
            }
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(bind: &str, names: &[&str]) -> HostPolicy {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        HostPolicy::new(bind.parse().unwrap(), &names)
    }

    #[test]
    fn loopback_accepts_its_own_forms_on_its_port() {
        let p = policy("127.0.0.1:8080", &[]);
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST:8080",
            "[::1]:8080",
            "127.0.0.1",
        ] {
            assert!(p.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "evil.example",
            "localhost:9090",
            "127.0.0.1:9090",
            "192.168.1.5:8080",
            "localhost.evil.example:8080",
            "",
        ] {
            assert!(!p.allows(bad), "{bad}");
        }
    }

    #[test]
    fn every_address_bind_accepts_addresses_and_configured_names_only() {
        let p = policy(
            "0.0.0.0:8080",
            &["glmtune.example.org", "Other.Example:443"],
        );
        for ok in [
            "192.168.1.5:8080",
            "10.0.0.2",
            "localhost:8080",
            "glmtune.example.org",
            "GLMTUNE.example.org:8080",
            "other.example:443",
        ] {
            assert!(p.allows(ok), "{ok}");
        }
        for bad in ["evil.example", "other.example:444", "192.168.1.5:9999"] {
            assert!(!p.allows(bad), "{bad}");
        }
    }

    #[test]
    fn a_specific_address_accepts_itself_not_localhost() {
        let p = policy("192.168.1.5:8080", &[]);
        assert!(p.allows("192.168.1.5:8080"));
        assert!(!p.allows("localhost:8080"));
        assert!(!p.allows("10.0.0.2:8080"));
    }
}
