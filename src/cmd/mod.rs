//! One file per npm command family. Each function authorizes the request
//! (one [`crate::auth::Auth::authorize`] call), applies the rules in
//! [`crate::packument`] under the package's lock, commits, and renders.
//!
//! | file | npm commands |
//! |---|---|
//! | `packument.rs` | install, view, outdated (packument and version reads) |
//! | `tarball.rs` | tarball download, the tarball DELETE of unpublish |
//! | `publish.rs` | publish, deprecate, undeprecate |
//! | `dist_tags.rs` | dist-tag ls / add / rm |
//! | `unpublish.rs` | unpublish of one version or the whole package |
//! | `user.rs` | whoami, logout |
//! | `upstream.rs` | every read of an unscoped package (a redirect) |

pub mod dist_tags;
pub mod packument;
pub mod publish;
pub mod tarball;
pub mod unpublish;
pub mod upstream;
pub mod user;

use crate::auth::{Action, Auth, Identity};
use crate::error::ApiError;
use crate::github::Repo;
use crate::http::Request;
use crate::name::{PackageName, Version};
use crate::packument::Packument;
use crate::registry::Registry;

/// The 404 for a package that does not exist or that the caller cannot see.
pub fn package_not_found(name: &PackageName) -> ApiError {
    ApiError::not_found(format!("package {name} not found"))
}

/// The stored packument of `name` if it has live versions, else 404.
pub fn live_packument(registry: &Registry, name: &PackageName) -> Result<Packument, ApiError> {
    match registry.store.packument(name) {
        Ok(Some(doc)) if !doc.is_empty() => Ok(doc),
        Ok(_) => Err(package_not_found(name)),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

/// 409 unless `rev` is the packument's current `_rev` (optimistic locking
/// for unpublish: npm sends the `_rev` it read).
pub fn check_rev(doc: &Packument, rev: &str) -> Result<(), ApiError> {
    if doc.rev != rev {
        return Err(ApiError::conflict(format!(
            "revision {rev} of {} is out of date (current is {}): fetch the package again and retry",
            doc.name, doc.rev
        )));
    }
    Ok(())
}

/// Commits `doc` as `name`'s packument, replacing `previous`; `binding`,
/// when given, becomes the package's GitHub repository in the same write.
pub fn commit(
    registry: &Registry,
    name: &PackageName,
    previous: Option<&Packument>,
    doc: &Packument,
    binding: Option<&Repo>,
) -> Result<(), ApiError> {
    registry
        .store
        .commit(name, previous, doc, binding)
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// The GitHub repository `name` is bound to, if any.
pub fn binding(registry: &Registry, name: &PackageName) -> Result<Option<Repo>, ApiError> {
    registry
        .store
        .binding(name)
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// The request's one authorization decision for `action` on `name`
/// (see [`crate::auth::Auth::authorize`]).
pub async fn authorize(
    registry: &Registry,
    request: &Request,
    name: &PackageName,
    action: Action,
) -> Result<Identity, ApiError> {
    // Only GitHub authorization looks at the binding: skip the lookup otherwise.
    let binding = match registry.auth {
        Auth::None => None,
        Auth::Github(_) => binding(registry, name)?,
    };
    registry
        .auth
        .authorize(request.credentials.as_ref(), name, binding.as_ref(), action)
        .await
}

/// Deletes the tarballs of versions whose removal is already committed. A
/// failure leaves an orphan file, never a dangling reference, so it is
/// logged rather than reported.
pub async fn delete_tarballs(registry: &Registry, name: &PackageName, versions: &[Version]) {
    for version in versions {
        if let Err(e) = registry.storage.delete(name, version).await {
            log::warn!("unpublished {name}@{version} but could not delete its tarball: {e}");
        }
    }
}
