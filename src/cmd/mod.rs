//! One file per npm command family. Each function gets a request the
//! dispatcher (`http.rs`) already authorized, applies the rules in
//! [`crate::packument`] under the package's lock, commits, and renders.
//! Commands import only leaf modules ([`crate::request`], [`crate::auth`],
//! the store and rules), never `http.rs`.
//!
//! | file | npm commands |
//! |---|---|
//! | `packument.rs` | install, view, outdated (packument and version reads) |
//! | `tarball.rs` | tarball download, the tarball DELETE of unpublish |
//! | `publish.rs` | publish, deprecate, undeprecate |
//! | `dist_tags.rs` | dist-tag ls / add / rm |
//! | `unpublish.rs` | unpublish of one version or the whole package |
//! | `user.rs` | whoami, legacy login, logout, profile get |
//! | `login.rs` | web login (`npm login`'s default, through GitHub) |
//! | `tokens.rs` | token list / create / revoke |
//! | `oidc.rs`, `trust.rs` | trusted publishing's exchange, `npm trust` |
//! | `upstream.rs` | every read of an unscoped package (a redirect) |
//!
//! CPU- and disk-bound work runs off the async worker threads: JSON parses
//! of write bodies through [`parse_blocking`] (at most [`PARSE_SLOTS`] at
//! once), LevelDB commits through [`commit`].

pub mod dist_tags;
pub mod login;
pub mod meta;
pub mod oidc;
pub mod packument;
pub mod publish;
pub mod sync;
pub mod tarball;
pub mod tokens;
pub mod trust;
pub mod unpublish;
pub mod upstream;
pub mod user;

use crate::auth::hidden;
use crate::error::ApiError;
use crate::github::Repo;
use crate::name::{PackageName, Version};
use crate::packument::Packument;
use crate::registry::Registry;
use crate::request::Request;
use crate::store::{Store, StoreError};
use crate::tokens::{TokenKind, TokenRecord};

/// How many write bodies are parsed at once (the machine's cores, at least
/// two): more would only queue on the blocking pool and hold their memory.
pub const PARSE_SLOTS: usize = 2;

