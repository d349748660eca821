//! The metadata store: packages as small immutable records in LevelDB.
//!
//! A publish writes what it adds and nothing else: the new version's
//! record, its publish time, its tarball index entry and the package
//! record, which is constant in size, so a publish's byte volume does not
//! grow with the versions the package already has. The served documents
//! are derived data, rendered on demand and cached in memory by
//! `src/documents.rs`. A publish reads a constant part of the package
//! ([`Store::publish_view`]) and writes four records
//! ([`Store::commit_publish`]); the other writes and rendering use the
//! package's version index (the live versions and every publish time),
//! cached in memory and built by two scans of small records on a miss.
//!
//! Keys (all names validated by [`PackageName`], versions by [`Version`]):
//!
//! | key | value |
//! |---|---|
//! | `P/{name}` | the package record: `_id`, `_rev`, `name`, `dist-tags`, `time.created`, `time.modified`, `time.unpublished` (a full unpublish's tombstone), `maintainers`, the latest version's readme |
//! | `V/{name}/{version}` | a live version's manifest, written at publish and rewritten only for that version (deprecate) |
//! | `T/{name}/{version}` | when the version was published (its `time` entry, ISO 8601); kept after an unpublish: the tombstone that stops the number being reused |
//! | `t/{name}/{version}` | the live version's `shasum`: a tarball GET checks the version, and gets its ETag, in one lookup; the `t/` keys are the live versions, which publish times order |
//! | `b/{name}` | the GitHub repository the package is bound to (`{"owner", "repo", "id", "owner_id"}`) |
//! | `g/{hex SHA-256}` | a token GitHub accepted: when (Unix seconds, decimal) it last did |
//! | `k/{hex SHA-256}` | a registry token's [`TokenRecord`] (`src/tokens.rs`) |
//! | `u/{GitHub user id, 20 digits}/{key}` | a user's token, by its public key: the hex SHA-256 of its secret (for `npm token list`) |
//! | `l/{hex SHA-256}` | when (Unix seconds, decimal) a registry token was last used, at most once a minute |
//! | `p/{name}` | the package's trusted-publisher configurations (`npm trust`), a JSON array |
//! | `s/{name}` | under `db.type = "s3"`: the shared record this cache holds and its ETag (`src/shared.rs`) |
//!
//! The layout before this one kept one canonical document per package
//! (`d/{name}`) and its four rendered forms (`r/…`), rewritten whole on
//! every change; [`Store::open`] converts such a database in place, one
//! package per synced batch, so a crash mid-way leaves a database that
//! converts the rest on the next start.
//!
//! Every change to a package is one atomic [`rusty_leveldb::WriteBatch`]
//! written with `sync` (except in a cache of the bucket,
//! [`Store::open_cache`]), and the database runs on [`SyncingEnv`], whose files
//! `fsync` on flush: rusty-leveldb itself never calls fsync
//! (docs/dependencies.md, "rusty-leveldb"), so without it an acknowledged publish could be lost
//! in a power cut. Read-modify-write cycles of one package are serialised
//! by [`Store::lock`].
//!
//! LevelDB options ([`options`]): a 4 MiB write buffer and 2 MiB table
//! files (rusty-leveldb's defaults: the records are small, so a memtable
//! holds hundreds of publishes and compaction works on small files), an
//! 8 MiB block cache (the hot documents are served from nmr's own cache;
//! LevelDB's serves the write path's package records and misses), and
//! Snappy compression of blocks (manifests are JSON, which it shrinks by
//! about half for little CPU).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusty_leveldb::compressor::{CompressorId, SnappyCompressor};
use rusty_leveldb::env::{Env, FileLock, Logger, RandomAccess};
use rusty_leveldb::{DB, LdbIterator, Options, PosixDiskEnv, WriteBatch};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::github::Repo;
use crate::name::{PackageName, Version};
use crate::oidc::TrustConfig;
use crate::packument::Packument;
use crate::tokens::TokenRecord;

/// The index key of a user's token: `u/{id, 20 digits}/{key}`.
fn user_token_key(github_id: u64, key: &str) -> String {
    format!("u/{github_id:020}/{key}")
}

/// A package without its version manifests: what rendering reads beside
/// them. Assembled from the package record (`P/`) and the version index
/// (`t/`, `T/`); never stored whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageRecord {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(rename = "_rev")]
    pub rev: String,
    pub name: String,
    #[serde(rename = "dist-tags")]
    pub dist_tags: std::collections::BTreeMap<String, String>,
    /// The live versions, in publish order.
    pub versions: Vec<String>,
    pub time: Map<String, Value>,
    #[serde(default)]
    pub maintainers: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readme: Option<String>,
}

impl PackageRecord {
    /// The record of `doc` (tests compare renderings through it).
    #[cfg(test)]
    pub fn of(doc: &Packument) -> PackageRecord {
        PackageRecord {
            id: doc.id.clone(),
            rev: doc.rev.clone(),
            name: doc.name.clone(),
            dist_tags: doc.dist_tags.clone(),
            versions: doc.versions.keys().cloned().collect(),
            time: doc.time.clone(),
            maintainers: doc.maintainers.clone(),
            readme: doc.readme.clone(),
        }
    }

    /// The packument of this record, its manifests from `manifest` (a
    /// version it cannot give is [`Value::Null`]: not loaded).
    pub fn into_packument(self, mut manifest: impl FnMut(&str) -> Option<Value>) -> Packument {
        let versions = self
            .versions
            .iter()
            .map(|v| (v.clone(), manifest(v).unwrap_or(Value::Null)))
            .collect();
        Packument {
            id: self.id,
            rev: self.rev,
            name: self.name,
            dist_tags: self.dist_tags,
            versions,
            time: self.time,
            maintainers: self.maintainers,
            readme: self.readme,
        }
    }
}

/// `time` keys that belong to the package, not to one version: they live
/// in the package record; every other `time` key is a version's, in `T/`.
fn is_package_time(key: &str) -> bool {
    matches!(key, "created" | "modified" | "unpublished")
}

/// The package record as stored under `P/{name}`: constant in size
/// whatever the number of versions (the `time` map holds only `created`,
/// `modified` and `unpublished`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredRecord {
    #[serde(rename = "_id")]
    id: String,
    #[serde(rename = "_rev")]
    rev: String,
    name: String,
    #[serde(rename = "dist-tags")]
    dist_tags: std::collections::BTreeMap<String, String>,
    time: Map<String, Value>,
    #[serde(default)]
    maintainers: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    readme: Option<String>,
}

/// A package's versions: the live ones in publish order (from `t/`) and
/// every version's publish time, tombstones included (from `T/`), in
/// publish order. Entries are shared (`Arc<str>`), so the index after a
/// publish is the one before plus an entry, not a copy of every string.
#[derive(Debug, Clone, PartialEq, Default)]
struct Index {
    versions: Vec<Arc<str>>,
    times: Vec<(Arc<str>, Arc<str>)>,
}

impl Index {
    fn of(doc: &Packument) -> Index {
        Index {
            versions: doc.versions.keys().map(|v| Arc::from(v.as_str())).collect(),
            times: version_times(doc)
                .map(|(k, at)| (Arc::from(k), Arc::from(at)))
                .collect(),
        }
    }

    fn weight(&self) -> u64 {
        // An estimate: each entry's text plus its share of the vectors and
        // `Arc` headers; adding it up is cheap next to what a miss costs.
        (self.versions.len() * 48 + self.times.len() * 96 + 64) as u64
    }

    /// The `time` map of a packument: `created` and `modified` from the
    /// package record, each version's publish time, then `unpublished`.
    fn time_map(&self, stored: &Map<String, Value>) -> Map<String, Value> {
        time_map(
            stored,
            self.times.len(),
            self.times
                .iter()
                .map(|(k, at)| (String::from(&**k), String::from(&**at))),
        )
    }
}

/// A packument's `time` map: `created` and `modified` from the package
/// record's `stored` times, then `versions` (version, publish time; `n` of
/// them), then `unpublished`.
fn time_map(
    stored: &Map<String, Value>,
    n: usize,
    versions: impl Iterator<Item = (String, String)>,
) -> Map<String, Value> {
    let mut time = Map::with_capacity(n + 3);
    for key in ["created", "modified"] {
        if let Some(v) = stored.get(key) {
            time.insert(key.into(), v.clone());
        }
    }
    for (k, at) in versions {
        time.insert(k, Value::String(at));
    }
    if let Some(v) = stored.get("unpublished") {
        time.insert("unpublished".into(), v.clone());
    }
    time
}

