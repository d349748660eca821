//! Tarball download, `GET /@scope/name/-/name-1.0.0.tgz`, and the
//! `DELETE .../name-1.0.0.tgz/-rev/REV` step of `npm unpublish`.
//!
//! A tarball is served only when the file name is this package's and its
//! version is live in the packument (one LevelDB lookup, or a hit in the
//! tarball cache, which holds live versions only), then from memory or
//! streamed from storage, or, for S3 with `storage.s3.redirect`, answered with a 302 to a
//! presigned URL (after the same authorization; `Cache-Control: no-store`, as
//! the URL expires). Tarballs are immutable, so clients may keep them for a year;
//! without `public`, a shared cache keeps one only for requests that carried
//! no credentials, so a private package's bytes never land in a proxy that
//! would hand them to others.

use http::StatusCode;
use http::header::{self, HeaderValue};
use warp::Reply;
use warp::reply::Response;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::cmd::packument::etag_matches;
use crate::cmd::{check_rev, live_packument};
use crate::error::ApiError;
use crate::name::{PackageName, Version};
use crate::registry::Registry;
use crate::request::{Request, json};
use crate::storage::Fetched;
use crate::storage::cache::{Cached, MAX_CACHED_TARBALL};

/// `Cache-Control` of tarballs: immutable content.
const TARBALL_CACHE_CONTROL: &str = "max-age=31536000, immutable";

/// `GET /{pkg}/-/{file}`: the tarball, with `ETag: "SHASUM"`; 304 when
/// `If-None-Match` names it (`npm install --prefer-online` revalidates
/// every cached tarball). A small tarball is served from memory once read
/// ([`crate::storage::cache`]), a larger one streamed.
pub async fn get(
    registry: &Registry,
    request: &Request,
    name: &PackageName,
    file: &str,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found(format!("tarball {file} of {name} not found"));
    let version = name.version_of_tarball(file).ok_or_else(not_found)?;
    let if_none_match = request
        .headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    if let Some(hit) = registry.tarballs.get(name, &version) {
        return Ok(respond(
            if_none_match,
            hit.etag,
            Some(Body::Bytes(hit.bytes)),
        ));
    }
    // Boxed: the storage read's future is large, and every request's future
    // would otherwise be as large (a future is copied whole when it moves).
    Box::pin(from_storage(registry, name, file, version, if_none_match)).await
}

/// A tarball not in the cache: its `shasum` from the version index, then
/// its bytes from storage (kept in the cache when small) or a redirect.
async fn from_storage(
    registry: &Registry,
    name: &PackageName,
    file: &str,
    version: Version,
    if_none_match: Option<&str>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found(format!("tarball {file} of {name} not found"));
    let shasum = registry
        .store
        .tarball_shasum(name, &version)
        .ok_or_else(not_found)?;
    let etag = Bytes::from(format!("\"{shasum}\""));
    if if_none_match.is_some_and(|v| etag_matches(v, &etag)) {
        return Ok(respond(if_none_match, etag, None));
    }
    let fetched = registry
        .storage
        .get(name, &version)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?
        .ok_or_else(|| {
            log::error!(
                "{name}@{version} is in the packument but its tarball is missing from storage"
            );
            not_found()
        })?;
    let download = match fetched {
        Fetched::Stream(download) => download,
        Fetched::Redirect(url) => {
            let mut response = json(StatusCode::FOUND, "{}");
            let location = HeaderValue::from_str(&url)
                .map_err(|_| ApiError::internal("the presigned URL is not a valid header"))?;
            response.headers_mut().insert(header::LOCATION, location);
            // The URL expires: json() already says no-store.
            return Ok(response);
        }
    };
    if download.length > MAX_CACHED_TARBALL {
        return Ok(respond(None, etag, Some(Body::Stream(download))));
    }
    let mut bytes = BytesMut::with_capacity(download.length as usize);
    let mut body = download.body;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::unavailable(format!(
                "reading the tarball of {name}@{version} failed: {e}"
            ))
        })?;
        bytes.extend_from_slice(&chunk);
        if bytes.len() as u64 > MAX_CACHED_TARBALL {
            return Err(ApiError::internal(format!(
                "the tarball of {name}@{version} is longer than stored"
            )));
        }
    }
    let cached = Cached {
        bytes: bytes.freeze(),
        etag,
    };
    registry.tarballs.insert(name, &version, cached.clone());
    Ok(respond(None, cached.etag, Some(Body::Bytes(cached.bytes))))
}

/// A tarball body: from memory or streamed.
enum Body {
    Bytes(Bytes),
    Stream(crate::storage::Download),
}

/// The tarball response: 304 when `if_none_match` names `etag` (or
/// `body` is `None`), else 200 with `body`; both with the validator and
/// the immutable cache policy.
fn respond(if_none_match: Option<&str>, etag: Bytes, body: Option<Body>) -> Response {
    let fresh = if_none_match.is_some_and(|v| etag_matches(v, &etag));
    let mut response = match body {
        Some(Body::Bytes(bytes)) if !fresh => {
            let len = bytes.len();
            let mut r = Response::new(bytes.into());
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            r
        }
        Some(Body::Stream(download)) if !fresh => {
            let mut r = warp::reply::stream(download.body).into_response();
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(download.length));
            r
        }
        _ => {
            let mut r = Response::new(Bytes::new().into());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r
        }
    };
    let ok = response.status() == StatusCode::OK;
    let h = response.headers_mut();
    if ok {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
    }
    if let Ok(etag) = HeaderValue::from_maybe_shared(etag) {
        h.insert(header::ETAG, etag);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(TARBALL_CACHE_CONTROL),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `DELETE /{pkg}/-/{file}/-rev/{rev}`: the last step of a one-version
/// unpublish (docs/npm-protocol.md, "unpublish"). The tarball was already
/// deleted with its version (a live version's tarball is never deleted
/// here), so this checks that `rev` is the current `_rev` (409 otherwise, as
/// the other `-rev` routes do) and answers success.
pub async fn delete(
    registry: &Registry,
    name: &PackageName,
    rev: &str,
) -> Result<Response, ApiError> {
    let doc = live_packument(registry, name, &[])?;
    check_rev(&doc, rev)?;
    Ok(json(StatusCode::OK, r#"{"ok":true}"#))
}
