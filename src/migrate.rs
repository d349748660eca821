//! `nmr migrate --to s3`: copies a `db.type = "local"` registry's metadata
//! (package records, version manifests, bindings, tokens, `npm trust`
//! configurations) into the bucket of `[storage.s3]`, in the layout of
//! `src/shared.rs`, so the registry can then run with `db.type = "s3"`.
//! Offline: run it while nmr is stopped (it opens `db.path` itself).
//!
//! Idempotent: a package whose record the bucket already holds unchanged
//! is skipped, one it holds differently is refused (the bucket is already
//! in use by a shared registry), tokens and trust are rewritten with the
//! same bytes. Then it verifies what it copied: each record read back
//! equals what was written, each manifest matches its hash, and each live
//! version's tarball is in the bucket (tarballs are not copied: the
//! registry must already keep them there, `storage.type = "s3"`).

use std::sync::Arc;

use object_store::PutMode;
use serde_json::Value;

use crate::config::{Config, StorageType};
use crate::shared::{Shared, SharedRecord};
use crate::store::Store;

/// What a migration did, for its last line.
#[derive(Debug, Default)]
pub struct Report {
    pub copied: usize,
    pub unchanged: usize,
    pub versions: usize,
    pub tokens: usize,
    pub trust: usize,
}

/// Runs the migration of `config`'s registry. Errors say what to do.
pub async fn to_s3(config: &Config) -> Result<Report, String> {
    if config.storage.kind != StorageType::S3 {
        return Err("migrate --to s3 copies the metadata next to the tarballs: \
                    set storage.type = \"s3\" (and move the tarballs into the bucket) first"
            .into());
    }
    let store = Arc::new(Store::open(&config.db.path).map_err(|e| format!("db.path: {e}"))?);
    let storage = crate::storage::S3Storage::open(&config.storage.s3)
        .await
        .map_err(|e| e.to_string())?;
    let (client, prefix, describe) = storage.parts();
    let shared = Shared::new(client, prefix, describe, &config.db.s3);
    shared.probe().await?;
    let mut report = Report::default();
    let names = store.package_names().map_err(|e| e.to_string())?;
    log::info!("migrating {} packages to the bucket", names.len());
    for (i, name) in names.iter().enumerate() {
        let record = package_record(&store, &shared, name).await?;
        report.versions += record.versions.len();
        let (current, _) = shared
            .revalidate(name, None)
            .await
            .map_err(|e| e.to_string())?;
        match current.current {
            None => {
                shared
                    .put_record(name, &record, None)
                    .await
                    .map_err(|e| format!("{name}: {e}"))?;
                report.copied += 1;
            }
            Some((held, _)) if same(&held, &record) => report.unchanged += 1,
            Some(_) => {
                return Err(format!(
                    "the bucket already holds another record of {name}: it is in use by a \
                     registry with db.type = \"s3\"; migrate only into an unused bucket or prefix"
                ));
            }
        }
        let etag = verify(
            &shared,
            &storage,
            name,
            &record,
            config.server.max_body_size,
        )
        .await?;
        // The local records are now what the bucket holds: remembering its
        // ETag makes db.path this instance's cache of it, which a
        // db.type = "s3" start accepts (`Store::is_local_registry`).
        store
            .set_shared_state(name, &record, &etag)
            .map_err(|e| e.to_string())?;
        if (i + 1) % 100 == 0 {
            log::info!("migrated {} of {} packages", i + 1, names.len());
        }
    }
    for (hash, raw) in store.all_tokens().map_err(|e| e.to_string())? {
        let record: crate::tokens::TokenRecord = serde_json::from_slice(&raw)
            .map_err(|e| format!("a stored token record is corrupt: {e}"))?;
        if let Some(id) = record.github_id {
            let index = crate::shared::user_token_key(id, &hash);
            shared
                .put_meta(&index, Vec::new(), PutMode::Overwrite)
                .await
                .map_err(|e| e.to_string())?;
        }
        let key = crate::shared::token_key(&hash);
        shared
            .put_meta(&key, raw.clone(), PutMode::Overwrite)
            .await
            .map_err(|e| e.to_string())?;
        match shared.get_meta(&key).await.map_err(|e| e.to_string())? {
            Some((back, _)) if back == raw => report.tokens += 1,
            _ => return Err("a token record read back differs from what was written".into()),
        }
    }
    for name in &names {
        let configs = store.trust(name).map_err(|e| e.to_string())?;
        if configs.is_empty() {
            continue;
        }
        let json = serde_json::to_vec(&configs).map_err(|e| e.to_string())?;
        shared
            .put_meta(&crate::shared::trust_key(name), json, PutMode::Overwrite)
            .await
            .map_err(|e| e.to_string())?;
        report.trust += 1;
    }
    store.close().map_err(|e| e.to_string())?;
    Ok(report)
}

/// Two records alike but for their writer ids.
fn same(a: &SharedRecord, b: &SharedRecord) -> bool {
    a.record == b.record
        && a.versions == b.versions
        && a.times == b.times
        && a.binding.as_ref().map(|r| (&r.owner, &r.name, r.id))
            == b.binding.as_ref().map(|r| (&r.owner, &r.name, r.id))
}

/// The shared record of `name` from the local records, its manifests
/// uploaded (content-addressed, so uploading again is harmless).
async fn package_record(
    store: &Store,
    shared: &Shared,
    name: &crate::name::PackageName,
) -> Result<SharedRecord, String> {
    let (record, manifests) = store
        .raw_packument(name)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{name} vanished during the migration"))?;
    let mut versions = Vec::with_capacity(manifests.len());
    for (v, raw) in manifests {
        let hash = shared
            .put_manifest(name, &v, raw)
            .await
            .map_err(|e| e.to_string())?;
        versions.push((v, hash));
    }
    let doc = record.into_packument(|_| Some(Value::Null));
    let (record, times) = crate::store::record_parts(name, &doc).map_err(|e| e.to_string())?;
    Ok(SharedRecord {
        record,
        versions,
        times,
        binding: store.binding(name).map_err(|e| e.to_string())?,
        claims: Default::default(),
        inline: Vec::new(),
        writer: "migrate".into(),
    })
}

/// Reads back what was copied of `name`: the record, every manifest
/// against its hash, every live version's tarball. Returns the record's
/// ETag in the bucket.
async fn verify(
    shared: &Shared,
    storage: &crate::storage::S3Storage,
    name: &crate::name::PackageName,
    record: &SharedRecord,
    limit: u64,
) -> Result<String, String> {
    let (state, _) = shared
        .revalidate(name, None)
        .await
        .map_err(|e| e.to_string())?;
    let etag = match &state.current {
        Some((held, etag)) if same(held, record) => etag.clone(),
        _ => {
            return Err(format!(
                "the record of {name} read back differs from what was written"
            ));
        }
    };
    for (v, hash) in &record.versions {
        shared
            .manifest(name, v, hash)
            .await
            .map_err(|e| e.to_string())?;
        let version = crate::name::Version::parse(v).map_err(|e| format!("{name}: {e}"))?;
        if storage
            .read_whole(name, &version, limit)
            .await
            .map_err(|e| e.to_string())?
            .is_none()
        {
            return Err(format!(
                "the tarball of {name}@{v} is not in the bucket: copy the tarballs \
                 (storage.local.path) into it first, then run migrate again"
            ));
        }
    }
    Ok(etag)
}