impl StoredRecord {
    /// The packument of this record with `versions` and `time`.
    fn into_packument(self, versions: Map<String, Value>, time: Map<String, Value>) -> Packument {
        Packument {
            id: self.id,
            rev: self.rev,
            name: self.name,
            dist_tags: self.dist_tags,
            versions,
            time,
            maintainers: self.maintainers,
            readme: self.readme,
        }
    }
}

/// The per-version entries of `doc.time` (every key but `created`,
/// `modified` and `unpublished`), in order, as stored in `T/`.
fn version_times(doc: &Packument) -> impl Iterator<Item = (&str, &str)> {
    doc.time
        .iter()
        .filter(|(k, _)| !is_package_time(k))
        .map(|(k, at)| (k.as_str(), at.as_str().unwrap_or_default()))
}

/// Weighs a cached index by its size.
#[derive(Clone)]
struct IndexWeight;

impl quick_cache::Weighter<PackageName, Arc<Index>> for IndexWeight {
    fn weight(&self, _: &PackageName, index: &Arc<Index>) -> u64 {
        index.weight()
    }
}

/// The record and index of a package as a [`PackageRecord`].
fn assemble(stored: StoredRecord, index: &Index) -> PackageRecord {
    PackageRecord {
        time: index.time_map(&stored.time),
        id: stored.id,
        rev: stored.rev,
        name: stored.name,
        dist_tags: stored.dist_tags,
        versions: index.versions.iter().map(|v| String::from(&**v)).collect(),
        maintainers: stored.maintainers,
        readme: stored.readme,
    }
}

/// Bytes of version indexes kept in memory for the write path.
const INDEX_CACHE: u64 = 32 << 20;

/// A registry token's hash and its record as stored (raw JSON).
pub type TokenBytes = ([u8; 32], Vec<u8>);

/// A package's manifests as stored: (version, raw JSON), in publish order.
pub type RawManifests = Vec<(String, Vec<u8>)>;

/// The LevelDB options of the store (see the module docs for why).
pub fn options() -> Options {
    Options {
        env: std::rc::Rc::new(Box::new(SyncingEnv::default())),
        write_buffer_size: 4 << 20,
        max_file_size: 2 << 20,
        block_cache_capacity_bytes: 8 << 20,
        compressor: SnappyCompressor::ID,
        ..Options::default()
    }
}

/// A failure of the metadata store; the message names the operation.
#[derive(Debug, thiserror::Error)]
#[error("metadata store: {0}")]
pub struct StoreError(String);

impl From<rusty_leveldb::Status> for StoreError {
    fn from(s: rusty_leveldb::Status) -> Self {
        StoreError(s.to_string())
    }
}

/// A raw LevelDB record.
type KeyValue = (Vec<u8>, Vec<u8>);

/// How many stripes [`Store::lock`] (and the caches' generation counters)
/// hash package names onto.
pub const LOCK_STRIPES: usize = 64;

/// The LevelDB-backed metadata store. Cheap to share behind an `Arc`.
pub struct Store {
    db: Mutex<Option<DB>>,
    locks: Vec<Arc<tokio::sync::Mutex<()>>>,
    /// Version indexes by package, so a write does not scan its package's
    /// versions; kept right by `generations` as `Documents` keeps its cache
    /// (a load that raced a commit is not kept).
    indexes: quick_cache::sync::Cache<PackageName, Arc<Index>, IndexWeight>,
    generations: Vec<Mutex<u64>>,
    /// Whether a write is durable before it returns (fsync): the truth's
    /// store is; a cache of the bucket (`db.type = "s3"`) needs not be.
    sync: bool,
}

