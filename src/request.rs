//! What a command sees of a request, and the reply shapes every command
//! uses. A leaf module: it depends on nothing else in nmr but `auth`'s
//! credential type, so `cmd/` and `http.rs` both build on it without
//! importing each other.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use warp::reply::Response;

use crate::auth::Credentials;

/// One parsed request, as the commands see it. The body is not here: it is
/// read only once the request is authorized, and handed to the command
/// separately.
pub struct Request {
    pub method: Method,
    /// The path below the public URL's prefix, still percent-encoded, with a
    /// leading `/`.
    pub path: String,
    /// The raw query string, without `?` (empty when none).
    pub query: String,
    pub headers: HeaderMap,
    /// The caller's token, if any (`Err`: an `Authorization` header that
    /// cannot hold a token, see [`Credentials::from_headers`]).
    pub credentials: Result<Option<Credentials>, &'static str>,
    /// The client's address: the TCP peer, or what a trusted proxy reports
    /// (see [`client_address`]).
    pub client: IpAddr,
}

/// The client's address for `peer`: the peer itself, unless it is one of
/// `trusted` proxies, in which case the right-most address of
/// `X-Forwarded-For` (across all such headers) that is not itself trusted.
/// A trusted peer that forwards no usable address is taken as the client.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for hop in forwarded.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => continue,
            Ok(ip) => return ip,
            // An unparsable hop: nothing left of it can be believed.
            Err(_) => break,
        }
    }
    peer
}

/// A JSON response with `Cache-Control: no-store` (answers to writes and
/// per-user reads must not be cached).
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response {
    let body: Bytes = body.into();
    let len = body.len();
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `{"ok": true, "id": NAME, "rev": REV}`: npm's success answer to writes.
pub fn ok(status: StatusCode, id: &str, rev: &str) -> Response {
    json(
        status,
        serde_json::json!({ "ok": true, "id": id, "rev": rev }).to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let h = forwarded(&["1.2.3.4, 10.0.0.7"]);
        // An untrusted peer's header is ignored.
        assert_eq!(client_address(ip("9.9.9.9"), &h, &trusted), ip("9.9.9.9"));
        // A trusted peer: the right-most untrusted hop.
        assert_eq!(client_address(ip("10.0.0.1"), &h, &trusted), ip("1.2.3.4"));
        // A client cannot spoof by prepending: the right-most untrusted wins.
        let h = forwarded(&["6.6.6.6", "1.2.3.4"]);
        assert_eq!(client_address(ip("10.0.0.1"), &h, &trusted), ip("1.2.3.4"));
        // Garbage stops the walk; the proxy itself is the client then.
        let h = forwarded(&["1.2.3.4, junk"]);
        assert_eq!(client_address(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.1"));
        assert_eq!(
            client_address(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
    }
}
