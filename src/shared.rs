//! S3 as the truth for metadata (`db.type = "s3"`): what several nmr
//! instances on one bucket share, and how each keeps its LevelDB as a
//! cache of it.
//!
//! Objects, under `storage.s3.prefix`, next to the tarballs, every key built
//! from a validated [`PackageName`] and [`Version`] or a hash:
//!
//! | key | object |
//! |---|---|
//! | `{name}/packument.json` | the package record ([`SharedRecord`]): the `P/` record, every live version with its publish time and its manifest's key, every tombstone's time, the GitHub binding, claims in progress, the latest few manifests inline. The only object ever replaced, always by compare-and-swap |
//! | `{name}/versions/{version}-{hash}.json` | a version manifest, `{hash}` the first 16 hex digits of its SHA-256: content-addressed, so never rewritten with other bytes; one no package record names is an orphan, never served |
//! | `{name}/-/{file}.tgz` | the tarball, as with `db.type = "local"` (`src/storage/s3.rs`) |
//! | `-/tokens/{hex SHA-256}.json` | a registry token's record |
//! | `-/users/{GitHub id, 20 digits}/{hex SHA-256}` | a user's token, for `npm token list` (empty) |
//! | `-/trust/{name}.json` | the package's `npm trust` configurations |
//! | `-/jti/{hex SHA-256 of the jti}` | an OIDC ID token already exchanged (create-only) |
//! | `-/sessions/{id}.json`, `-/login-states/{state}` | a web login in progress, and the id its `state` names (`src/cmd/login.rs`) |
//! | `-/probe/{instance}` | the startup probe of conditional writes |
//!
//! ## Reads
//! An instance serves a package from its LevelDB while its copy was
//! validated within `db.s3.max_staleness`; then one conditional GET of the
//! package record (`If-None-Match` with the cached ETag) per package per
//! instance, shared by concurrent readers ([`Shared::state`]): 304 keeps the
//! cache, 200 brings in the manifests the record names and the cache lacks.
//!
//! ## Writes (ARCHITECTURE.md, "Several instances", states the interleavings)
//! Under the instance's own package lock, a write reads the record with its
//! ETag, applies the same `packument::*` rule as a local write, and PUTs the
//! new record with `If-Match` (`If-None-Match: *` when creating). A 412
//! means another instance won: the command re-reads and re-applies
//! (`cmd::retrying`). A publish writes its tarball create-only first; when
//! the key is taken (a racing or crashed publisher of the same version) it
//! must first claim the version in the record ([`Claim`]), and only a
//! claim holder may replace those bytes, conditionally on the ETag it saw.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{
    GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::github::Repo;
use crate::name::PackageName;

/// The package record in S3: `{name}/packument.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedRecord {
    /// The package record as LevelDB keeps it under `P/` (`src/store.rs`).
    pub record: serde_json::Value,
    /// Live versions in publish order: (version, manifest hash).
    pub versions: Vec<(String, String)>,
    /// Every version's publish time, tombstones included, in publish order.
    pub times: Vec<(String, String)>,
    #[serde(default)]
    pub binding: Option<Repo>,
    /// Versions being published through a taken tarball key.
    #[serde(default)]
    pub claims: BTreeMap<String, Claim>,
    /// The manifests of the latest publishes (at most [`MAX_INLINE`]; a
    /// writer that would exceed it stores the oldest half's objects first),
    /// carried here until their own objects are known to be stored: a
    /// publish then needs no manifest upload before its record, and an
    /// instance applying the record no GET for them. Each matches its hash
    /// in `versions`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inline: Vec<(String, serde_json::Value)>,
    /// A random id of the write that made this record: how a writer whose
    /// PUT was retried after a lost answer recognises its own write.
    pub writer: String,
}

impl SharedRecord {
    /// Each live version's manifest hash, by version.
    pub fn hashes(&self) -> std::collections::HashMap<&str, &str> {
        self.versions
            .iter()
            .map(|(v, h)| (v.as_str(), h.as_str()))
            .collect()
    }

    /// Whether `manifest`, carried inline for `version`, is the one
    /// `hashes` ([`SharedRecord::hashes`] of a record) names.
    pub fn inline_matches(
        hashes: &std::collections::HashMap<&str, &str>,
        version: &str,
        manifest: &serde_json::Value,
    ) -> bool {
        serde_json::to_vec(manifest)
            .is_ok_and(|json| hashes.get(version) == Some(&short_hash(&json).as_str()))
    }

