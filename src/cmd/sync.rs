//! Under `db.type = "s3"`: keeping this instance's LevelDB in step with the
//! bucket, and committing writes to the bucket by compare-and-swap
//! (`src/shared.rs` owns the objects; ARCHITECTURE.md, "Several
//! instances", states the protocol). Under `db.type = "local"` every
//! function here does nothing and the store is the truth.
//!
//! The package's lock (`Store::lock`) is held while the cache is brought
//! in step and while a write runs, so this instance asks S3 about one
//! package once at a time and its cache always equals the state it
//! remembers ([`Shared::remember`] comes after the cache holds it).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use serde_json::Value;

use crate::error::ApiError;
use crate::github::Repo;
use crate::name::{PackageName, Version};
use crate::packument::Packument;
use crate::registry::Registry;
use crate::shared::{Claim, Shared, SharedError, SharedRecord, State};
use crate::store::{Store, StoreError};

/// Attempts of one write before it answers 409 (each after a 412).
pub const MAX_ATTEMPTS: u32 = 10;

/// One attempt of a write (see [`retrying`]).
pub type Attempt<'a, T> = Pin<Box<dyn Future<Output = Result<T, ApiError>> + Send + 'a>>;

/// Manifests fetched from S3 at once when a record brings new versions.
const FETCHES: usize = 8;

/// The message of a write that lost a compare-and-swap race; [`retrying`]
/// tries again rather than answer it.
const LOST_RACE: &str = "another instance changed this package at the same moment";

/// The error of a lost race (retried by [`retrying`]).
pub fn lost_race() -> ApiError {
    ApiError::conflict(LOST_RACE)
}

/// A shared-metadata failure as the client sees it: 503 naming the
/// storage, or a lost race.
pub fn to_api(e: SharedError) -> ApiError {
    match e {
        SharedError::Conflict => lost_race(),
        SharedError::Unavailable(message) => ApiError::unavailable(format!(
            "the metadata storage is unavailable ({message}): nothing was changed; try again"
        ))
        .retry_after(5),
    }
}

/// Makes sure this instance's cache of `name` was validated against S3
/// within `db.s3.max_staleness` (for a read; a no-op under `local`). When
/// it was not, takes the package's lock and revalidates: one conditional
/// GET, and the manifests a changed record brings. Every package route
/// passes here before its authorization reads the binding (`http.rs`).
/// A package this instance knows nothing of costs `client` one lookup of
/// its budget ([`Shared::first_lookup`]: 429 when spent).
pub async fn fresh(
    registry: &Registry,
    name: &PackageName,
    client: std::net::IpAddr,
) -> Result<(), ApiError> {
    let Some(shared) = &registry.shared else {
        return Ok(());
    };
    if shared.fresh(name).is_some() {
        return Ok(());
    }
    shared.first_lookup(name, client).map_err(|wait| {
        ApiError::new(
            http::StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many lookups of unknown packages from your address: try again in {wait} s"
            ),
        )
        .retry_after(wait)
    })?;
    let _guard = registry.store.lock(name).await;
    if shared.fresh(name).is_some() {
        // Revalidated by whoever held the lock.
        return Ok(());
    }
    revalidate(registry, shared, name).await.map(|_| ())
}

/// Revalidates `name` with S3 and applies a changed record to the cache
/// (the caller holds the package's lock).
async fn revalidate(
    registry: &Registry,
    shared: &Shared,
    name: &PackageName,
) -> Result<Arc<State>, ApiError> {
    let known = match shared.known(name) {
        Some(state) => state.current.clone(),
        None => registry
            .store
            .shared_state(name)
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map(|(record, etag)| (Arc::new(record), etag)),
    };
    let (state, changed) = shared
        .revalidate(name, known.clone())
        .await
        .map_err(to_api)?;
    if changed {
        apply(
            registry,
            shared,
            name,
            &state,
            known.as_ref().map(|k| &*k.0),
        )
        .await?;
    }
    Ok(shared.remember(name, state))
}

