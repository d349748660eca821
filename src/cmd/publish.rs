//! `PUT /{pkg}`: `npm publish`, and the metadata update of `npm deprecate` /
//! `npm undeprecate` (told apart by the missing `_attachments`,
//! PROTOCOL.md §3.5).
//!
//! A publish is checked completely before anything is written
//! ([`crate::verify`]), then, under the package's lock: the version is
//! checked against the stored packument, the tarball is written (fsynced and
//! renamed into place), and only then is the packument committed. If the
//! commit fails the new tarball is removed, so a failed publish leaves
//! nothing behind.

use bytes::Bytes;
use chrono::Utc;
use http::StatusCode;
use serde_json::{Map, Value};
use warp::reply::Response;

use crate::auth::Action;
use crate::cmd::{binding, check_rev, commit, live_packument};
use crate::error::ApiError;
use crate::http::{Request, ok};
use crate::name::PackageName;
use crate::packument::{self, PublishOutcome};
use crate::registry::Registry;
use crate::verify;

/// `PUT /{pkg}`: publish a version, or apply deprecations.
pub async fn put(
    registry: &Registry,
    request: &Request,
    name: &PackageName,
    body: Bytes,
) -> Result<Response, ApiError> {
    let parsed = verify::json_object(&body)?;
    // Free the raw body (the tarball in base64) before the parsed copy is used.
    drop(body);
    let body = parsed;
    verify::check_bound_to(&body, name)?;
    let has_attachments = body
        .get("_attachments")
        .and_then(Value::as_object)
        .is_some_and(|a| !a.is_empty());
    if has_attachments {
        publish(registry, request, name, body).await
    } else if body.get("versions").is_some() {
        deprecate(registry, request, name, body).await
    } else {
        Err(ApiError::bad_request(
            "the body has neither _attachments (a publish) nor versions (a deprecation)",
        ))
    }
}

async fn publish(
    registry: &Registry,
    request: &Request,
    name: &PackageName,
    body: Map<String, Value>,
) -> Result<Response, ApiError> {
    let bound = binding(registry, name)?;
    let repository = body
        .get("versions")
        .and_then(Value::as_object)
        .and_then(|versions| versions.values().next())
        .and_then(|manifest| manifest.get("repository"))
        .cloned();
    let grant = registry
        .auth
        .authorize_publish(
            request.credentials.as_ref(),
            name,
            bound.as_ref(),
            repository.as_ref(),
        )
        .await?;
    let identity = grant.identity;
    let owned_name = name.clone();
    let verified = tokio::task::spawn_blocking(move || verify::verify_publish(&owned_name, body))
        .await
        .map_err(|e| ApiError::internal(format!("publish verification failed: {e}")))??;
    let version = verified.new.version.clone();
    let integrity = verified.new.dist.integrity.clone();

    let _guard = registry.store.lock(name).await;
    if binding(registry, name)? != bound {
        return Err(ApiError::conflict(format!(
            "the GitHub repository of {name} changed during this publish: publish again"
        )));
    }
    let previous = registry
        .store
        .packument(name)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let outcome = packument::publish(
        previous.clone(),
        name,
        verified.new,
        &identity.username,
        Utc::now(),
        registry.config.settings.allow_previous_version,
    )?;
    let doc = match outcome {
        PublishOutcome::AlreadyPublished => {
            let rev = previous.map(|p| p.rev).unwrap_or_default();
            return Ok(ok(StatusCode::OK, name.as_str(), &rev));
        }
        PublishOutcome::Published(doc) => *doc,
    };
    registry
        .storage
        .put(name, &version, verified.tarball, &integrity)
        .await
        .map_err(|e| ApiError::unavailable(format!("{e}; nothing was published")))?;
    if let Err(e) = commit(
        registry,
        name,
        previous.as_ref(),
        &doc,
        grant.binding.as_ref(),
    ) {
        crate::cmd::delete_tarballs(registry, name, std::slice::from_ref(&version)).await;
        return Err(e);
    }
    log::info!("published {name}@{version} by {}", identity.username);
    Ok(ok(StatusCode::CREATED, name.as_str(), &doc.rev))
}

async fn deprecate(
    registry: &Registry,
    request: &Request,
    name: &PackageName,
    body: Map<String, Value>,
) -> Result<Response, ApiError> {
    crate::cmd::authorize(registry, request, name, Action::Deprecate).await?;
    let Some(Value::Object(versions)) = body.get("versions") else {
        return Err(ApiError::bad_request("versions must be an object"));
    };
    let _guard = registry.store.lock(name).await;
    let previous = live_packument(registry, name)?;
    if let Some(rev) = body.get("_rev").and_then(Value::as_str) {
        check_rev(&previous, rev)?;
    }
    let mut doc = previous.clone();
    if packument::deprecate(&mut doc, versions)? {
        doc.touch(Utc::now());
        commit(registry, name, Some(&previous), &doc, None)?;
    }
    Ok(ok(StatusCode::OK, name.as_str(), &doc.rev))
}