    /// A record that only carries claims: made by the first publish of a
    /// package when its tarball key is already taken. Its `record` is
    /// `null`, and an instance treats it as no package.
    pub fn placeholder() -> SharedRecord {
        SharedRecord {
            record: serde_json::Value::Null,
            versions: Vec::new(),
            times: Vec::new(),
            binding: None,
            claims: BTreeMap::new(),
            inline: Vec::new(),
            writer: random_id(),
        }
    }
}

/// A publisher's claim on a version number whose tarball key was already
/// taken: until `expires` (Unix seconds) only `owner` may write those
/// bytes, conditionally on the ETag it saw, and name the version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub owner: String,
    pub integrity: String,
    pub expires: u64,
}

/// What an instance knows of a package's record in S3.
#[derive(Debug, Clone)]
pub struct State {
    /// The record and its ETag; `None` when S3 has no such package.
    pub current: Option<(Arc<SharedRecord>, String)>,
    /// When S3 last confirmed it.
    pub validated: Instant,
}

/// A failure to reach or use the bucket: the write or read answers 503.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// Another instance changed the record first (412): re-read, re-apply.
    #[error("the package record changed while this write was made")]
    Conflict,
    #[error("metadata storage ({0})")]
    Unavailable(String),
}

/// How a create-only PUT went.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    Created,
    Exists,
}

/// The shared metadata of one bucket.
pub struct Shared {
    s3: AmazonS3,
    prefix: String,
    describe: String,
    max_staleness: Duration,
    /// Seconds a [`Claim`] holds.
    pub claim_timeout: u64,
    /// This process's random id (claims, writers).
    pub instance: String,
    states: quick_cache::sync::Cache<PackageName, Arc<State>>,
    tokens: quick_cache::sync::Cache<[u8; 32], (Instant, Option<Bytes>)>,
    /// Manifest keys this instance uploaded (content-addressed, so never
    /// worth uploading twice).
    uploaded: quick_cache::sync::Cache<String, ()>,
    /// Per client address: lookups of packages this instance knows
    /// nothing of ([`Shared::first_lookup`]), `db.s3.lookups_per_minute`.
    budgets: crate::limits::Budgets,
}

/// Manifests a package record carries inline ([`SharedRecord::inline`]).
pub const MAX_INLINE: usize = 8;

/// Packages whose validated state one instance keeps in memory.
const STATES: usize = 100_000;

/// The first 16 hex digits of the SHA-256 of `bytes`.
pub fn short_hash(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..8])
}

/// The `-/` key of a registry token's record (a token's hash: the SHA-256
/// of its secret).
pub fn token_key(hash: &[u8; 32]) -> String {
    format!("tokens/{}.json", hex::encode(hash))
}

/// The `-/` directory indexing the tokens of the GitHub user `github_id`.
pub fn user_dir(github_id: u64) -> String {
    format!("users/{github_id:020}/")
}

/// The `-/` key indexing token `hash` under the GitHub user `github_id`.
pub fn user_token_key(github_id: u64, hash: &[u8; 32]) -> String {
    format!("{}{}", user_dir(github_id), hex::encode(hash))
}

/// The `-/` key of a package's `npm trust` configurations.
pub fn trust_key(name: &PackageName) -> String {
    format!("trust/{name}.json")
}

/// 64 random bits (zero if the system has no randomness to give).
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).unwrap_or_default();
    u64::from_le_bytes(bytes)
}

/// A fresh random id (16 hex digits).
pub fn random_id() -> String {
    format!("{:016x}", random_u64())
}

impl Shared {
    /// The shared metadata in `s3`'s bucket under `prefix` (normalised:
    /// empty or ending in `/`); `describe` names the bucket in errors.
    pub fn new(
        s3: AmazonS3,
        prefix: String,
        describe: String,
        config: &crate::config::DbS3Config,
    ) -> Shared {
        Shared {
            s3,
            prefix,
            describe,
            max_staleness: Duration::from_millis(config.max_staleness),
            claim_timeout: config.claim_timeout,
            instance: random_id(),
            states: quick_cache::sync::Cache::new(STATES),
            tokens: quick_cache::sync::Cache::new(STATES),
            uploaded: quick_cache::sync::Cache::new(10_000),
            budgets: crate::limits::Budgets::new(config.lookups_per_minute, 10_000),
        }
    }

