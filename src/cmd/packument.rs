//! Packument and version manifest reads: `GET /{pkg}` and
//! `GET /{pkg}/{version-or-tag-or-range}`.
//!
//! `GET /{pkg}` is the hot path (`npm install` asks for the full document,
//! docs/npm-protocol.md, "Packuments"): authorized by the dispatcher, then
//! one lookup in the document cache (`src/documents.rs`) for the rendered
//! (and, when the client accepts gzip, compressed) bytes, and headers. `Cache-Control: private, no-cache` makes every client
//! revalidate (so the next install sees a new version at once, answered by a
//! cheap 304) and keeps private packuments out of shared proxies.

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};
use warp::reply::Response;

use crate::auth::hidden;
use crate::cmd::live_packument;
use crate::documents::Variant;
use crate::error::ApiError;
use crate::name::PackageName;
use crate::packument::render_version;
use crate::registry::Registry;
use crate::request::Request;

/// The `Accept` value npm sends for the abbreviated document.
const ABBREVIATED: &str = "application/vnd.npm.install-v1+json";

/// Cache policy of packuments: revalidate every time, never in shared caches.
const PACKUMENT_CACHE_CONTROL: &str = "private, no-cache";

/// `GET /{pkg}`: the full or abbreviated packument, 304 when the client's
/// ETag is current. `?write=true` always gets the full document.
pub async fn get(
    registry: &Registry,
    request: &Request,
    name: &PackageName,
) -> Result<Response, ApiError> {
    let headers = &request.headers;
    let variant =
        if accepts(headers, header::ACCEPT, ABBREVIATED) && !request.query.contains("write=true") {
            Variant::Abbreviated
        } else {
            Variant::Full
        };
    let gzip = accepts(headers, header::ACCEPT_ENCODING, "gzip");
    let entry = registry.documents.get(name, variant).await?;
    let served = entry.as_ref().as_ref().ok_or_else(|| hidden(name))?;
    let doc = if gzip { &served.gzip } else { &served.plain };

    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .zip(doc.etag.as_ref())
        .is_some_and(|(v, etag)| etag_matches(v, etag.as_bytes()));
    // Sized for every header below up front: a map that grew partway
    // would allocate twice.
    let mut response = if not_modified {
        let mut r = Response::new(bytes::Bytes::new().into());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        *r.headers_mut() = HeaderMap::with_capacity(4);
        r
    } else {
        let len = doc.body.len();
        let mut r = Response::new(doc.body.clone().into());
        *r.headers_mut() = HeaderMap::with_capacity(7);
        let h = r.headers_mut();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        let content_type = match variant {
            Variant::Full => "application/json",
            Variant::Abbreviated => ABBREVIATED,
        };
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if gzip {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        r
    };
    let h = response.headers_mut();
    if let Some(etag) = &doc.etag {
        h.insert(header::ETAG, etag.clone());
    }
    if let Some(modified) = &doc.last_modified {
        h.insert(header::LAST_MODIFIED, modified.clone());
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(PACKUMENT_CACHE_CONTROL),
    );
    h.insert(
        header::VARY,
        HeaderValue::from_static("Accept, Accept-Encoding"),
    );
    Ok(response)
}

/// `GET /{pkg}/{spec}`: one version manifest, `spec` being a version, a
/// dist-tag or a semver range (highest match).
pub async fn get_version(
    registry: &Registry,
    name: &PackageName,
    spec: &str,
) -> Result<Response, ApiError> {
    let doc = live_packument(registry, name, &[])?;
    let version = doc
        .resolve(spec)
        .ok_or_else(|| ApiError::not_found(format!("no version of {name} matches {spec:?}")))?;
    let stored = match &doc.versions[version] {
        serde_json::Value::Null => registry
            .store
            .manifest(name, version)
            .map_err(|e| ApiError::internal(e.to_string()))?
            .ok_or_else(|| hidden(name))?,
        loaded => loaded.clone(),
    };
    let manifest = render_version(name, &stored, &registry.public_url);
    let mut response = crate::request::json(StatusCode::OK, manifest.to_string());
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(PACKUMENT_CACHE_CONTROL),
    );
    Ok(response)
}

/// Whether a request header (`Accept`, `Accept-Encoding`) lists `wanted`
/// with a weight above zero (RFC 9110 §12.4.2: `q=0`, `q=0.0`, ... mean
/// "not acceptable").
pub fn accepts(headers: &HeaderMap, name: header::HeaderName, wanted: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            parts.next().is_some_and(|v| v.eq_ignore_ascii_case(wanted))
                && !parts.any(|p| {
                    p.split_once('=').is_some_and(|(key, weight)| {
                        key.trim().eq_ignore_ascii_case("q")
                            && weight.trim().parse::<f32>().is_ok_and(|q| q == 0.0)
                    })
                })
        })
}

/// `If-None-Match` against a stored ETag, by weak comparison (RFC 9110
/// §13.1.2): `W/` is ignored, and the plain and gzip forms of one document
/// match each other. `*` matches.
pub fn etag_matches(if_none_match: &str, etag: &[u8]) -> bool {
    // What npm sends back is the ETag it was given: no work for that.
    if if_none_match.as_bytes() == etag {
        return true;
    }
    let normalise = |tag: &str| tag.trim().trim_start_matches("W/").replace("-gz\"", "\"");
    let ours = normalise(&String::from_utf8_lossy(etag));
    if_none_match
        .split(',')
        .any(|tag| tag.trim() == "*" || normalise(tag) == ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*"
                .parse()
                .unwrap(),
        );
        h.insert(header::ACCEPT_ENCODING, "gzip,deflate".parse().unwrap());
        assert!(accepts(&h, header::ACCEPT, ABBREVIATED));
        assert!(accepts(&h, header::ACCEPT_ENCODING, "gzip"));
        for refused in [
            "gzip;q=0, identity",
            "gzip; q = 0.000",
            "identity, GZIP;Q=0",
        ] {
            h.insert(header::ACCEPT_ENCODING, refused.parse().unwrap());
            assert!(!accepts(&h, header::ACCEPT_ENCODING, "gzip"), "{refused}");
        }
        h.insert(header::ACCEPT_ENCODING, "gzip;q=0.5".parse().unwrap());
        assert!(accepts(&h, header::ACCEPT_ENCODING, "gzip"));
        h.insert(header::ACCEPT, "application/json".parse().unwrap());
        assert!(!accepts(&h, header::ACCEPT, ABBREVIATED));
    }

    #[test]
    fn etags_compare_weakly() {
        let etag = b"\"3-abc-full\"";
        assert!(etag_matches("\"3-abc-full\"", etag));
        assert!(etag_matches("W/\"3-abc-full\"", etag));
        assert!(etag_matches("\"x\", \"3-abc-full-gz\"", etag));
        assert!(etag_matches("*", etag));
        assert!(!etag_matches("\"2-abc-full\"", etag));
        assert!(!etag_matches("\"3-abc-abbr\"", etag));
    }
}