impl Store {
    /// Opens (creating if missing) the database at `path`, converting a
    /// database of the previous layout in place (logging its progress).
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_with(path, true)
    }

    /// Opens the store at `path` as a cache of the bucket (`db.type =
    /// "s3"`): writes are not fsynced, since S3 holds every acknowledged
    /// write. LevelDB's log replays in order, so a crash loses at most a
    /// suffix of recent writes, and a package whose `s/` state went with
    /// them is fetched again.
    pub fn open_cache(path: &Path) -> Result<Store, StoreError> {
        Self::open_with(path, false)
    }

    fn open_with(path: &Path, sync: bool) -> Result<Store, StoreError> {
        std::fs::create_dir_all(path)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", path.display())))?;
        let mut opts = options();
        if !sync {
            opts.env = std::rc::Rc::new(Box::new(PosixDiskEnv::new()));
        }
        let db = DB::open(path, opts)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        let store = Store {
            db: Mutex::new(Some(db)),
            locks: (0..LOCK_STRIPES)
                .map(|_| Arc::new(tokio::sync::Mutex::new(())))
                .collect(),
            indexes: quick_cache::sync::Cache::with_weighter(10_000, INDEX_CACHE, IndexWeight),
            generations: (0..LOCK_STRIPES).map(|_| Mutex::new(0)).collect(),
            sync,
        };
        store.convert_old_layout()?;
        Ok(store)
    }

    /// Runs `f` on the open database; an error once [`Store::close`] ran.
    fn with_db<T>(
        &self,
        f: impl FnOnce(&mut DB) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = self.db.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_mut() {
            Some(db) => f(db),
            None => Err(StoreError("the database is closed".into())),
        }
    }

    /// Serialises read-modify-write cycles on one package: hold the guard
    /// from reading the packument until its commit. Different packages
    /// usually proceed in parallel (the locks are striped by name hash).
    pub async fn lock(&self, name: &PackageName) -> tokio::sync::OwnedMutexGuard<()> {
        self.locks[stripe(name)].clone().lock_owned().await
    }

    /// The package record of `name` assembled with its version index, or
    /// `None` if it was never published.
    pub fn record(&self, name: &PackageName) -> Result<Option<PackageRecord>, StoreError> {
        let Some(stored) = self.stored_record(name)? else {
            return Ok(None);
        };
        let index = self.index(name)?;
        Ok(Some(assemble(stored, &index)))
    }

    fn stored_record(&self, name: &PackageName) -> Result<Option<StoredRecord>, StoreError> {
        self.get_json(&format!("P/{name}"), || format!("package record of {name}"))
    }

    /// The version index of `name`: cached, else two scans (`t/`, `T/`).
    fn index(&self, name: &PackageName) -> Result<Arc<Index>, StoreError> {
        if let Some(hit) = self.indexes.get(name) {
            return Ok(hit);
        }
        let generation = *self.generations[stripe(name)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let live = format!("t/{name}/");
        let mut versions: Vec<String> = self
            .scan(live.as_bytes())?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k[live.len()..]).into_owned())
            .collect();
        let timed = format!("T/{name}/");
        let mut times: Vec<(Arc<str>, Arc<str>)> = self
            .scan(timed.as_bytes())?
            .into_iter()
            .map(|(k, v)| {
                let version = String::from_utf8_lossy(&k[timed.len()..]);
                (Arc::from(version), Arc::from(String::from_utf8_lossy(&v)))
            })
            .collect();
        // Publish order: by publish time (ISO 8601 sorts as text), then
        // by the version for versions published in the same millisecond.
        times.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
        let order: std::collections::HashMap<&str, usize> = times
            .iter()
            .enumerate()
            .map(|(i, (v, _))| (&**v, i))
            .collect();
        versions.sort_by_key(|v| {
            (
                order.get(v.as_str()).copied().unwrap_or(usize::MAX),
                v.clone(),
            )
        });
        let versions = versions.into_iter().map(Arc::from).collect();
        let index = Arc::new(Index { versions, times });
        let current = self.generations[stripe(name)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if *current == generation {
            self.indexes.insert(name.clone(), index.clone());
        }
        Ok(index)
    }

    /// The manifest of `name@version`, if it is live.
    pub fn manifest(&self, name: &PackageName, version: &str) -> Result<Option<Value>, StoreError> {
        self.get_json(&format!("V/{name}/{version}"), || {
            format!("manifest of {name}@{version}")
        })
    }

    /// The whole packument (every manifest), or `None` if `name` was never
    /// published: what the store's tests read back. Serving renders from
    /// [`Store::raw_packument`] instead.
    #[cfg(test)]
    pub fn packument(&self, name: &PackageName) -> Result<Option<Packument>, StoreError> {
        let Some((record, manifests)) = self.raw_packument(name)? else {
            return Ok(None);
        };
        let mut parsed = std::collections::HashMap::with_capacity(manifests.len());
        for (version, raw) in manifests {
            let value: Value = serde_json::from_slice(&raw)
                .map_err(|e| StoreError(format!("manifest of {name}@{version} is corrupt: {e}")))?;
            parsed.insert(version, value);
        }
        Ok(Some(record.into_packument(|v| parsed.remove(v))))
    }

    /// The package record of `name` and its version manifests as stored
    /// (raw JSON), in publish order: what rendering reads, without building
    /// a JSON tree per manifest. One record read, the index (cached), and
    /// one scan of the package's version records.
    pub fn raw_packument(
        &self,
        name: &PackageName,
    ) -> Result<Option<(PackageRecord, RawManifests)>, StoreError> {
        let Some(record) = self.record(name)? else {
            return Ok(None);
        };
        let prefix = format!("V/{name}/");
        let mut found: std::collections::HashMap<String, Vec<u8>> = self
            .scan(prefix.as_bytes())?
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k[prefix.len()..]).into_owned(), v))
            .collect();
        let mut manifests = Vec::with_capacity(record.versions.len());
        for v in &record.versions {
            let raw = found
                .remove(v)
                .ok_or_else(|| StoreError(format!("the manifest of {name}@{v} is missing")))?;
            manifests.push((v.clone(), raw));
        }
        Ok(Some((record, manifests)))
    }

    /// The packument of `name` for a write: every version number, tag,
    /// timestamp and tombstone, but only the manifests of `latest` and of
    /// `wanted` (the others are [`Value::Null`], which [`Store::commit`]
    /// leaves as stored). One record read and the cached index: what a
    /// rule reads costs what it needs, not the package's size.
    pub fn package(
        &self,
        name: &PackageName,
        wanted: &[&str],
    ) -> Result<Option<Packument>, StoreError> {
        let Some(stored) = self.stored_record(name)? else {
            return Ok(None);
        };
        let index = self.index(name)?;
        let latest = stored.dist_tags.get("latest").map(String::as_str);
        let mut loaded: Vec<(&str, Value)> = Vec::new();
        for v in wanted.iter().copied().chain(latest) {
            if !loaded.iter().any(|(l, _)| *l == v)
                && index.versions.iter().any(|have| &**have == v)
            {
                let manifest = self
                    .manifest(name, v)?
                    .ok_or_else(|| StoreError(format!("the manifest of {name}@{v} is missing")))?;
                loaded.push((v, manifest));
            }
        }
        let mut versions = Map::with_capacity(index.versions.len());
        for v in &index.versions {
            let manifest = match loaded.iter().position(|(l, _)| *l == &**v) {
                Some(i) => loaded.swap_remove(i).1,
                None => Value::Null,
            };
            versions.insert(String::from(&**v), manifest);
        }
        let time = index.time_map(&stored.time);
        Ok(Some(stored.into_packument(versions, time)))
    }

    /// The GitHub repository `name` is bound to, if any.
    pub fn binding(&self, name: &PackageName) -> Result<Option<Repo>, StoreError> {
        self.get_json(&format!("b/{name}"), || {
            format!("repository binding of {name}")
        })
    }

    /// The JSON value at `key`, or `None`; `what` names it in errors.
    fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        what: impl FnOnce() -> String,
    ) -> Result<Option<T>, StoreError> {
        let Some(raw) = self.with_db(|db| Ok(db.get(key.as_bytes())))? else {
            return Ok(None);
        };
        serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| StoreError(format!("{} is corrupt: {e}", what())))
    }

    /// The `shasum` of `name@version` if that version is live (published
    /// and not unpublished): one lookup.
    pub fn tarball_shasum(&self, name: &PackageName, version: &Version) -> Option<String> {
        let key = format!("t/{name}/{version}");
        self.with_db(|db| Ok(db.get(key.as_bytes())))
            .ok()
            .flatten()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    /// Commits `doc` as `name`'s packument in one synced write batch:
    /// the package record, and what `doc` changes against what is stored
    /// (the caller holds [`Store::lock`]): the records of versions it adds
    /// or changes (a [`Value::Null`] manifest was not loaded and stays as
    /// stored), and the removal of versions it lacks. `binding`, when
    /// given, becomes the package's GitHub repository in the same batch.
    /// Returns the versions it removed.
    ///
    /// A write that keeps every version and appends nothing or only at the
    /// end (a dist-tag change, a deprecation) compares the stored versions
    /// and times as a prefix, without hashing or copying, and the new index
    /// shares the old one's entries. Publishes go through
    /// [`Store::commit_publish`] instead.
    pub fn commit(
        &self,
        name: &PackageName,
        doc: &Packument,
        binding: Option<&Repo>,
    ) -> Result<Vec<Version>, StoreError> {
        let before = self.index(name)?;
        let mut batch = WriteBatch::default();
        let (removed, index) =
            add_to_batch(&mut batch, name, &before, doc, |v| self.manifest(name, v))?;
        let (written, _generation) = self.write_package(name, batch, binding)?;
        match written {
            Ok(()) => self.indexes.insert(name.clone(), Arc::new(index)),
            Err(_) => {
                self.indexes.remove(name);
            }
        }
        written.map(|()| removed)
    }

    /// The part of `name`'s packument that a publish of `version` reads
    /// (`packument::publish`), or `None` if `name` was never published:
    /// the package record (tags, `created`, `modified`, the tombstone of a
    /// full unpublish, maintainers); `latest`'s manifest and time; and every
    /// stored version that equals `version` up to build metadata (its
    /// precedence twins, `version` itself included, live or unpublished)
    /// with its time and, if live, its manifest. The twins' `T/` keys are
    /// adjacent (`+` sorts before `-`, `.` and digits), so this is a few
    /// lookups and one short scan however many versions the package has.
    ///
    /// The other versions are left out, so commit the result with
    /// [`Store::commit_publish`], never [`Store::commit`] (which would take
    /// them as removed).
    pub fn publish_view(
        &self,
        name: &PackageName,
        version: &Version,
    ) -> Result<Option<Packument>, StoreError> {
        let Some(stored) = self.stored_record(name)? else {
            return Ok(None);
        };
        let core = version.as_str().split('+').next().unwrap_or_default();
        let time_of = |v: &str| {
            self.with_db(|db| Ok(db.get(format!("T/{name}/{v}").as_bytes())))
                .map(|at| at.map(|at| String::from_utf8_lossy(&at).into_owned()))
        };
        let mut related: Vec<(String, String)> = Vec::new();
        if let Some(at) = time_of(core)? {
            related.push((core.to_string(), at));
        }
        let builds = format!("T/{name}/{core}+");
        let prefix = format!("T/{name}/").len();
        for (k, at) in self.scan(builds.as_bytes())? {
            related.push((
                String::from_utf8_lossy(&k[prefix..]).into_owned(),
                String::from_utf8_lossy(&at).into_owned(),
            ));
        }
        if let Some(latest) = stored.dist_tags.get("latest")
            && !related.iter().any(|(v, _)| v == latest)
            && let Some(at) = time_of(latest)?
        {
            related.push((latest.clone(), at));
        }
        // Publish order, as [`Store::index`] orders a scan.
        related.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
        let mut versions = Map::new();
        for (v, _) in &related {
            if let Some(manifest) = self.manifest(name, v)? {
                versions.insert(v.clone(), manifest);
            }
        }
        if versions.is_empty() && self.has_live_versions(name)? {
            // `latest` named no live version with a publish time, which
            // the rules never leave behind: rather than let the rule take
            // the package for empty, read all of it.
            return self.package(name, &[version.as_str()]);
        }
        let time = time_map(&stored.time, related.len(), related.into_iter());
        Ok(Some(stored.into_packument(versions, time)))
    }

    /// Whether `name` has a live version (a `t/` key): one seek.
    fn has_live_versions(&self, name: &PackageName) -> Result<bool, StoreError> {
        self.holds_prefix(format!("t/{name}/").as_bytes())
    }

    /// Commits the publish of `version`: `doc` is what `packument::publish`
    /// made of a [`Store::publish_view`]. One synced batch holds the package
    /// record and `version`'s manifest, tarball index entry and publish
    /// time, and `binding` when given: nothing else is read or written, so
    /// its cost does not depend on the package's size. A cached index gains
    /// the version in place.
    pub fn commit_publish(
        &self,
        name: &PackageName,
        doc: &Packument,
        version: &Version,
        binding: Option<&Repo>,
    ) -> Result<(), StoreError> {
        let v = version.as_str();
        let missing = || {
            StoreError(format!(
                "the publish of {name}@{v} lacks its manifest or time"
            ))
        };
        let manifest = doc.versions.get(v).ok_or_else(missing)?;
        let at = doc
            .time
            .get(v)
            .and_then(Value::as_str)
            .ok_or_else(missing)?;
        let time_key = format!("T/{name}/{v}");
        // A number reused after an unpublish (`allow_previous_version`)
        // moves in publish order: the cached index then goes.
        let reused = self
            .with_db(|db| Ok(db.get(time_key.as_bytes())))?
            .is_some();
        let mut batch = WriteBatch::default();
        batch.put(format!("P/{name}").as_bytes(), &record_of(name, doc)?);
        put_version(&mut batch, name, v, manifest)?;
        batch.put(time_key.as_bytes(), at.as_bytes());
        let (written, _generation) = self.write_package(name, batch, binding)?;
        // The cached index, unless a reader holds it too, gains the
        // version where a scan would put it (last, unless the clock went
        // back); otherwise it goes and the next reader scans.
        if let Some((key, mut index)) = self.indexes.remove(name)
            && written.is_ok()
            && !reused
            && let Some(index_mut) = Arc::get_mut(&mut index)
            && index_mut.times.last().is_none_or(|(_, last)| &**last <= at)
        {
            index_mut.versions.push(Arc::from(v));
            index_mut.times.push((Arc::from(v), Arc::from(at)));
            self.indexes.insert(key, index);
        }
        written
    }

    /// Writes `batch` synced, with `binding` (when given) as `name`'s
    /// GitHub repository, and bumps `name`'s generation: whatever the
    /// outcome, a cached index may be stale now. Returns the outcome and
    /// the generation's guard, held while the caller updates the cached
    /// index so no reader's scan interleaves.
    fn write_package(
        &self,
        name: &PackageName,
        mut batch: WriteBatch,
        binding: Option<&Repo>,
    ) -> Result<(Result<(), StoreError>, std::sync::MutexGuard<'_, u64>), StoreError> {
        if let Some(repo) = binding {
            let json = serde_json::to_vec(repo)
                .map_err(|e| StoreError(format!("cannot serialise the binding of {name}: {e}")))?;
            batch.put(format!("b/{name}").as_bytes(), &json);
        }
        let written = self.with_db(|db| Ok(db.write(batch, self.sync)?));
        let mut generation = self.generations[stripe(name)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *generation += 1;
        Ok((written, generation))
    }

    /// Converts a database of the previous layout (`d/` documents, `r/`
    /// rendered forms, `m/public_url`): each package becomes its records in
    /// one synced batch that also deletes its old keys, so the conversion is
    /// idempotent and resumes after a crash.
    fn convert_old_layout(&self) -> Result<(), StoreError> {
        let mut converted = 0usize;
        loop {
            let next = self.with_db(|db| {
                let mut it = db.new_iter()?;
                it.seek(b"d/");
                Ok(it
                    .current()
                    .filter(|(k, _)| k.starts_with(b"d/"))
                    .map(|(k, v)| (k.to_vec(), v.to_vec())))
            })?;
            let Some((key, raw)) = next else { break };
            if converted == 0 {
                log::info!("converting the metadata store to the record layout");
            }
            let name = std::str::from_utf8(&key[2..])
                .ok()
                .and_then(|n| PackageName::parse(n).ok())
                .ok_or_else(|| StoreError("a stored package name is invalid".into()))?;
            let doc: Packument = serde_json::from_slice(&raw)
                .map_err(|e| StoreError(format!("packument of {name} is corrupt: {e}")))?;
            let mut doc = doc;
            for manifest in doc.versions.values_mut() {
                if let Value::Object(m) = manifest {
                    m.remove("readme");
                }
            }
            let mut batch = WriteBatch::default();
            add_to_batch(&mut batch, &name, &Index::default(), &doc, |_| Ok(None))?;
            batch.delete(&key);
            for form in ["full", "full.gz", "abbr", "abbr.gz"] {
                batch.delete(format!("r/{form}/{name}").as_bytes());
            }
            self.with_db(|db| Ok(db.write(batch, self.sync)?))?;
            converted += 1;
            if converted.is_multiple_of(100) {
                log::info!("converted {converted} packages");
            }
        }
        let leftovers = self.scan(b"r/")?;
        let mut batch = WriteBatch::default();
        for (key, _) in &leftovers {
            batch.delete(key);
        }
        batch.delete(b"m/public_url");
        self.with_db(|db| Ok(db.write(batch, self.sync)?))?;
        if converted > 0 {
            log::info!("converted {converted} packages to the record layout");
        }
        Ok(())
    }

    /// Every key starting with `prefix`, with its value, in key order.
    fn scan(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StoreError> {
        self.with_db(|db| {
            let mut it = db.new_iter()?;
            it.seek(prefix);
            let mut found = Vec::new();
            while let Some((k, v)) = it.current() {
                if !k.starts_with(prefix) {
                    break;
                }
                found.push((k.to_vec(), v.to_vec()));
                if !it.advance() {
                    break;
                }
            }
            Ok(found)
        })
    }

    /// Removes every record of `name` from this cache of a bucket, whose
    /// record there is gone (`db.type = "s3"`: the bucket is the truth):
    /// the package record, manifests, times, tarball index, binding and
    /// shared state, in one batch. Returns the live versions it held.
    pub fn forget(&self, name: &PackageName) -> Result<Vec<Version>, StoreError> {
        let mut batch = WriteBatch::default();
        let mut live = Vec::new();
        for kind in ["V", "T", "t"] {
            let prefix = format!("{kind}/{name}/");
            for (key, _) in self.scan(prefix.as_bytes())? {
                if kind == "t" {
                    let version = std::str::from_utf8(&key[prefix.len()..])
                        .ok()
                        .and_then(|v| Version::parse(v).ok());
                    live.extend(version);
                }
                batch.delete(&key);
            }
        }
        for kind in ["P", "b", "s"] {
            batch.delete(format!("{kind}/{name}").as_bytes());
        }
        let (written, _generation) = self.write_package(name, batch, None)?;
        self.indexes.remove(name);
        written.map(|()| live)
    }

    /// Whether any key starts with `prefix` (one seek).
    fn holds_prefix(&self, prefix: &[u8]) -> Result<bool, StoreError> {
        self.with_db(|db| {
            let mut it = db.new_iter()?;
            it.seek(prefix);
            Ok(it.current().is_some_and(|(k, _)| k.starts_with(prefix)))
        })
    }

    /// Whether this database is a `db.type = "local"` registry rather than
    /// a cache of a bucket: it holds package records (`P/`) but no shared
    /// state (`s/`), which every package a cache applied has. Under
    /// `db.type = "s3"` such a database is refused at startup, since its
    /// packages are not in the bucket (`nmr migrate --to s3` copies them).
    pub fn is_local_registry(&self) -> Result<bool, StoreError> {
        Ok(self.holds_prefix(b"P/")? && !self.holds_prefix(b"s/")?)
    }

    /// The shared record (and its ETag) this cache last applied, under
    /// `db.type = "s3"` (`s/{name}`; `src/shared.rs`).
    pub fn shared_state(
        &self,
        name: &PackageName,
    ) -> Result<Option<(crate::shared::SharedRecord, String)>, StoreError> {
        let held: Option<SharedState> =
            self.get_json(&format!("s/{name}"), || format!("shared state of {name}"))?;
        Ok(held.map(|h| (h.record, h.etag)))
    }

    /// Remembers that this cache holds `record`, whose ETag in S3 is `etag`.
    pub fn set_shared_state(
        &self,
        name: &PackageName,
        record: &crate::shared::SharedRecord,
        etag: &str,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_vec(&SharedStateOf { etag, record })
            .map_err(|e| StoreError(format!("cannot serialise the shared state of {name}: {e}")))?;
        let mut batch = WriteBatch::default();
        batch.put(format!("s/{name}").as_bytes(), &json);
        self.with_db(|db| Ok(db.write(batch, false)?))
    }

    /// Makes the local records of `name` what `record` (from S3, ETag
    /// `etag`) says: `manifests` holds the manifest of every version whose
    /// manifest the cache lacks or holds under another hash (the others
    /// stay as stored). Returns the versions it removed.
    pub fn apply_shared(
        &self,
        name: &PackageName,
        record: &crate::shared::SharedRecord,
        mut manifests: std::collections::HashMap<String, Value>,
        etag: &str,
    ) -> Result<Vec<Version>, StoreError> {
        if record.record.is_null() {
            // A placeholder holding a first publish's claim: no package.
            self.set_shared_state(name, record, etag)?;
            return Ok(Vec::new());
        }
        let stored: StoredRecord = serde_json::from_value(record.record.clone())
            .map_err(|e| StoreError(format!("the shared record of {name} is corrupt: {e}")))?;
        let versions = record
            .versions
            .iter()
            .map(|(v, _)| (v.clone(), manifests.remove(v).unwrap_or(Value::Null)))
            .collect();
        let time = time_map(
            &stored.time,
            record.times.len(),
            record.times.iter().cloned(),
        );
        let doc = stored.into_packument(versions, time);
        let removed = self.commit(name, &doc, record.binding.as_ref())?;
        self.set_shared_state(name, record, etag)?;
        Ok(removed)
    }

    /// Every package name with a package record, in key order (for
    /// `nmr migrate --to s3`).
    pub fn package_names(&self) -> Result<Vec<PackageName>, StoreError> {
        self.scan(b"P/")?
            .into_iter()
            .map(|(k, _)| {
                std::str::from_utf8(&k[2..])
                    .ok()
                    .and_then(|n| PackageName::parse(n).ok())
                    .ok_or_else(|| StoreError("a stored package name is invalid".into()))
            })
            .collect()
    }

    /// Every registry token record (raw JSON) with its hash (for `nmr
    /// migrate`).
    pub fn all_tokens(&self) -> Result<Vec<TokenBytes>, StoreError> {
        let mut found = Vec::new();
        for (k, v) in self.scan(b"k/")? {
            if let Ok(Ok(hash)) = hex::decode(&k[2..]).map(<[u8; 32]>::try_from) {
                found.push((hash, v));
            }
        }
        Ok(found)
    }

    /// The registry token whose secret hashes to `hash`, if any.
    pub fn token(&self, hash: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError> {
        self.get_json(&format!("k/{}", hex::encode(hash)), || {
            "a registry token".into()
        })
    }

    /// Stores a registry token's record, synced (the token is handed out
    /// only after this returns); a user's token is indexed under its
    /// GitHub user id too.
    pub fn put_token(&self, hash: &[u8; 32], record: &TokenRecord) -> Result<(), StoreError> {
        let json = serde_json::to_vec(record)
            .map_err(|e| StoreError(format!("cannot serialise a token record: {e}")))?;
        let hex = hex::encode(hash);
        let mut batch = WriteBatch::default();
        batch.put(format!("k/{hex}").as_bytes(), &json);
        if let Some(id) = record.github_id {
            batch.put(user_token_key(id, &record.key).as_bytes(), hex.as_bytes());
        }
        self.with_db(|db| Ok(db.write(batch, self.sync)?))
    }

    /// The tokens of the GitHub user `github_id`, by hash, oldest key
    /// first (records that vanished are skipped).
    pub fn user_tokens(&self, github_id: u64) -> Result<Vec<([u8; 32], TokenRecord)>, StoreError> {
        let index = self.scan(format!("u/{github_id:020}/").as_bytes())?;
        let mut found = Vec::new();
        for (_, hex) in index {
            let Some(hash) = hex::decode(&hex)
                .ok()
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
            else {
                continue;
            };
            if let Some(record) = self.token(&hash)? {
                found.push((hash, record));
            }
        }
        Ok(found)
    }

    /// Revokes the token hashed `hash`: its record, index entry and
    /// last-use time go in one synced write, so the next request with it is
    /// refused.
    pub fn delete_token(&self, hash: &[u8; 32]) -> Result<(), StoreError> {
        let hex = hex::encode(hash);
        let mut batch = WriteBatch::default();
        if let Some(record) = self.token(hash)?
            && let Some(id) = record.github_id
        {
            batch.delete(user_token_key(id, &record.key).as_bytes());
        }
        batch.delete(format!("k/{hex}").as_bytes());
        batch.delete(format!("l/{hex}").as_bytes());
        self.with_db(|db| Ok(db.write(batch, self.sync)?))
    }

    /// Revokes every token of the GitHub user `github_id` (their account
    /// is gone); how many there were.
    pub fn delete_user_tokens(&self, github_id: u64) -> Result<usize, StoreError> {
        let tokens = self.user_tokens(github_id)?;
        for (hash, _) in &tokens {
            self.delete_token(hash)?;
        }
        Ok(tokens.len())
    }

    /// When the token hashed `hash` was last used (Unix seconds).
    pub fn token_used_at(&self, hash: &[u8; 32]) -> Result<Option<u64>, StoreError> {
        let key = format!("l/{}", hex::encode(hash));
        Ok(self
            .with_db(|db| Ok(db.get(key.as_bytes())))?
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok()))
    }

    /// Records that the token hashed `hash` was used at `at`. Not synced
    /// (a coarse figure), and apart from the record, so it never races a
    /// revocation.
    pub fn token_used(&self, hash: &[u8; 32], at: u64) -> Result<(), StoreError> {
        let key = format!("l/{}", hex::encode(hash));
        self.with_db(|db| Ok(db.put(key.as_bytes(), at.to_string().as_bytes())?))
    }

    /// The trusted-publisher configurations of `name` (empty: none).
    pub fn trust(&self, name: &PackageName) -> Result<Vec<TrustConfig>, StoreError> {
        Ok(self
            .get_json(&format!("p/{name}"), || {
                format!("trust configurations of {name}")
            })?
            .unwrap_or_default())
    }

    /// Replaces the trusted-publisher configurations of `name`, synced.
    pub fn set_trust(&self, name: &PackageName, configs: &[TrustConfig]) -> Result<(), StoreError> {
        let json = serde_json::to_vec(configs)
            .map_err(|e| StoreError(format!("cannot serialise trust configurations: {e}")))?;
        let mut batch = WriteBatch::default();
        batch.put(format!("p/{name}").as_bytes(), &json);
        self.with_db(|db| Ok(db.write(batch, self.sync)?))
    }

    /// Stores `repo` as the binding of `name`, alone, synced.
    pub fn set_binding(&self, name: &PackageName, repo: &Repo) -> Result<(), StoreError> {
        let json = serde_json::to_vec(repo)
            .map_err(|e| StoreError(format!("cannot serialise the binding of {name}: {e}")))?;
        let mut batch = WriteBatch::default();
        batch.put(format!("b/{name}").as_bytes(), &json);
        self.with_db(|db| Ok(db.write(batch, self.sync)?))
    }

    /// The tokens GitHub accepted at or after `since` (Unix seconds), by
    /// SHA-256, with when they last were; older records are deleted.
    pub fn known_tokens(&self, since: u64) -> Result<Vec<([u8; 32], u64)>, StoreError> {
        let records = self.scan(b"g/")?;
        let mut known = Vec::new();
        let mut expired = WriteBatch::default();
        for (key, value) in records {
            let hash = hex::decode(&key[2..])
                .ok()
                .and_then(|h| <[u8; 32]>::try_from(h).ok());
            let at = std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
            match (hash, at) {
                (Some(hash), Some(at)) if at >= since => known.push((hash, at)),
                _ => expired.delete(&key),
            }
        }
        self.with_db(|db| Ok(db.write(expired, false)?))?;
        Ok(known)
    }

    /// Records that GitHub accepted the token hashed `hash` at `at` (Unix
    /// seconds). Not synced: losing the last records in a crash only means
    /// those tokens are budgeted once more.
    pub fn remember_token(&self, hash: &[u8; 32], at: u64) -> Result<(), StoreError> {
        let key = format!("g/{}", hex::encode(hash));
        self.with_db(|db| Ok(db.put(key.as_bytes(), at.to_string().as_bytes())?))
    }

    /// Flushes and closes the database; later calls fail with "closed".
    pub fn close(&self) -> Result<(), StoreError> {
        let mut guard = self.db.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut db) = guard.take() {
            db.flush()?;
            db.close()?;
        }
        Ok(())
    }
}

/// [`StoredRecord`] borrowed from a [`Packument`], for writing it
/// without copying.
#[derive(Serialize)]
struct RecordOf<'a> {
    #[serde(rename = "_id")]
    id: &'a str,
    #[serde(rename = "_rev")]
    rev: &'a str,
    name: &'a str,
    #[serde(rename = "dist-tags")]
    dist_tags: &'a std::collections::BTreeMap<String, String>,
    time: Map<String, Value>,
    maintainers: &'a [Value],
    #[serde(skip_serializing_if = "Option::is_none")]
    readme: Option<&'a str>,
}