/// Writes `state`'s record into the cache: fetches the manifests that
/// `known` (what the cache holds) lacks or holds under another hash.
async fn apply(
    registry: &Registry,
    shared: &Shared,
    name: &PackageName,
    state: &State,
    known: Option<&SharedRecord>,
) -> Result<(), ApiError> {
    let Some((record, etag)) = &state.current else {
        // The bucket is the truth: its record was deleted there, or this
        // cache came from another bucket or prefix.
        log::warn!(
            "{name} is in this instance's cache (db.path) but not in the bucket: \
             removed from the cache, no longer served"
        );
        let owned = name.clone();
        return update_cache(registry, name, move |store| store.forget(&owned)).await;
    };
    let have = known.map(SharedRecord::hashes).unwrap_or_default();
    // Inline manifests first (checked against their hashes), then GETs.
    let mut manifests: HashMap<String, Value> = HashMap::new();
    let hashes = record.hashes();
    for (v, manifest) in &record.inline {
        if have.get(v.as_str()) != hashes.get(v.as_str())
            && SharedRecord::inline_matches(&hashes, v, manifest)
        {
            manifests.insert(v.clone(), manifest.clone());
        }
    }
    let fetches: Vec<_> = record
        .versions
        .iter()
        .filter(|(v, h)| have.get(v.as_str()) != Some(&h.as_str()) && !manifests.contains_key(v))
        .map(|(v, hash)| fetch_manifest(shared, name, v.clone(), hash.clone()))
        .collect();
    let fetched: Vec<(String, Value)> = futures_util::stream::iter(fetches)
        .buffer_unordered(FETCHES)
        .try_collect()
        .await?;
    manifests.extend(fetched);
    let (owned, record, etag) = (name.clone(), record.clone(), etag.clone());
    update_cache(registry, name, move |store| {
        store.apply_shared(&owned, &record, manifests, &etag)
    })
    .await
}

/// Runs `change` of `name`'s records in the cache off the async workers,
/// then drops the served documents and the cached tarballs of the
/// versions it removed.
async fn update_cache(
    registry: &Registry,
    name: &PackageName,
    change: impl FnOnce(&Store) -> Result<Vec<Version>, StoreError> + Send + 'static,
) -> Result<(), ApiError> {
    let store = registry.store.clone();
    let removed = tokio::task::spawn_blocking(move || change(&store))
        .await
        .map_err(|e| ApiError::internal(format!("updating the cache did not finish: {e}")))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    registry.documents.invalidate(name);
    for version in &removed {
        registry.tarballs.remove(name, version);
    }
    Ok(())
}

/// The manifest of `name@v` stored under `hash`, parsed.
async fn fetch_manifest(
    shared: &Shared,
    name: &PackageName,
    v: String,
    hash: String,
) -> Result<(String, Value), ApiError> {
    let bytes = shared.manifest(name, &v, &hash).await.map_err(to_api)?;
    let manifest: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::internal(format!("the manifest of {name}@{v} in S3 is corrupt: {e}"))
    })?;
    Ok((v, manifest))
}

/// Runs a write's `attempt` (read, apply the rule, commit) under the
/// package's lock, which the caller holds. Under `s3`, the cache is
/// revalidated first, and an attempt that lost a race (412)
/// is retried on a revalidated cache, after a growing, jittered pause, up
/// to [`MAX_ATTEMPTS`] times; then 409 asks the client to retry.
///
/// The attempt's future is boxed (`Box::pin(async { ... })`): a generic
/// future borrowing the request defeats the compiler's proof that the
/// handler's future is `Send`.
pub async fn retrying<'a, T>(
    registry: &Registry,
    name: &PackageName,
    attempt: impl FnMut() -> Attempt<'a, T>,
) -> Result<T, ApiError> {
    retrying_with(registry, name, async { Ok(()) }, attempt).await
}

/// [`retrying`] with `beside`, work that does not depend on the package's
/// state, run at the same time as the first revalidation (a publish's
/// create-only tarball upload: [`early_tarball`]).
pub async fn retrying_with<'a, T>(
    registry: &Registry,
    name: &PackageName,
    beside: impl Future<Output = Result<(), ApiError>>,
    mut attempt: impl FnMut() -> Attempt<'a, T>,
) -> Result<T, ApiError> {
    let Some(shared) = &registry.shared else {
        return attempt().await;
    };
    let (revalidated, besides) = tokio::join!(revalidate(registry, shared, name), beside);
    revalidated?;
    besides?;
    // Every attempt starts from a revalidated cache (one conditional GET,
    // 304 when unchanged): behind a load balancer the previous write often
    // went through another instance, and a stale base would cost a lost
    // race instead. The first one ran beside `beside`.
    for n in 0..MAX_ATTEMPTS {
        if n > 0 {
            revalidate(registry, shared, name).await?;
        }
        match attempt().await {
            Err(e) if e.message == LOST_RACE => {
                let base = 10u64 << n.min(5);
                let jitter = crate::shared::random_u64() % base;
                tokio::time::sleep(Duration::from_millis(base + jitter)).await;
            }
            done => return done,
        }
    }
    Err(ApiError::conflict(format!(
        "{name} was changed through other instances {MAX_ATTEMPTS} times during this write: retry it"
    ))
    .retry_after(1))
}

