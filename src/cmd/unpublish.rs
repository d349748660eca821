//! `npm unpublish`: `PUT /{pkg}/-rev/{rev}` with the packument minus the
//! versions to remove, and `DELETE /{pkg}/-rev/{rev}` for the whole package
//! (PROTOCOL.md §3.4).
//!
//! The `_rev` in the path must be current (409 otherwise). The metadata is
//! committed first, keeping tombstones in `time`; the tarballs are deleted
//! afterwards, so a crash in between leaves an unreferenced file, never a
//! packument naming a missing tarball.

use chrono::Utc;
use http::StatusCode;
use serde_json::Value;
use warp::reply::Response;

use crate::auth::Action;
use crate::cmd::{check_rev, commit, delete_tarballs, live_packument};
use crate::error::ApiError;
use crate::http::{Request, ok};
use crate::name::PackageName;
use crate::packument;
use crate::registry::Registry;
use crate::verify;

/// `PUT /{pkg}/-rev/{rev}`: removes the stored versions the body lacks.
pub async fn remove_versions(
    registry: &Registry,
    request: &Request,
    name: &PackageName,
    rev: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    crate::cmd::authorize(registry, request, name, Action::Unpublish).await?;
    let body = verify::json_object(body)?;
    verify::check_bound_to(&body, name)?;
    let Some(Value::Object(versions)) = body.get("versions") else {
        return Err(ApiError::bad_request(
            "the body has no versions object: nmr changes a package through publish, \
             dist-tag, deprecate and unpublish only (owners come from GitHub)",
        ));
    };
    let keep: Vec<String> = versions.keys().cloned().collect();
    let _guard = registry.store.lock(name).await;
    let previous = live_packument(registry, name)?;
    check_rev(&previous, rev)?;
    let mut doc = previous.clone();
    let removed = packument::unpublish_versions(&mut doc, &keep, Utc::now())?;
    if !removed.is_empty() {
        commit(registry, name, Some(&previous), &doc, None)?;
        delete_tarballs(registry, name, &removed).await;
        log::info!("unpublished {} version(s) of {name}", removed.len());
    }
    Ok(ok(StatusCode::OK, name.as_str(), &doc.rev))
}

/// `DELETE /{pkg}/-rev/{rev}`: unpublishes every version, leaving a tombstone.
pub async fn remove_package(
    registry: &Registry,
    request: &Request,
    name: &PackageName,
    rev: &str,
) -> Result<Response, ApiError> {
    crate::cmd::authorize(registry, request, name, Action::Unpublish).await?;
    let _guard = registry.store.lock(name).await;
    let previous = live_packument(registry, name)?;
    check_rev(&previous, rev)?;
    let mut doc = previous.clone();
    let removed = packument::unpublish_all(&mut doc, Utc::now());
    commit(registry, name, Some(&previous), &doc, None)?;
    delete_tarballs(registry, name, &removed).await;
    log::info!("unpublished {name} ({} version(s))", removed.len());
    Ok(ok(StatusCode::OK, name.as_str(), &doc.rev))
}
