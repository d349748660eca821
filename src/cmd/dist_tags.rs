//! `npm dist-tag ls / add / rm`: `GET /-/package/{pkg}/dist-tags`, `PUT` and
//! `DELETE /-/package/{pkg}/dist-tags/{tag}` (docs/npm-protocol.md,
//! "dist-tag"). The PUT body
//! is a JSON string: the version the tag points at.

use chrono::Utc;
use http::StatusCode;
use http::header::{self, HeaderValue};
use warp::reply::Response;

use crate::cmd::{commit, live_packument, sync};
use crate::error::ApiError;
use crate::name::PackageName;
use crate::packument;
use crate::registry::Registry;
use crate::request::{json, ok};

/// `GET /-/package/{pkg}/dist-tags` → `{"latest": "1.2.0", ...}`, never
/// cached (npm reads it before changing a tag).
pub async fn list(registry: &Registry, name: &PackageName) -> Result<Response, ApiError> {
    let doc = live_packument(registry, name, &[])?;
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
    name: &PackageName,
    tag: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
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
    name: &PackageName,
    tag: &str,
) -> Result<Response, ApiError> {
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
    edit: impl Fn(&mut packument::Packument) -> Result<(), ApiError> + Sync,
) -> Result<Response, ApiError> {
    let _guard = registry.store.lock(name).await;
    let rev = sync::retrying(registry, name, || {
        Box::pin(async {
            let mut doc = live_packument(registry, name, &[])?;
            let before = doc.rev.clone();
            edit(&mut doc)?;
            if doc.rev != before {
                commit(registry, name, doc, None).await
            } else {
                Ok(doc.rev)
            }
        })
    })
    .await?;
    Ok(ok(StatusCode::OK, name.as_str(), &rev))
}
