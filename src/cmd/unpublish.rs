//! `npm unpublish`: `PUT /{pkg}/-rev/{rev}` with the packument minus the
//! versions to remove, and `DELETE /{pkg}/-rev/{rev}` for the whole package
//! (docs/npm-protocol.md, "unpublish").
//!
//! The `_rev` in the path must be current (409 otherwise). The metadata is
//! committed first, keeping tombstones in `time`; the tarballs are deleted
//! afterwards, so a crash in between leaves an unreferenced file, never a
//! packument naming a missing tarball.

use bytes::Bytes;
use chrono::Utc;
use http::StatusCode;
use warp::reply::Response;

use crate::cmd::{check_rev, commit, delete_tarballs, live_packument, parse_blocking, sync};
use crate::error::ApiError;
use crate::name::PackageName;
use crate::packument;
use crate::registry::Registry;
use crate::request::ok;
use crate::verify;

/// `PUT /{pkg}/-rev/{rev}`: removes the stored versions the body lacks.
pub async fn remove_versions(
    registry: &Registry,
    name: &PackageName,
    rev: &str,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = parse_blocking(registry, move || verify::WriteBody::parse(&body)).await?;
    verify::check_bound_to(&body, name)?;
    let Some(versions) = body.versions else {
        return Err(ApiError::bad_request(
            "the body has no versions object: nmr changes a package through publish, \
             dist-tag, deprecate and unpublish only (owners come from GitHub)",
        ));
    };
    let keep: Vec<String> = versions.into_keys().collect();
    let _guard = registry.store.lock(name).await;
    let (rev, removed) = sync::retrying(registry, name, || {
        Box::pin(async {
            let mut doc = live_packument(registry, name, &[])?;
            check_rev(&doc, rev)?;
            let removed = packument::unpublish_versions(&mut doc, &keep, Utc::now())?;
            if removed.is_empty() {
                return Ok((doc.rev, removed));
            }
            Ok((commit(registry, name, doc, None).await?, removed))
        })
    })
    .await?;
    if !removed.is_empty() {
        delete_tarballs(registry, name, &removed).await;
        log::info!("unpublished {} version(s) of {name}", removed.len());
    }
    Ok(ok(StatusCode::OK, name.as_str(), &rev))
}

/// `DELETE /{pkg}/-rev/{rev}`: unpublishes every version, leaving a tombstone.
pub async fn remove_package(
    registry: &Registry,
    name: &PackageName,
    rev: &str,
) -> Result<Response, ApiError> {
    let _guard = registry.store.lock(name).await;
    let (rev, removed) = sync::retrying(registry, name, || {
        Box::pin(async {
            let mut doc = live_packument(registry, name, &[])?;
            check_rev(&doc, rev)?;
            let removed = packument::unpublish_all(&mut doc, Utc::now());
            Ok((commit(registry, name, doc, None).await?, removed))
        })
    })
    .await?;
    delete_tarballs(registry, name, &removed).await;
    log::info!("unpublished {name} ({} version(s))", removed.len());
    Ok(ok(StatusCode::OK, name.as_str(), &rev))
}