/// What `s/{name}` holds.
#[derive(Deserialize)]
struct SharedState {
    etag: String,
    record: crate::shared::SharedRecord,
}

/// [`SharedState`] borrowed, for writing.
#[derive(Serialize)]
struct SharedStateOf<'a> {
    etag: &'a str,
    record: &'a crate::shared::SharedRecord,
}

/// The package record of `doc` as a JSON value (what S3's shared record
/// carries, `src/shared.rs`), and its versions' publish times in order.
pub fn record_parts(
    name: &PackageName,
    doc: &Packument,
) -> Result<(Value, Vec<(String, String)>), StoreError> {
    let record = serde_json::from_slice(&record_of(name, doc)?)
        .map_err(|e| StoreError(format!("cannot serialise {name}: {e}")))?;
    let times = version_times(doc)
        .map(|(v, at)| (v.to_string(), at.to_string()))
        .collect();
    Ok((record, times))
}

/// The package record of `doc` as stored under `P/{name}`.
fn record_of(name: &PackageName, doc: &Packument) -> Result<Vec<u8>, StoreError> {
    let package_time: Map<String, Value> = doc
        .time
        .iter()
        .filter(|(k, _)| is_package_time(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    serde_json::to_vec(&RecordOf {
        id: &doc.id,
        rev: &doc.rev,
        name: &doc.name,
        dist_tags: &doc.dist_tags,
        time: package_time,
        maintainers: &doc.maintainers,
        readme: doc.readme.as_deref(),
    })
    .map_err(|e| StoreError(format!("cannot serialise {name}: {e}")))
}

/// The `V/` and `t/` records of `name@v` with `manifest`.
fn put_version(
    batch: &mut WriteBatch,
    name: &PackageName,
    v: &str,
    manifest: &Value,
) -> Result<(), StoreError> {
    let json = serde_json::to_vec(manifest)
        .map_err(|e| StoreError(format!("cannot serialise {name}@{v}: {e}")))?;
    batch.put(format!("V/{name}/{v}").as_bytes(), &json);
    let shasum = manifest
        .pointer("/dist/shasum")
        .and_then(|s| s.as_str())
        .unwrap_or("");
    batch.put(format!("t/{name}/{v}").as_bytes(), shasum.as_bytes());
    Ok(())
}

/// Adds `doc`'s records to `batch` (see [`Store::commit`]): the package
/// record, and what changed against `before` (the stored index; `stored`
/// reads a stored manifest) of the version records, the tarball index and
/// the version times. Keys are built only from versions that parse as
/// [`Version`]. Returns the versions removed and the index after.
fn add_to_batch(
    batch: &mut WriteBatch,
    name: &PackageName,
    before: &Index,
    doc: &Packument,
    stored: impl Fn(&str) -> Result<Option<Value>, StoreError>,
) -> Result<(Vec<Version>, Index), StoreError> {
    batch.put(format!("P/{name}").as_bytes(), &record_of(name, doc)?);
    // Keys are built only from versions that parse; only what changed is
    // checked (and written), so an unchanged package costs no parsing.
    let valid = |v: &str| Version::parse(v).is_ok();

    // Versions. The common case appends: what was stored is a prefix.
    let appended = doc.versions.len() >= before.versions.len()
        && doc
            .versions
            .keys()
            .zip(&before.versions)
            .all(|(v, had)| v.as_str() == &**had);
    let mut removed = Vec::new();
    let had: std::collections::HashSet<&str> = if appended {
        Default::default()
    } else {
        before.versions.iter().map(|v| &**v).collect()
    };
    if !appended {
        for v in &before.versions {
            if doc.versions.contains_key(&**v) {
                continue;
            }
            if let Ok(version) = Version::parse(v) {
                batch.delete(format!("V/{name}/{v}").as_bytes());
                batch.delete(format!("t/{name}/{v}").as_bytes());
                removed.push(version);
            }
        }
    }
    for (i, (v, manifest)) in doc.versions.iter().enumerate() {
        if manifest.is_null() || !valid(v) {
            continue;
        }
        let new = if appended {
            i >= before.versions.len()
        } else {
            !had.contains(v.as_str())
        };
        if !new && stored(v)?.as_ref() == Some(manifest) {
            continue;
        }
        put_version(batch, name, v, manifest)?;
    }

    // Publish times, the same way.
    let times_appended = {
        let mut times = version_times(doc);
        before.times.iter().all(|(k, at)| {
            times
                .next()
                .is_some_and(|(v, when)| v == &**k && when == &**at)
        })
    };
    if times_appended {
        for (v, at) in version_times(doc).skip(before.times.len()) {
            if valid(v) {
                batch.put(format!("T/{name}/{v}").as_bytes(), at.as_bytes());
            }
        }
    } else {
        let had: std::collections::HashMap<&str, &str> =
            before.times.iter().map(|(k, at)| (&**k, &**at)).collect();
        for (k, _) in &before.times {
            if !doc.time.contains_key(&**k) && valid(k) {
                batch.delete(format!("T/{name}/{k}").as_bytes());
            }
        }
        for (v, at) in version_times(doc) {
            if had.get(v) != Some(&at) && valid(v) {
                batch.put(format!("T/{name}/{v}").as_bytes(), at.as_bytes());
            }
        }
    }

    let index = if appended && times_appended {
        let mut index = before.clone();
        index.versions.extend(
            doc.versions
                .keys()
                .skip(before.versions.len())
                .map(|v| Arc::from(v.as_str())),
        );
        index.times.extend(
            version_times(doc)
                .skip(before.times.len())
                .map(|(k, at)| (Arc::from(k), Arc::from(at))),
        );
        index
    } else {
        Index::of(doc)
    };
    Ok((removed, index))
}

/// The lock and generation stripe of `name`, below [`LOCK_STRIPES`].
///
/// FNV-1a over the name's bytes: read on every packument GET (the
/// document generation, `src/documents.rs`), and a name's stripe only
/// spreads contention, so a keyed hash would buy nothing for its cost.
pub fn stripe(name: &PackageName) -> usize {
    let hash = name
        .as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    (hash % LOCK_STRIPES as u64) as usize
}

/// rusty-leveldb's disk environment with durable writes: every file it
/// writes calls `sync_data` when flushed, so `DB::write(batch, true)` (which
/// flushes the log) reaches the disk before it returns.
#[derive(Clone, Default)]
pub struct SyncingEnv {
    inner: PosixDiskEnv,
}

/// A writable file whose `flush` is an `fdatasync`.
struct SyncingFile(std::fs::File);

impl Write for SyncingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl SyncingEnv {
    fn open(path: &Path, append: bool) -> rusty_leveldb::Result<Box<dyn Write>> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .map_err(|e| {
                rusty_leveldb::Status::new(
                    rusty_leveldb::StatusCode::IOError,
                    &format!("open {}: {e}", path.display()),
                )
            })?;
        Ok(Box::new(SyncingFile(file)))
    }
}

impl Env for SyncingEnv {
    fn open_sequential_file(&self, p: &Path) -> rusty_leveldb::Result<Box<dyn io::Read>> {
        self.inner.open_sequential_file(p)
    }
    fn open_random_access_file(&self, p: &Path) -> rusty_leveldb::Result<Box<dyn RandomAccess>> {
        self.inner.open_random_access_file(p)
    }
    fn open_writable_file(&self, p: &Path) -> rusty_leveldb::Result<Box<dyn Write>> {
        Self::open(p, false)
    }
    fn open_appendable_file(&self, p: &Path) -> rusty_leveldb::Result<Box<dyn Write>> {
        Self::open(p, true)
    }
    fn exists(&self, p: &Path) -> rusty_leveldb::Result<bool> {
        self.inner.exists(p)
    }
    fn children(&self, p: &Path) -> rusty_leveldb::Result<Vec<PathBuf>> {
        self.inner.children(p)
    }
    fn size_of(&self, p: &Path) -> rusty_leveldb::Result<usize> {
        self.inner.size_of(p)
    }
    fn delete(&self, p: &Path) -> rusty_leveldb::Result<()> {
        self.inner.delete(p)
    }
    fn mkdir(&self, p: &Path) -> rusty_leveldb::Result<()> {
        self.inner.mkdir(p)
    }
    fn rmdir(&self, p: &Path) -> rusty_leveldb::Result<()> {
        self.inner.rmdir(p)
    }
    fn rename(&self, old: &Path, new: &Path) -> rusty_leveldb::Result<()> {
        self.inner.rename(old, new)?;
        // Make the rename itself durable (LevelDB renames CURRENT into place).
        if let Some(dir) = new.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).ok();
        }
        Ok(())
    }
    fn lock(&self, p: &Path) -> rusty_leveldb::Result<FileLock> {
        self.inner.lock(p)
    }
    fn unlock(&self, l: FileLock) -> rusty_leveldb::Result<()> {
        self.inner.unlock(l)
    }
    fn new_logger(&self, p: &Path) -> rusty_leveldb::Result<Logger> {
        self.inner.new_logger(p)
    }
    fn micros(&self) -> u64 {
        self.inner.micros()
    }
    fn sleep_for(&self, micros: u32) {
        self.inner.sleep_for(micros)
    }
}