/// The stored packument of `name` if it has live versions, else the 404 of
/// a missing package: for a write or a lookup, with the manifests of
/// `latest` and of `wanted` loaded and the others [`serde_json::Value::Null`]
/// (see [`crate::store::Store::package`]).
pub fn live_packument(
    registry: &Registry,
    name: &PackageName,
    wanted: &[&str],
) -> Result<Packument, ApiError> {
    match registry.store.package(name, wanted) {
        Ok(Some(doc)) if !doc.is_empty() => Ok(doc),
        Ok(_) => Err(hidden(name)),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

/// 409 unless `rev` is the packument's current `_rev` (optimistic locking:
/// npm sends the `_rev` it read).
pub fn check_rev(doc: &Packument, rev: &str) -> Result<(), ApiError> {
    if doc.rev != rev {
        return Err(ApiError::conflict(format!(
            "revision {rev} of {} is out of date (current is {}): fetch the package again and retry",
            doc.name, doc.rev
        )));
    }
    Ok(())
}

/// Commits `doc` as `name`'s packument, replacing what is stored
/// ([`crate::store::Store::commit`]); `binding`, when given, becomes the
/// package's GitHub repository in the same write. Under `db.type = "s3"`
/// the bucket's record is replaced first, by compare-and-swap
/// ([`sync::commit`]; run inside [`sync::retrying`]). Returns the new
/// `_rev`.
pub async fn commit(
    registry: &Registry,
    name: &PackageName,
    doc: Packument,
    binding: Option<Repo>,
) -> Result<String, ApiError> {
    let shared = match &registry.shared {
        Some(shared) => Some(sync::commit(shared, name, &doc, binding.as_ref(), None).await?),
        None => None,
    };
    write(registry, name, shared, move |store, name| {
        let removed = store.commit(name, &doc, binding.as_ref())?;
        Ok((doc.rev, removed))
    })
    .await
}

/// Commits the publish of `version`: `doc` is the publish rule's result
/// on a [`crate::store::Store::publish_view`]
/// ([`crate::store::Store::commit_publish`]; under `s3`, the bucket's
/// record first, as [`commit`]). Returns the new `_rev`.
pub async fn commit_publish(
    registry: &Registry,
    name: &PackageName,
    doc: Packument,
    version: Version,
    binding: Option<Repo>,
) -> Result<String, ApiError> {
    let shared = match &registry.shared {
        Some(shared) => {
            Some(sync::commit(shared, name, &doc, binding.as_ref(), Some(&version)).await?)
        }
        None => None,
    };
    write(registry, name, shared, move |store, name| {
        store.commit_publish(name, &doc, &version, binding.as_ref())?;
        Ok((doc.rev, Vec::new()))
    })
    .await
}

/// Runs a store write on the blocking pool (it fsyncs), recording the
/// bucket's record `shared` already committed (under `s3`) as what the
/// cache holds; then the package's cached documents and the tarballs of
/// the versions it removed are forgotten, whatever the outcome.
async fn write(
    registry: &Registry,
    name: &PackageName,
    shared: Option<(crate::shared::SharedRecord, String)>,
    apply: impl FnOnce(&Store, &PackageName) -> Result<(String, Vec<Version>), StoreError>
    + Send
    + 'static,
) -> Result<String, ApiError> {
    let store = registry.store.clone();
    let owned = name.clone();
    let result = tokio::task::spawn_blocking(move || {
        let applied = apply(&store, &owned)?;
        if let Some((record, etag)) = &shared {
            store.set_shared_state(&owned, record, etag)?;
        }
        Ok::<_, StoreError>((applied, shared))
    })
    .await;
    registry.documents.invalidate(name);
    let result = result
        .map_err(|e| ApiError::internal(format!("the commit did not finish: {e}")))
        .and_then(|r| r.map_err(|e| ApiError::internal(e.to_string())));
    let ((rev, removed), shared) = match result {
        Ok(done) => done,
        Err(e) => {
            // The bucket may hold the write the cache lacks: ask it again.
            if let Some(s) = &registry.shared {
                s.forget(name);
            }
            return Err(e);
        }
    };
    if let (Some(s), Some((record, etag))) = (&registry.shared, shared) {
        s.wrote(name, record, etag);
    }
    for version in &removed {
        registry.tarballs.remove(name, version);
    }
    Ok(rev)
}

/// Runs `parse` on the blocking pool, at most [`PARSE_SLOTS`] at once, so
/// parsing a large body never stalls the async workers serving others.
pub async fn parse_blocking<T: Send + 'static>(
    registry: &Registry,
    parse: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let _slot = registry
        .parse_slots
        .acquire()
        .await
        .map_err(|_| ApiError::unavailable("nmr is shutting down"))?;
    tokio::task::spawn_blocking(parse)
        .await
        .map_err(|e| ApiError::internal(format!("parsing the body failed: {e}")))?
}

/// Stores `repo` as the binding of `name` in place of `bound`: the same
/// repository (GitHub's id) under the name GitHub now gives it, or with the
/// ids a binding made before ids were kept lacks. Under the package's lock,
/// and only if the binding is still `bound`; on the blocking pool.
pub async fn rebind(
    registry: &Registry,
    name: &PackageName,
    bound: Option<&Repo>,
    repo: &Repo,
) -> Result<(), ApiError> {
    let _guard = registry.store.lock(name).await;
    if registry.shared.is_some() {
        // The binding is part of the bucket's record: compare-and-swap it.
        let same = |a: Option<&Repo>, b: Option<&Repo>| {
            a.map(|c| (&c.owner, &c.name, c.id)) == b.map(|c| (&c.owner, &c.name, c.id))
        };
        return sync::retrying(registry, name, || {
            Box::pin(async {
                if !same(binding(registry, name)?.as_ref(), bound) {
                    return Ok(());
                }
                let Some(doc) = registry
                    .store
                    .package(name, &[])
                    .map_err(|e| ApiError::internal(e.to_string()))?
                else {
                    return Ok(());
                };
                log::info!("{name}: its GitHub repository is now {repo}");
                commit(registry, name, doc, Some(repo.clone()))
                    .await
                    .map(|_| ())
            })
        })
        .await;
    }
    let store = registry.store.clone();
    let owned = name.clone();
    let (bound, repo) = (bound.cloned(), repo.clone());
    let result = tokio::task::spawn_blocking(move || {
        let name = owned;
        let current = store.binding(&name)?;
        if current.as_ref().map(|c| (&c.owner, &c.name, c.id))
            != bound.as_ref().map(|b| (&b.owner, &b.name, b.id))
        {
            return Ok(());
        }
        log::info!(
            "{name}: its GitHub repository {} is now {repo} (id {})",
            bound.map_or_else(String::new, |b| b.to_string()),
            repo.id.unwrap_or_default()
        );
        store.set_binding(&name, &repo)
    })
    .await;
    registry.documents.invalidate(name);
    result
        .map_err(|e| ApiError::internal(format!("the binding update did not finish: {e}")))?
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// When the request's credentials are a registry token (`nmr_...`) and
/// nmr runs under GitHub authorization, its stored record (`Some(None)`:
/// no such token); `None` otherwise (`auth.type = "none"` ignores every
/// token). A found token's use is recorded (`l/{hash}`), at most once a
/// minute per token, off the request's path.
pub async fn registry_token(
    registry: &Registry,
    request: &Request,
) -> Result<Option<Option<TokenRecord>>, ApiError> {
    let Ok(Some(c)) = &request.credentials else {
        return Ok(None);
    };
    if registry.auth.github().is_none() {
        return Ok(None);
    }
    if !crate::tokens::is_registry_token(c.token()) {
        return Ok(None);
    }
    let hash = c.hash();
    let record = meta::token(registry, &hash).await?;
    if record.is_some() {
        let now = crate::github::unix_now();
        let fresh = registry
            .token_uses
            .get(&hash)
            .is_some_and(|at| now.saturating_sub(at) < 60);
        if !fresh {
            registry.token_uses.insert(hash, now);
            let store = registry.store.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = store.token_used(&hash, now) {
                    log::warn!("cannot record a token's use: {e}");
                }
            });
        }
    }
    Ok(Some(record))
}

