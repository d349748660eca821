//! `PUT /{pkg}`: `npm publish`, and the metadata update of `npm deprecate` /
//! `npm undeprecate` (told apart by the missing `_attachments`,
//! docs/npm-protocol.md, "deprecate").
//!
//! The dispatcher has already required push on the bound repo (or let a
//! first publish through to be decided here). A publish is then checked
//! completely before anything is written ([`crate::verify`]), its
//! `repository` weighed ([`crate::auth::Auth::authorize_publish`]), and,
//! under the package's lock: the version is checked against the stored
//! packument, the tarball is written (fsynced and renamed into place), and
//! only then is the packument committed. If the commit fails the new tarball
//! is removed, so a failed publish leaves nothing behind.

use bytes::Bytes;
use chrono::Utc;
use http::StatusCode;
use serde_json::Value;
use warp::reply::Response;

use crate::auth::Access;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cmd::{
    binding, check_rev, commit, commit_publish, live_packument, parse_blocking, sync,
};
use crate::error::ApiError;
use crate::name::PackageName;
use crate::packument::{self, PublishOutcome};
use crate::registry::Registry;
use crate::request::{Request, ok};
use crate::verify::{self, WriteBody};

/// `PUT /{pkg}`: publish a version, or apply deprecations.
pub async fn put(
    registry: &Registry,
    request: &Request,
    access: Access,
    name: &PackageName,
    body: Bytes,
) -> Result<Response, ApiError> {
    // The raw body (the tarball in base64) is freed once parsed.
    let body = parse_blocking(registry, move || WriteBody::parse(&body)).await?;
    verify::check_bound_to(&body, name)?;
    if body.has_attachments() {
        publish(registry, request, access, name, body).await
    } else if body.versions.is_some() {
        deprecate(registry, access, name, body).await
    } else {
        Err(ApiError::bad_request(
            "the body has neither _attachments (a publish) nor versions (a deprecation)",
        ))
    }
}