    fn unavailable(&self, what: &str, e: impl std::fmt::Display) -> SharedError {
        SharedError::Unavailable(format!("{}: cannot {what}: {e}", self.describe))
    }

    fn path(&self, key: &str) -> Path {
        Path::parse(format!("{}{key}", self.prefix)).expect("keys come from validated parts")
    }

    fn record_path(&self, name: &PackageName) -> Path {
        self.path(&format!("{name}/packument.json"))
    }

    fn manifest_path(&self, name: &PackageName, version: &str, hash: &str) -> Path {
        self.path(&format!("{name}/versions/{version}-{hash}.json"))
    }

    /// Checks that the bucket enforces conditional writes: a create-only
    /// PUT of a fresh probe object twice must fail the second time (some
    /// S3-compatible stores ignore `If-None-Match`, and then concurrent
    /// publishes would lose versions). The probe is deleted afterwards.
    pub async fn probe(&self) -> Result<(), String> {
        let path = self.path(&format!("-/probe/{}", random_id()));
        let create = |body: &'static str| {
            self.s3.put_opts(
                &path,
                PutPayload::from_static(body.as_bytes()),
                PutOptions::from(PutMode::Create),
            )
        };
        create("1")
            .await
            .map_err(|e| format!("{}: cannot write a probe object: {e}", self.describe))?;
        let second = create("2").await;
        let _ = self.s3.delete(&path).await;
        match second {
            Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Ok(_) => Err(format!(
                "{} ignores If-None-Match: it accepted a second create-only PUT of one key, so \
                 concurrent publishes through several instances would lose versions. Use a store \
                 that enforces conditional writes (AWS S3, MinIO, R2, Ceph RGW), or db.type = \"local\"",
                self.describe
            )),
            Err(e) => Err(format!(
                "{}: the conditional-write probe failed: {e}",
                self.describe
            )),
        }
    }

    /// The validated state of `name` if S3 confirmed it within
    /// `max_staleness` (a read may serve the cache), else `None`.
    pub fn fresh(&self, name: &PackageName) -> Option<Arc<State>> {
        self.states
            .get(name)
            .filter(|s| s.validated.elapsed() < self.max_staleness)
    }

    /// Asks S3 for `name`'s record: a conditional GET with the ETag of
    /// `known` (what this instance holds, if anything). The caller holds
    /// the package's lock (`Store::lock`), which makes this one request per
    /// package per instance at a time, applies a changed record to its
    /// cache, then [`Shared::remember`]s the state. Returns the state and
    /// whether the record differs from `known`.
    pub async fn revalidate(
        &self,
        name: &PackageName,
        known: Option<(Arc<SharedRecord>, String)>,
    ) -> Result<(State, bool), SharedError> {
        let options = GetOptions {
            if_none_match: known.as_ref().map(|(_, etag)| etag.clone()),
            ..GetOptions::default()
        };
        let validated = Instant::now();
        let (current, changed) = match self.s3.get_opts(&self.record_path(name), options).await {
            Err(object_store::Error::NotModified { .. }) => (known, false),
            Err(object_store::Error::NotFound { .. }) => {
                let changed = known.is_some();
                (None, changed)
            }
            Err(e) => return Err(self.unavailable(&format!("read the record of {name}"), e)),
            Ok(result) => {
                let etag = result.meta.e_tag.clone().unwrap_or_default();
                let bytes = result
                    .bytes()
                    .await
                    .map_err(|e| self.unavailable(&format!("read the record of {name}"), e))?;
                let record: SharedRecord = serde_json::from_slice(&bytes).map_err(|e| {
                    SharedError::Unavailable(format!(
                        "{}: the record of {name} is corrupt: {e}",
                        self.describe
                    ))
                })?;
                let changed = known.as_ref().is_none_or(|(r, _)| **r != record);
                (Some((Arc::new(record), etag)), changed)
            }
        };
        Ok((State { current, validated }, changed))
    }

    /// Keeps `state` as what this instance knows of `name` (its cache now
    /// holds it).
    pub fn remember(&self, name: &PackageName, state: State) -> Arc<State> {
        let state = Arc::new(state);
        self.states.insert(name.clone(), state.clone());
        state
    }

    /// Takes one lookup from `client`'s budget when this instance holds no
    /// state for `name` (`db.s3.lookups_per_minute`: each is an S3 GET, and
    /// a 404 is cached per name, so random names would otherwise cost one
    /// request each); `Err` with the seconds to wait when it is spent.
    /// Revalidating a known package is not counted.
    pub fn first_lookup(&self, name: &PackageName, client: std::net::IpAddr) -> Result<(), u64> {
        if self.states.get(name).is_some() {
            return Ok(());
        }
        self.budgets
            .take(client, Instant::now())
            .map_err(|wait| wait.as_secs().max(1))
    }

    /// What this instance last knew of `name`, however old.
    pub fn known(&self, name: &PackageName) -> Option<Arc<State>> {
        self.states.get(name)
    }

    /// Records that this instance wrote `record` (ETag `etag`) itself, and
    /// its cache holds it: it serves it at once.
    pub fn wrote(&self, name: &PackageName, record: SharedRecord, etag: String) {
        self.remember(
            name,
            State {
                current: Some((Arc::new(record), etag)),
                validated: Instant::now(),
            },
        );
    }

    /// Forgets what this instance knows of `name` (after a failed write).
    pub fn forget(&self, name: &PackageName) {
        self.states.remove(name);
    }

    /// Replaces `name`'s record with `record` if S3 still holds `expected`
    /// (its ETag; `None`: only if there is none). `Conflict` when another
    /// write came first. Returns the new ETag.
    pub async fn put_record(
        &self,
        name: &PackageName,
        record: &SharedRecord,
        expected: Option<&str>,
    ) -> Result<String, SharedError> {
        let body = serde_json::to_vec(record)
            .map_err(|e| SharedError::Unavailable(format!("cannot serialise {name}: {e}")))?;
        let mode = match expected {
            None => PutMode::Create,
            Some(etag) => PutMode::Update(UpdateVersion {
                e_tag: Some(etag.to_string()),
                version: None,
            }),
        };
        let path = self.record_path(name);
        match self
            .s3
            .put_opts(&path, PutPayload::from(body), PutOptions::from(mode))
            .await
        {
            Ok(result) => Ok(result.e_tag.unwrap_or_default()),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => {
                // A retried PUT whose first attempt landed also gets 412:
                // then the record in S3 is this write's own.
                match self.s3.get(&path).await {
                    Ok(got) => {
                        let etag = got.meta.e_tag.clone().unwrap_or_default();
                        let bytes = got.bytes().await.map_err(|e| {
                            self.unavailable(&format!("read the record of {name}"), e)
                        })?;
                        match serde_json::from_slice::<SharedRecord>(&bytes) {
                            Ok(stored) if stored.writer == record.writer => Ok(etag),
                            _ => Err(SharedError::Conflict),
                        }
                    }
                    Err(_) => Err(SharedError::Conflict),
                }
            }
            Err(e) => Err(self.unavailable(&format!("write the record of {name}"), e)),
        }
    }

    /// Stores a manifest under its content's key (nothing else ever has
    /// that key, so no condition is needed; one this instance already
    /// uploaded is not sent again). Returns its hash.
    pub async fn put_manifest(
        &self,
        name: &PackageName,
        version: &str,
        json: Vec<u8>,
    ) -> Result<String, SharedError> {
        let hash = short_hash(&json);
        let path = self.manifest_path(name, version, &hash);
        if self.uploaded.get(path.as_ref()).is_some() {
            return Ok(hash);
        }
        self.s3
            .put(&path, PutPayload::from(json))
            .await
            .map_err(|e| self.unavailable(&format!("write the manifest of {name}@{version}"), e))?;
        self.uploaded.insert(path.to_string(), ());
        Ok(hash)
    }

    /// The manifest of `name@version` stored under `hash`, checked against it.
    pub async fn manifest(
        &self,
        name: &PackageName,
        version: &str,
        hash: &str,
    ) -> Result<Bytes, SharedError> {
        let what = format!("the manifest of {name}@{version}");
        let (bytes, _) = self
            .read(&self.manifest_path(name, version, hash), &what)
            .await?
            .ok_or_else(|| self.unavailable(&format!("read {what}"), "it is missing"))?;
        if short_hash(&bytes) != hash {
            return Err(SharedError::Unavailable(format!(
                "{}: the manifest of {name}@{version} does not match its hash",
                self.describe
            )));
        }
        Ok(bytes)
    }

    /// The bytes and ETag of the object at `path`, or `None`; `what` names
    /// it in errors.
    async fn read(&self, path: &Path, what: &str) -> Result<Option<(Bytes, String)>, SharedError> {
        match self.s3.get(path).await {
            Ok(got) => {
                let etag = got.meta.e_tag.clone().unwrap_or_default();
                let bytes = got
                    .bytes()
                    .await
                    .map_err(|e| self.unavailable(&format!("read {what}"), e))?;
                Ok(Some((bytes, etag)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.unavailable(&format!("read {what}"), e)),
        }
    }

    /// A small shared object under `-/` (`key` built from validated parts),
    /// or `None`.
    pub async fn get_meta(&self, key: &str) -> Result<Option<(Bytes, String)>, SharedError> {
        self.read(&self.path(&format!("-/{key}")), "shared metadata")
            .await
    }

    /// Writes a small shared object under `-/`: `Create` only if absent
    /// (`Ok(Created::Exists)` if not), `Update` if its ETag is still the
    /// given one (`Conflict` if not), or `Overwrite`.
    pub async fn put_meta(
        &self,
        key: &str,
        body: Vec<u8>,
        mode: PutMode,
    ) -> Result<Created, SharedError> {
        match self
            .s3
            .put_opts(
                &self.path(&format!("-/{key}")),
                PutPayload::from(body),
                PutOptions::from(mode),
            )
            .await
        {
            Ok(_) => Ok(Created::Created),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Created::Exists),
            Err(object_store::Error::Precondition { .. }) => Err(SharedError::Conflict),
            Err(e) => Err(self.unavailable("write shared metadata", e)),
        }
    }

    /// Deletes a shared object under `-/` (absent is fine).
    pub async fn delete_meta(&self, key: &str) -> Result<(), SharedError> {
        match self.s3.delete(&self.path(&format!("-/{key}"))).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.unavailable("delete shared metadata", e)),
        }
    }

    /// The last segments of the keys under `-/{dir}/`.
    pub async fn list_meta(&self, dir: &str) -> Result<Vec<String>, SharedError> {
        use futures_util::TryStreamExt;
        let prefix = self.path(&format!("-/{dir}"));
        let found: Vec<_> = self
            .s3
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.unavailable("list shared metadata", e))?;
        Ok(found
            .into_iter()
            .filter_map(|meta| meta.location.filename().map(str::to_string))
            .collect())
    }

    /// The registry token record whose secret hashes to `hash` (raw JSON),
    /// as S3 held it within `max_staleness`: a token revoked through any
    /// instance stops working everywhere within that time.
    pub async fn token(&self, hash: &[u8; 32]) -> Result<Option<Bytes>, SharedError> {
        if let Some((at, record)) = self.tokens.get(hash)
            && at.elapsed() < self.max_staleness
        {
            return Ok(record);
        }
        let validated = Instant::now();
        let record = self
            .get_meta(&token_key(hash))
            .await?
            .map(|(bytes, _)| bytes);
        self.tokens.insert(*hash, (validated, record.clone()));
        Ok(record)
    }

    /// Deletes every token of the GitHub user `github_id` (GitHub says the
    /// account is gone). Returns how many.
    pub async fn delete_user_tokens(&self, github_id: u64) -> Result<usize, SharedError> {
        let hashes = self.list_meta(&user_dir(github_id)).await?;
        for name in &hashes {
            let Ok(Ok(hash)) = hex::decode(name).map(<[u8; 32]>::try_from) else {
                continue;
            };
            self.delete_meta(&token_key(&hash)).await?;
            self.delete_meta(&user_token_key(github_id, &hash)).await?;
            self.forget_token(&hash);
        }
        Ok(hashes.len())
    }

    /// Forgets the cached record of token `hash` (after this instance
    /// changed it).
    pub fn forget_token(&self, hash: &[u8; 32]) {
        self.tokens.remove(hash);
    }
}