/// Unix seconds now.
fn now() -> u64 {
    crate::github::unix_now()
}

/// The record this instance last validated for `name` and its ETag (the
/// base of a compare-and-swap).
fn base(shared: &Shared, name: &PackageName) -> Option<(Arc<SharedRecord>, String)> {
    shared.known(name).and_then(|s| s.current.clone())
}

/// Commits `doc` to S3 as `name`'s record by compare-and-swap on the
/// record last validated: every version of `doc` (a
/// [`Value::Null`] manifest keeps its stored one), or, for the publish of
/// `published`, the base's versions and that one. Uploads the manifests
/// that changed. Returns the new record and its ETag; a lost race is
/// [`lost_race`].
pub async fn commit(
    shared: &Arc<Shared>,
    name: &PackageName,
    doc: &Packument,
    binding: Option<&Repo>,
    published: Option<&Version>,
) -> Result<(SharedRecord, String), ApiError> {
    let base = base(shared, name);
    let (record, times) =
        crate::store::record_parts(name, doc).map_err(|e| ApiError::internal(e.to_string()))?;
    // One map, not a scan per version: a dist-tag change on a package of
    // thousands of versions looks every one up.
    let base_hashes = base.as_ref().map(|(b, _)| b.hashes()).unwrap_or_default();
    let hash_of = |v: &str| base_hashes.get(v).map(|h| h.to_string());
    let upload = |v: String, manifest: &Value| {
        let json = serde_json::to_vec(manifest);
        let stored = hash_of(&v);
        async move {
            let json = json.map_err(|e| ApiError::internal(format!("{name}@{v}: {e}")))?;
            if stored.as_deref() == Some(&crate::shared::short_hash(&json)) {
                return Ok((v, stored.unwrap_or_default()));
            }
            let hash = shared.put_manifest(name, &v, json).await.map_err(to_api)?;
            Ok::<_, ApiError>((v, hash))
        }
    };
    // Entries of `list` (version first) but `v`'s.
    let without = |list: Option<&Vec<(String, String)>>, v: &str| -> Vec<(String, String)> {
        list.map(|l| l.iter().filter(|(have, _)| have != v).cloned().collect())
            .unwrap_or_default()
    };
    let mut own = None;
    let (versions, times) = match published {
        Some(version) => {
            let v = version.as_str();
            let manifest = doc.versions.get(v).ok_or_else(|| {
                ApiError::internal(format!("the publish of {name}@{v} lacks its manifest"))
            })?;
            let at = doc.time.get(v).and_then(Value::as_str).unwrap_or_default();
            // Carried inline; its own object goes up after the record.
            let json = serde_json::to_vec(manifest)
                .map_err(|e| ApiError::internal(format!("{name}@{v}: {e}")))?;
            let hash = crate::shared::short_hash(&json);
            own = Some((v.to_string(), manifest.clone(), json));
            let mut versions = without(base.as_ref().map(|(b, _)| &b.versions), v);
            versions.push((v.to_string(), hash));
            let mut all_times = without(base.as_ref().map(|(b, _)| &b.times), v);
            all_times.push((v.to_string(), at.to_string()));
            (versions, all_times)
        }
        None => {
            let mut versions = Vec::with_capacity(doc.versions.len());
            let mut uploads = Vec::new();
            for (v, manifest) in &doc.versions {
                if manifest.is_null() {
                    let hash = hash_of(v).ok_or_else(|| {
                        ApiError::internal(format!("the manifest of {name}@{v} is not in S3"))
                    })?;
                    versions.push((v.clone(), hash));
                } else {
                    versions.push((v.clone(), String::new()));
                    uploads.push(upload(v.clone(), manifest));
                }
            }
            let uploaded: HashMap<String, String> = futures_util::future::try_join_all(uploads)
                .await?
                .into_iter()
                .collect();
            for (v, hash) in &mut versions {
                if hash.is_empty() {
                    *hash = uploaded.get(v).cloned().unwrap_or_default();
                }
            }
            (versions, times)
        }
    };
    // The inline manifests still named, with the same hash, then this
    // publish's. Past MAX_INLINE, the oldest are written out first, down to
    // half (all at once, so one step every few publishes, not each).
    let named: HashMap<&str, &str> = versions
        .iter()
        .map(|(v, h)| (v.as_str(), h.as_str()))
        .collect();
    let mut inline: Vec<(String, Value)> = base
        .as_ref()
        .map(|(b, _)| {
            b.inline
                .iter()
                .filter(|(v, m)| {
                    Some(v.as_str()) != own.as_ref().map(|o| o.0.as_str())
                        && SharedRecord::inline_matches(&named, v, m)
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if let Some((v, manifest, _)) = &own {
        inline.push((v.clone(), manifest.clone()));
    }
    if inline.len() > crate::shared::MAX_INLINE {
        let out = inline.len() - crate::shared::MAX_INLINE / 2;
        // Stored for real (not `upload`, which skips a manifest whose hash
        // is unchanged: an inline one may have no object yet).
        let mut flushes = Vec::with_capacity(out);
        for (v, m) in &inline[..out] {
            let json = serde_json::to_vec(m)
                .map_err(|e| ApiError::internal(format!("{name}@{v}: {e}")))?;
            flushes.push(shared.put_manifest(name, v, json));
        }
        futures_util::future::try_join_all(flushes)
            .await
            .map_err(to_api)?;
        inline.drain(..out);
    }
    let now = now();
    let claims = base
        .as_ref()
        .map(|(b, _)| {
            b.claims
                .iter()
                .filter(|(v, c)| {
                    Some(v.as_str()) != published.map(Version::as_str) && c.expires > now
                })
                .map(|(v, c)| (v.clone(), c.clone()))
                .collect()
        })
        .unwrap_or_default();
    let next = SharedRecord {
        record,
        versions,
        times,
        binding: binding
            .cloned()
            .or_else(|| base.as_ref().and_then(|(b, _)| b.binding.clone())),
        claims,
        inline,
        writer: crate::shared::random_id(),
    };
    let etag = shared
        .put_record(name, &next, base.as_ref().map(|(_, e)| e.as_str()))
        .await
        .map_err(to_api)?;
    if let Some((v, _, json)) = own {
        // The publish's own manifest object, after the answer: the record
        // carries it inline until a writer pushes it out, which stores it
        // then unless this instance already did.
        let (shared, name) = (shared.clone(), name.clone());
        tokio::spawn(async move {
            if let Err(e) = shared.put_manifest(&name, &v, json).await {
                log::debug!("{name}@{v}'s manifest stays inline for now: {e}");
            }
        });
    }
    Ok((next, etag))
}

/// Whether another publisher holds a live claim on `version`: 409 when
/// its tarball differs from `integrity`, a retry (it will be published
/// with these same bytes) when it is the same.
pub fn check_claim(
    shared: &Shared,
    name: &PackageName,
    version: &Version,
    integrity: &str,
) -> Result<(), ApiError> {
    let Some((record, _)) = base(shared, name) else {
        return Ok(());
    };
    match record.claims.get(version.as_str()) {
        Some(c) if c.owner != shared.instance && c.expires > now() => {
            if c.integrity == integrity {
                Err(lost_race())
            } else {
                Err(ApiError::conflict(format!(
                    "{name}@{version} is being published with other contents through another instance: \
                     publish a new version"
                )))
            }
        }
        _ => Ok(()),
    }
}

/// The first, create-only upload of a publish's tarball, before the rule
/// has seen the package's state (so at the same time as its revalidation):
/// `created` says whether it landed. Harmless whatever the rule then
/// decides: it never replaces bytes, and bytes it leaves under a version
/// no record names are an orphan, never served (a later publish of that
/// number claims and replaces them, [`place_tarball`]).
pub async fn early_tarball(
    registry: &Registry,
    name: &PackageName,
    version: &Version,
    tarball: &Bytes,
    integrity: &str,
    created: &std::sync::atomic::AtomicBool,
) -> Result<(), ApiError> {
    let crate::storage::Storage::S3(s3) = &registry.storage else {
        return Ok(());
    };
    match s3
        .put_mode(
            name,
            version,
            tarball.clone(),
            integrity,
            object_store::PutMode::Create,
        )
        .await
    {
        Ok(()) => {
            created.store(true, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }
        Err(crate::storage::s3::PutFailure::Taken) => Ok(()),
        Err(crate::storage::s3::PutFailure::Other(e)) => {
            Err(ApiError::unavailable(format!("{e}; nothing was published")))
        }
    }
}

/// Makes sure the key of a publish's tarball holds its bytes, so that a
/// losing writer never replaces or deletes the winner's: when
/// [`early_tarball`] created it (`created`) and nobody claimed the version
/// since, it does; when the key was taken (a racing or crashed publisher
/// of the same version), claims the version in the record (or renews this
/// instance's claim when less than half of `db.s3.claim_timeout` is left),
/// then keeps identical bytes or replaces others conditionally on the ETag
/// read, within a quarter of `claim_timeout` (503 past it), so the replace
/// is over before the claim can expire (ARCHITECTURE.md, "Publishing one
/// version from two instances"). Call after [`check_claim`].
pub async fn place_tarball(
    registry: &Registry,
    shared: &Shared,
    name: &PackageName,
    version: &Version,
    tarball: &Bytes,
    integrity: &str,
    created: bool,
) -> Result<(), ApiError> {
    let crate::storage::Storage::S3(s3) = &registry.storage else {
        return Err(ApiError::internal(
            "db.type = \"s3\" needs storage.type = \"s3\"",
        ));
    };
    let (record, etag) = base(shared, name).unzip();
    let claimed = record
        .as_ref()
        .and_then(|r| r.claims.get(version.as_str()).cloned());
    if claimed.is_none() && created {
        // Nobody claimed the version since this publish created the
        // tarball ([`early_tarball`]), so nobody replaced it.
        return Ok(());
    }
    // A replace starts with at least half of the claim's time left and is
    // cut off after a quarter ([`replace_orphan`]), so it is over before the
    // claim expires, with a quarter of `claim_timeout` to spare for clock
    // skew between instances: a later claimant (who claims only after
    // expiry) reads the final bytes, never bytes a stalled earlier claimant
    // replaces afterwards.
    let own_left = claimed
        .as_ref()
        .filter(|c| c.owner == shared.instance)
        .map(|c| c.expires.saturating_sub(now()));
    if own_left.is_none_or(|left| left < shared.claim_timeout.div_ceil(2)) {
        // No record yet (a first publish): the claim goes into a
        // placeholder record, created only if absent, that names no
        // version and is served as no package.
        let mut next = record
            .as_deref()
            .cloned()
            .unwrap_or_else(SharedRecord::placeholder);
        next.claims.insert(
            version.to_string(),
            Claim {
                owner: shared.instance.clone(),
                integrity: integrity.to_string(),
                expires: now() + shared.claim_timeout,
            },
        );
        next.writer = crate::shared::random_id();
        let new_etag = shared
            .put_record(name, &next, etag.as_deref())
            .await
            .map_err(to_api)?;
        let store = registry.store.clone();
        let (owned, held, tag) = (name.clone(), next.clone(), new_etag.clone());
        tokio::task::spawn_blocking(move || store.set_shared_state(&owned, &held, &tag))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(|e| ApiError::internal(e.to_string()))?;
        shared.wrote(name, next, new_etag);
    }
    let limit = Duration::from_millis(shared.claim_timeout * 250);
    tokio::time::timeout(
        limit,
        replace_orphan(registry, s3, name, version, tarball, integrity),
    )
    .await
    .unwrap_or_else(|_| {
        Err(ApiError::unavailable(format!(
            "the tarball storage did not finish replacing {name}@{version}'s orphaned tarball \
             within {} s (a quarter of db.s3.claim_timeout); nothing was published",
            limit.as_secs()
        ))
        .retry_after(5))
    })
}

/// With the version claimed, makes the bytes under
/// the key `tarball`: keeps identical ones, else replaces them only if
/// they are still the ones read (`If-Match`).
async fn replace_orphan(
    registry: &Registry,
    s3: &crate::storage::S3Storage,
    name: &PackageName,
    version: &Version,
    tarball: &Bytes,
    integrity: &str,
) -> Result<(), ApiError> {
    let unavailable = |e: crate::storage::StorageError| {
        ApiError::unavailable(format!("{e}; nothing was published"))
    };
    let mode = match s3
        .read_whole(name, version, registry.config.server.max_body_size)
        .await
        .map_err(unavailable)?
    {
        Some((bytes, _)) if bytes == *tarball => return Ok(()),
        Some((_, etag)) => object_store::PutMode::Update(object_store::UpdateVersion {
            e_tag: Some(etag),
            version: None,
        }),
        None => object_store::PutMode::Create,
    };
    match s3
        .put_mode(name, version, tarball.clone(), integrity, mode)
        .await
    {
        Ok(()) => Ok(()),
        Err(crate::storage::s3::PutFailure::Taken) => Err(lost_race()),
        Err(crate::storage::s3::PutFailure::Other(e)) => Err(unavailable(e)),
    }
}