/// Test helpers other modules' unit tests share.
#[cfg(test)]
pub mod testing {
    use super::*;
    use crate::packument::{self, DistInfo, NewVersion, PublishOutcome};
    use serde_json::json;

    /// Publishes `name@v` into `store` as the publish command would (the
    /// rule, then a commit): the packument as committed.
    pub fn publish(store: &Store, name: &PackageName, v: &str, readme: Option<&str>) -> Packument {
        let version = Version::parse(v).unwrap();
        let previous = store.publish_view(name, &version).unwrap();
        let new = NewVersion {
            version: version.clone(),
            manifest: json!({"name": name.as_str(), "version": v, "description": "d"})
                .as_object()
                .unwrap()
                .clone(),
            tags: vec!["latest".into()],
            readme: readme.map(str::to_string),
            trusted_publisher: None,
            dist: DistInfo {
                shasum: format!("sha-{v}"),
                integrity: format!("sha512-{v}"),
                file_count: 1,
                unpacked_size: 1,
                has_install_script: false,
                has_shrinkwrap: false,
            },
        };
        let PublishOutcome::Published(doc) =
            packument::publish(previous, name, new, "alice", chrono::Utc::now(), false).unwrap()
        else {
            panic!("{name}@{v} was already published")
        };
        store.commit_publish(name, &doc, &version, None).unwrap();
        *doc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packument;
    use serde_json::json;

    fn publish(store: &Store, name: &PackageName, v: &str) -> Packument {
        testing::publish(store, name, v, None)
    }

    #[test]
    fn a_cache_forgets_one_package_and_keeps_its_prefix_neighbour() {
        let (_dir, store, name) = widget_with(&["1.0.0", "1.1.0"]);
        let neighbour = PackageName::parse("@acme/widgets").unwrap();
        publish(&store, &neighbour, "2.0.0");
        let mut forgotten = store.forget(&name).unwrap();
        forgotten.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        let forgotten: Vec<&str> = forgotten.iter().map(|v| v.as_str()).collect();
        assert_eq!(forgotten, ["1.0.0", "1.1.0"]);
        assert!(store.record(&name).unwrap().is_none());
        assert!(store.manifest(&name, "1.0.0").unwrap().is_none());
        let v1 = Version::parse("1.0.0").unwrap();
        assert!(store.tarball_shasum(&name, &v1).is_none());
        assert!(store.publish_view(&name, &v1).unwrap().is_none());
        let v2 = Version::parse("2.0.0").unwrap();
        assert_eq!(
            store.tarball_shasum(&neighbour, &v2).as_deref(),
            Some("sha-2.0.0")
        );
    }

    #[test]
    fn a_local_registry_is_told_from_a_cache_of_a_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(!store.is_local_registry().unwrap(), "an empty database");
        let name = PackageName::parse("@acme/widget").unwrap();
        publish(&store, &name, "1.0.0");
        assert!(store.is_local_registry().unwrap());
        store
            .set_shared_state(&name, &crate::shared::SharedRecord::placeholder(), "\"e\"")
            .unwrap();
        assert!(!store.is_local_registry().unwrap());
    }

