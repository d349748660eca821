//! Tarball download, `GET /@scope/name/-/name-1.0.0.tgz`, and the
//! `DELETE .../name-1.0.0.tgz/-rev/REV` step of `npm unpublish`.
//!
//! A tarball is served only when the file name is this package's and its
//! version is live in the packument (one LevelDB lookup), then streamed from
//! storage, or, for S3 with `storage.s3.redirect`, answered with a 302 to a
//! presigned URL (after the same authorization; `Cache-Control: no-store`, as
//! the URL expires). Tarballs are immutable, so clients may keep them for a year;
//! without `public`, a shared cache keeps one only for requests that carried
//! no credentials, so a private package's bytes never land in a proxy that
//! would hand them to others.

use http::StatusCode;
use http::header::{self, HeaderValue};
use warp::Reply;
use warp::reply::Response;

use crate::cmd::{check_rev, live_packument};
use crate::error::ApiError;
use crate::name::PackageName;
use crate::registry::Registry;
use crate::request::json;
use crate::storage::Fetched;

/// `Cache-Control` of tarballs: immutable content.
const TARBALL_CACHE_CONTROL: &str = "max-age=31536000, immutable";

/// `GET /{pkg}/-/{file}`: streams the tarball.
pub async fn get(
    registry: &Registry,
    name: &PackageName,
    file: &str,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found(format!("tarball {file} of {name} not found"));
    let version = name.version_of_tarball(file).ok_or_else(not_found)?;
    if !registry.store.has_version(name, &version) {
        return Err(not_found());
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
    let mut response = warp::reply::stream(download.body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(download.length));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(TARBALL_CACHE_CONTROL),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
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
    let doc = live_packument(registry, name)?;
    check_rev(&doc, rev)?;
    Ok(json(StatusCode::OK, r#"{"ok":true}"#))
}