async fn publish(
    registry: &Registry,
    request: &Request,
    access: Access,
    name: &PackageName,
    body: WriteBody,
) -> Result<Response, ApiError> {
    let bound = access.binding.clone();
    let trusted_publisher = access.token.as_ref().and_then(|t| t.publisher.clone());
    let repository: Option<Value> = body
        .versions
        .as_ref()
        .and_then(|versions| versions.values().next())
        .and_then(|raw| {
            #[derive(serde::Deserialize)]
            struct Repository {
                repository: Option<Value>,
            }
            serde_json::from_str::<Repository>(raw.get()).ok()
        })
        .and_then(|r| r.repository);
    // An existing package bound to no repo is adopted by its rules.
    let unbound = match (&registry.auth, &access.binding) {
        (crate::auth::Auth::None, _) | (_, Some(_)) => None,
        (_, None) => registry
            .store
            .package(name, &[])
            .map_err(|e| ApiError::internal(e.to_string()))?,
    };
    let stored_repository = unbound.as_ref().map(|doc| {
        doc.latest_manifest()
            .and_then(|manifest| manifest.get("repository"))
    });
    let grant = registry
        .auth
        .authorize_publish(
            access,
            &request.credentials,
            name,
            repository.as_ref(),
            stored_repository,
        )
        .await?;
    let identity = grant.identity;
    let owned_name = name.clone();
    let settings = registry.config.settings.clone();
    let verified = parse_blocking(registry, move || {
        verify::verify_publish(&owned_name, body, &settings)
    })
    .await?;
    let mut verified = verified;
    verified.new.trusted_publisher = trusted_publisher;
    let version = verified.new.version.clone();
    let integrity = verified.new.dist.integrity.clone();

    let _guard = registry.store.lock(name).await;
    // Under db.type = "s3", whether this publish wrote the tarball's key
    // (kept across attempts: `sync::place_tarball`).
    let created = AtomicBool::new(false);
    let attempt = || {
        let new = verified.new.clone();
        let (bound, binding_to, created) = (&bound, grant.binding.clone(), &created);
        let (version, integrity, identity, tarball) =
            (&version, &integrity, &identity, &verified.tarball);
        Box::pin(async move {
            if binding(registry, name)? != *bound {
                return Err(ApiError::conflict(format!(
                    "the GitHub repository of {name} changed during this publish: publish again"
                )));
            }
            let previous = registry
                .store
                .publish_view(name, version)
                .map_err(|e| ApiError::internal(e.to_string()))?;
            let previous_rev = previous.as_ref().map(|p| p.rev.clone());
            let outcome = packument::publish(
                previous,
                name,
                new,
                &identity.username,
                Utc::now(),
                registry.config.settings.allow_previous_version,
            )?;
            let doc = match outcome {
                PublishOutcome::AlreadyPublished => {
                    let rev = previous_rev.unwrap_or_default();
                    return Ok(ok(StatusCode::OK, name.as_str(), &rev));
                }
                PublishOutcome::Published(doc) => *doc,
            };
            if let Some(shared) = &registry.shared {
                // The bucket is shared: a losing writer must never touch
                // the winner's bytes, so no overwrite and no delete here.
                sync::check_claim(shared, name, version, integrity)?;
                let wrote = created.load(Ordering::Relaxed);
                sync::place_tarball(registry, shared, name, version, tarball, integrity, wrote)
                    .await?;
                let rev = commit_publish(registry, name, doc, version.clone(), binding_to).await?;
                return Ok(ok(StatusCode::CREATED, name.as_str(), &rev));
            }
            registry
                .storage
                .put(name, version, tarball.clone(), integrity)
                .await
                .map_err(|e| ApiError::unavailable(format!("{e}; nothing was published")))?;
            let rev = match commit_publish(registry, name, doc, version.clone(), binding_to).await {
                Ok(rev) => rev,
                Err(e) => {
                    crate::cmd::delete_tarballs(registry, name, std::slice::from_ref(version))
                        .await;
                    return Err(e);
                }
            };
            Ok(ok(StatusCode::CREATED, name.as_str(), &rev))
        }) as sync::Attempt<'_, Response>
    };
    // Under s3 the tarball goes up create-only while the package's state
    // is read (`sync::early_tarball`).
    let early = async {
        if registry.shared.is_some() {
            sync::early_tarball(
                registry,
                name,
                &version,
                &verified.tarball,
                &integrity,
                &created,
            )
            .await?;
        }
        Ok(())
    };
    let response = sync::retrying_with(registry, name, early, attempt).await?;
    if response.status() == StatusCode::CREATED {
        log::info!("published {name}@{version} by {}", identity.username);
    }
    Ok(response)
}

async fn deprecate(
    registry: &Registry,
    access: Access,
    name: &PackageName,
    body: WriteBody,
) -> Result<Response, ApiError> {
    // A publish may create a package; a deprecation only changes a bound one.
    registry.auth.require_binding(&access, name)?;
    if access.token.as_ref().is_some_and(|t| !t.is_user()) {
        return Err(ApiError::forbidden(format!(
            "a token exchanged in GitHub Actions may publish new versions of {name}, not deprecate them"
        )));
    }
    let versions = body.deprecations()?;
    let _guard = registry.store.lock(name).await;
    let wanted: Vec<&str> = versions.keys().map(String::as_str).collect();
    let rev = sync::retrying(registry, name, || {
        Box::pin(async {
            let mut doc = live_packument(registry, name, &wanted)?;
            if let Some(rev) = body.rev() {
                check_rev(&doc, &rev)?;
            }
            if packument::deprecate(&mut doc, &versions)? {
                doc.touch(Utc::now());
                commit(registry, name, doc, None).await
            } else {
                Ok(doc.rev)
            }
        })
    })
    .await?;
    Ok(ok(StatusCode::OK, name.as_str(), &rev))
}
