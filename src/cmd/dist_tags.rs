//! `npm dist-tag ls / add / rm`: `GET /-/package/{pkg}/dist-tags`, `PUT` and
//! `DELETE /-/package/{pkg}/dist-tags/{tag}` (PROTOCOL.md §3.6). The PUT body
//! is a JSON string: the version the tag points at.

use chrono::Utc;
use http::StatusCode;
use http::header::{self, HeaderValue};
use warp::reply::Response;

use crate::auth::Action;
use crate::cmd::{commit, live_packument};
use crate::error::ApiError;
use crate::http::{Request, json, ok};
use crate::name::PackageName;
use crate::packument;
use crate::registry::Registry;

/// `GET /-/package/{pkg}/dist-tags` → `{"latest": "1.2.0", ...}`, never
/// cached (npm reads it before changing a tag).
pub async fn list(
    registry: &Registry,
    request: &Request,
    name: &PackageName,
) -> Result<Response, ApiError> {
    crate::cmd::authorize(registry, request, name, Action::Read).await?;
    let doc = live_packument(registry, name)?;
    let mut response = json(
        StatusCode::OK,
        serde_json::to_string(&doc.dist_tags).unwrap_or_default(),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// `PUT /-/package/{pkg}/dist-tags/{tag}` with body `"1.0.0"`.
pub async fn add(
    registry: &Registry,
    request: &Request,
    name: &PackageName,
    tag: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    crate::cmd::authorize(registry, request, name, Action::DistTag).await?;
    let version: String = serde_json::from_slice(body).map_err(|_| {
        ApiError::bad_request("the body must be a JSON string naming a version, e.g. \"1.0.0\"")
    })?;
    change(registry, name, |doc| {
        packument::set_tag(doc, tag, &version, Utc::now())
    })
    .await
}

/// `DELETE /-/package/{pkg}/dist-tags/{tag}`.
pub async fn remove(
    registry: &Registry,
    request: &Request,
    name: &PackageName,
    tag: &str,
) -> Result<Response, ApiError> {
    crate::cmd::authorize(registry, request, name, Action::DistTag).await?;
    change(registry, name, |doc| {
        packument::remove_tag(doc, tag, Utc::now())
    })
    .await
}

/// Applies `edit` to the live packument under the package's lock and
/// commits it if the revision changed.
async fn change(
    registry: &Registry,
    name: &PackageName,
    edit: impl FnOnce(&mut packument::Packument) -> Result<(), ApiError>,
) -> Result<Response, ApiError> {
    let _guard = registry.store.lock(name).await;
    let previous = live_packument(registry, name)?;
    let mut doc = previous.clone();
    edit(&mut doc)?;
    if doc.rev != previous.rev {
        commit(registry, name, Some(&previous), &doc, None)?;
    }
    Ok(ok(StatusCode::OK, name.as_str(), &doc.rev))
}