/// ISO 8601 (UTC, milliseconds) of `unix` seconds, as npm shows dates.
pub fn iso(unix: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(unix as i64, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Stores `record` under a fresh secret (on the blocking pool, synced) and
/// returns the secret, to be handed out once, with the record as stored
/// (its `prefix` set).
pub async fn store_new_token(
    registry: &Registry,
    mut record: TokenRecord,
) -> Result<(String, TokenRecord), ApiError> {
    let (secret, hash) = crate::tokens::generate().map_err(ApiError::internal)?;
    record.prefix = crate::tokens::mask(&secret);
    meta::put_token(registry, &hash, &record).await?;
    Ok((secret, record))
}

/// Issues a login token (`npm login`) for `user`, valid `auth.tokens.ttl`
/// seconds: its secret.
pub async fn issue_login_token(
    registry: &Registry,
    user: &crate::github::GithubUser,
) -> Result<String, ApiError> {
    tokens::check_room(registry, user.id).await?;
    let now = crate::github::unix_now();
    let record = TokenRecord {
        github_id: Some(user.id),
        ..TokenRecord::new(
            TokenKind::Login,
            &user.login,
            now,
            registry.config.auth.tokens.ttl,
        )
        .map_err(ApiError::internal)?
    };
    let (secret, record) = store_new_token(registry, record).await?;
    log::info!(
        "issued a login token to {} (GitHub id {}, key {})",
        user.login,
        user.id,
        record.key
    );
    Ok(secret)
}

/// The GitHub repository `name` is bound to, if any (cached).
pub fn binding(registry: &Registry, name: &PackageName) -> Result<Option<Repo>, ApiError> {
    registry.documents.binding(name)
}

/// Deletes the tarballs of versions whose removal is already committed. A
/// failure leaves an orphan file, never a dangling reference, so it is
/// logged rather than reported.
pub async fn delete_tarballs(registry: &Registry, name: &PackageName, versions: &[Version]) {
    if registry.shared.is_some() && registry.config.settings.allow_previous_version {
        // Another instance may publish the number again at any moment,
        // under the same key: its bytes must not be deleted, so the old
        // ones stay (never served: no record names them; a republish
        // replaces them under a claim, `sync::place_tarball`).
        return;
    }
    for version in versions {
        if let Err(e) = registry.storage.delete(name, version).await {
            log::warn!("unpublished {name}@{version} but could not delete its tarball: {e}");
        }
    }
}
