//! Unscoped packages: nmr hosts only scoped ones, so every read of an
//! unscoped name is redirected to the same path under `upstream.url`.
//!
//! The redirect carries no credentials: npm drops `Authorization` when the
//! hostname changes (docs/npm-protocol.md, "Redirects"), and nmr itself never forwards the
//! user's token anywhere. The upstream URL is configuration only.

use http::StatusCode;
use http::header::{self, HeaderValue};
use warp::reply::Response;

use crate::error::ApiError;
use crate::registry::Registry;
use crate::request::{Request, json};

/// `GET /{unscoped}...`: 302 to `{upstream.url}{path}[?query]`, or 404
/// explaining how to configure the upstream when none is set.
pub fn redirect(registry: &Registry, request: &Request) -> Result<Response, ApiError> {
    let location = upstream_location(&registry.config.upstream.url, &request.path, &request.query)
        .ok_or_else(|| {
            ApiError::not_found(
                "this registry hosts only scoped packages (@scope/name) and has no upstream \
                 registry configured for unscoped ones: set upstream.url (NMR_UPSTREAM__URL), \
                 e.g. to the output of `npm config get registry`",
            )
        })?;
    let mut response = json(StatusCode::FOUND, "{}");
    let value = HeaderValue::from_str(&location)
        .map_err(|_| ApiError::bad_request("the path cannot be redirected"))?;
    response.headers_mut().insert(header::LOCATION, value);
    Ok(response)
}

/// The upstream URL for a request `path` (with leading `/`, still
/// percent-encoded) and raw `query`; `None` when `upstream` is empty.
pub fn upstream_location(upstream: &str, path: &str, query: &str) -> Option<String> {
    if upstream.is_empty() {
        return None;
    }
    let base = upstream.trim_end_matches('/');
    let mut location = format!("{base}/{}", path.trim_start_matches('/'));
    if !query.is_empty() {
        location.push('?');
        location.push_str(query);
    }
    Some(location)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_keep_path_and_query() {
        assert_eq!(
            upstream_location("https://up.example/", "/lodash", "").unwrap(),
            "https://up.example/lodash"
        );
        assert_eq!(
            upstream_location(
                "https://up.example/npm",
                "/lodash/-/lodash-4.17.21.tgz",
                "a=1"
            )
            .unwrap(),
            "https://up.example/npm/lodash/-/lodash-4.17.21.tgz?a=1"
        );
        assert_eq!(upstream_location("", "/lodash", ""), None);
    }
}