    /// A store in a temporary directory (kept while the first value
    /// lives) with `@acme/widget` published at each of `versions`.
    fn widget_with(versions: &[&str]) -> (tempfile::TempDir, Store, PackageName) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let name = PackageName::parse("@acme/widget").unwrap();
        for version in versions {
            publish(&store, &name, version);
        }
        (dir, store, name)
    }

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn a_publish_writes_its_records_and_a_write_load_skips_the_rest() {
        let (_dir, store, name) = widget_with(&[]);
        assert!(store.packument(&name).unwrap().is_none());
        let record_size = || {
            store
                .with_db(|db| Ok(db.get(b"P/@acme/widget")))
                .unwrap()
                .unwrap()
                .len()
        };
        publish(&store, &name, "1.0.0");
        let first = record_size();
        publish(&store, &name, "1.1.0");
        let doc = publish(&store, &name, "1.2.0");
        assert_eq!(record_size(), first, "the package record does not grow");
        let full = store.packument(&name).unwrap().unwrap();
        assert_eq!(
            doc.versions.keys().collect::<Vec<_>>(),
            ["1.1.0", "1.2.0"],
            "the publish read latest and its own version only"
        );
        assert_eq!(full.versions.len(), 3);
        assert!(full.versions.values().all(|m| m.is_object()));
        assert_eq!(full.versions["1.2.0"], doc.versions["1.2.0"]);
        assert_eq!(full.rev, doc.rev);
        assert_eq!(full.time["1.2.0"], doc.time["1.2.0"]);
        assert_eq!(full.time.len(), 5, "created, modified and three versions");
        assert_eq!(
            store.tarball_shasum(&name, &v("1.1.0")).as_deref(),
            Some("sha-1.1.0")
        );
        assert_eq!(store.tarball_shasum(&name, &v("1.3.0")), None);
        let partial = store.package(&name, &["1.0.0"]).unwrap().unwrap();
        assert_eq!(partial.versions.len(), 3);
        assert!(partial.versions["1.1.0"].is_null(), "not loaded");
        assert_eq!(partial.versions["1.0.0"]["version"], "1.0.0");
        assert_eq!(partial.versions["1.2.0"]["version"], "1.2.0", "latest");
        let record = store.record(&name).unwrap().unwrap();
        assert_eq!(record.versions, ["1.0.0", "1.1.0", "1.2.0"]);
    }

    /// The keys a commit of `doc` would write (`+key`) and delete (`-key`).
    fn batch_keys(store: &Store, name: &PackageName, doc: &Packument) -> Vec<String> {
        let mut batch = WriteBatch::default();
        let before = store.index(name).unwrap();
        add_to_batch(&mut batch, name, &before, doc, |v| store.manifest(name, v)).unwrap();
        let mut keys: Vec<String> = batch
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}{}",
                    if v.is_some() { "+" } else { "-" },
                    String::from_utf8_lossy(k)
                )
            })
            .collect();
        keys.sort();
        keys
    }

    #[test]
    fn a_commit_writes_what_changed_and_its_index_equals_a_fresh_scan() {
        let (_dir, store, name) = widget_with(&["1.0.0", "1.1.0", "1.2.0"]);
        let fresh = |store: &Store| {
            let cached = store.index(&name).unwrap();
            store.indexes.remove(&name);
            assert_eq!(*store.index(&name).unwrap(), *cached, "cached index = scan");
        };
        fresh(&store);
        // A publish: its three records and the package record, nothing else.
        let previous = store.package(&name, &["1.3.0"]).unwrap().unwrap();
        let mut next = previous.clone();
        next.versions
            .insert("1.3.0".into(), json!({"dist": {"shasum": "s"}}));
        next.time
            .insert("1.3.0".into(), json!("2026-12-01T00:00:00.000Z"));
        assert_eq!(
            batch_keys(&store, &name, &next),
            [
                "+P/@acme/widget",
                "+T/@acme/widget/1.3.0",
                "+V/@acme/widget/1.3.0",
                "+t/@acme/widget/1.3.0"
            ]
        );
        // A dist-tag change: the package record only.
        let mut tagged = previous.clone();
        tagged.dist_tags.insert("beta".into(), "1.1.0".into());
        assert_eq!(batch_keys(&store, &name, &tagged), ["+P/@acme/widget"]);
        // Unpublishing a middle version: its manifest and tarball entry go,
        // its time stays; then a publish appends to the shorter list.
        let mut doc = store.package(&name, &[]).unwrap().unwrap();
        packument::unpublish_versions(
            &mut doc,
            &["1.0.0".into(), "1.2.0".into()],
            chrono::Utc::now(),
        )
        .unwrap();
        assert_eq!(
            batch_keys(&store, &name, &doc),
            [
                "+P/@acme/widget",
                "-V/@acme/widget/1.1.0",
                "-t/@acme/widget/1.1.0"
            ]
        );
        assert_eq!(store.commit(&name, &doc, None).unwrap(), [v("1.1.0")]);
        fresh(&store);
        publish(&store, &name, "1.4.0");
        fresh(&store);
        assert_eq!(
            store.record(&name).unwrap().unwrap().versions,
            ["1.0.0", "1.2.0", "1.4.0"]
        );
    }

    #[test]
    fn a_publish_view_holds_latest_and_the_versions_equal_up_to_build_metadata() {
        let (_dir, store, name) = widget_with(&[
            "1.0.0",
            "1.0.0-beta",
            "1.0.1",
            "1.0.10",
            "2.0.0+old",
            "1.1.0",
        ]);
        let view = store.publish_view(&name, &v("1.0.0+new")).unwrap().unwrap();
        let loaded = |view: &Packument| {
            let mut versions: Vec<&str> = view.versions.keys().map(String::as_str).collect();
            versions.sort();
            versions.join(" ")
        };
        assert_eq!(loaded(&view), "1.0.0 1.1.0");
        let view = store.publish_view(&name, &v("2.0.0")).unwrap().unwrap();
        assert_eq!(loaded(&view), "1.1.0 2.0.0+old");
        let err = publish_err(&store, &name, "1.0.0+new");
        assert!(err.contains("is 1.0.0 with other build metadata"), "{err}");
        let err = publish_err(&store, &name, "2.0.0");
        assert!(
            err.contains("is 2.0.0+old with other build metadata"),
            "{err}"
        );
        // An unpublished number keeps its time, so it cannot come back.
        let mut doc = store.package(&name, &[]).unwrap().unwrap();
        let keep: Vec<String> = ["1.0.0-beta", "1.0.1", "1.0.10", "2.0.0+old", "1.1.0"]
            .map(String::from)
            .into();
        packument::unpublish_versions(&mut doc, &keep, chrono::Utc::now()).unwrap();
        store.commit(&name, &doc, None).unwrap();
        let view = store.publish_view(&name, &v("1.0.0")).unwrap().unwrap();
        assert!(view.time.contains_key("1.0.0") && !view.versions.contains_key("1.0.0"));
        let err = publish_err(&store, &name, "1.0.0");
        assert!(err.contains("was unpublished"), "{err}");
        assert!(
            store
                .publish_view(&name, &v("9.0.0"))
                .unwrap()
                .unwrap()
                .versions
                .len()
                == 1
        );
    }

    #[test]
    fn a_publish_view_whose_latest_has_no_time_reads_the_whole_package() {
        let (_dir, store, name) = widget_with(&["1.0.0", "1.1.0"]);
        store
            .with_db(|db| Ok(db.delete(b"T/@acme/widget/1.1.0")?))
            .unwrap();
        let view = store.publish_view(&name, &v("2.0.0")).unwrap().unwrap();
        assert_eq!(view.versions.len(), 2, "not taken for an empty package");
        let doc = publish(&store, &name, "2.0.0");
        assert_eq!(doc.maintainers, [json!({"name": "alice"})]);
        assert_eq!(store.record(&name).unwrap().unwrap().versions.len(), 3);
    }

    /// The publish rule's refusal of `name@version` on its publish view.
    fn publish_err(store: &Store, name: &PackageName, version: &str) -> String {
        let version = v(version);
        let view = store.publish_view(name, &version).unwrap();
        let new = packument::NewVersion {
            version,
            manifest: Map::new(),
            tags: vec![],
            readme: None,
            trusted_publisher: None,
            dist: packument::DistInfo {
                shasum: "s".into(),
                integrity: "sha512-other".into(),
                file_count: 1,
                unpacked_size: 1,
                has_install_script: false,
                has_shrinkwrap: false,
            },
        };
        packument::publish(view, name, new, "alice", chrono::Utc::now(), false)
            .expect_err("refused")
            .message
    }

    #[test]
    fn compaction_drops_overwritten_records_after_a_scan() {
        // rusty-leveldb 4.0.2 kept every overwritten value once any
        // iterator had run (vendor/README.md); a package record rewritten
        // a thousand times must not pile up.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.scan(b"u/").unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..1000 {
            // Incompressible bytes (xorshift), so Snappy cannot hide the history.
            let v: Vec<u8> = (0..64 << 10)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            store
                .with_db(|db| Ok(db.put(b"P/@acme/widget", &v)?))
                .unwrap();
        }
        let size: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        // 64 MB written for 64 KB live: what remains is the write buffer
        // and the last tables, not the history.
        assert!(size < 16 << 20, "{} MiB on disk", size >> 20);
    }

    #[test]
    fn a_deprecation_rewrites_that_version_only() {
        let (_dir, store, name) = widget_with(&["1.0.0", "1.1.0"]);
        let mut doc = store.package(&name, &["1.0.0"]).unwrap().unwrap();
        let body = json!({"1.0.0": {"deprecated": "old"}});
        assert!(packument::deprecate(&mut doc, body.as_object().unwrap()).unwrap());
        assert_eq!(
            batch_keys(&store, &name, &doc),
            [
                "+P/@acme/widget",
                "+V/@acme/widget/1.0.0",
                "+t/@acme/widget/1.0.0"
            ],
            "the latest manifest was loaded too, and is unchanged"
        );
        store.commit(&name, &doc, None).unwrap();
        let full = store.packument(&name).unwrap().unwrap();
        assert_eq!(full.versions["1.0.0"]["deprecated"], "old");
        assert_eq!(full.versions["1.1.0"]["version"], "1.1.0", "kept as stored");
    }

    #[test]
    fn removed_versions_leave_every_record_and_the_tombstone_stays() {
        let (_dir, store, name) = widget_with(&["1.0.0", "1.1.0"]);
        let mut after = store.package(&name, &[]).unwrap().unwrap();
        packument::unpublish_all(&mut after, chrono::Utc::now());
        store.commit(&name, &after, None).unwrap();
        let doc = store.packument(&name).unwrap().unwrap();
        assert!(doc.is_empty() && doc.time.contains_key("unpublished"));
        assert!(store.manifest(&name, "1.0.0").unwrap().is_none());
        assert_eq!(store.tarball_shasum(&name, &v("1.0.0")), None);
    }
}
