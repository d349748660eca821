//! The metadata store: packuments in LevelDB, with their served forms
//! rendered ahead of time.
//!
//! Keys (all names validated by [`PackageName`]):
//!
//! | key | value |
//! |---|---|
//! | `d/{name}` | the canonical [`Packument`] as JSON (tombstones included) |
//! | `r/{variant}/{name}` | a [`Rendered`] document: full or abbreviated, plain or gzip |
//! | `t/{name}/{version}` | the live version's `shasum`: lets a tarball GET check the version in one lookup |
//! | `b/{name}` | the GitHub repository the package is bound to (`{"owner", "repo"}`) |
//! | `m/public_url` | the public URL the rendered documents were written with |
//! | `g/{hex SHA-256}` | a token GitHub accepted: when (Unix seconds, decimal) it last did |
//! | `k/{hex SHA-256}` | a registry token's [`TokenRecord`] (`src/tokens.rs`) |
//! | `u/{GitHub user id, 20 digits}/{key}` | a user's token, by its public key: the hex SHA-256 of its secret (for `npm token list`) |
//! | `l/{hex SHA-256}` | when (Unix seconds, decimal) a registry token was last used, at most once a minute |
//! | `p/{name}` | the package's trusted-publisher configurations (`npm trust`), a JSON array |
//!
//! Every change to a package is one atomic [`rusty_leveldb::WriteBatch`]
//! written with `sync`, and the database runs on [`SyncingEnv`], whose files
//! `fsync` on flush: rusty-leveldb itself never calls fsync
//! (docs/dependencies.md, "rusty-leveldb"), so without it an acknowledged publish could be lost
//! in a power cut.
//!
//! Reads of a packument are one `get` of pre-serialised (and pre-gzipped)
//! bytes: no JSON parsing on the hot path. Read-modify-write cycles of one
//! package are serialised by [`Store::lock`].

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rusty_leveldb::env::{Env, FileLock, Logger, RandomAccess};
use rusty_leveldb::{DB, LdbIterator, Options, PosixDiskEnv, WriteBatch};

use crate::github::Repo;
use crate::name::{PackageName, Version};
use crate::oidc::TrustConfig;
use crate::packument::{self, Packument};
use crate::tokens::TokenRecord;

/// The index key of a user's token: `u/{id, 20 digits}/{key}`.
fn user_token_key(github_id: u64, key: &str) -> String {
    format!("u/{github_id:020}/{key}")
}

/// Which served form of a packument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `application/json`: the full document.
    Full,
    /// `application/vnd.npm.install-v1+json`: the abbreviated document.
    Abbreviated,
}

impl Variant {
    fn key(self, gzip: bool, name: &str) -> Vec<u8> {
        let v = match (self, gzip) {
            (Variant::Full, false) => "full",
            (Variant::Full, true) => "full.gz",
            (Variant::Abbreviated, false) => "abbr",
            (Variant::Abbreviated, true) => "abbr.gz",
        };
        format!("r/{v}/{name}").into_bytes()
    }

    /// The short tag this variant's ETags end in.
    pub fn etag_suffix(self) -> &'static str {
        match self {
            Variant::Full => "full",
            Variant::Abbreviated => "abbr",
        }
    }
}

/// A served packument: its validators and body, stored as
/// `ETAG \n LAST-MODIFIED \n BODY` so one `get` yields a whole response.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Quoted strong ETag, e.g. `"3-ab12…-full"` (`-gz` added for gzip).
    pub etag: Bytes,
    /// HTTP date of `time.modified`.
    pub last_modified: Bytes,
    /// The JSON document, gzip-compressed in the gzip variants.
    pub body: Bytes,
}

impl Rendered {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 100);
        out.extend_from_slice(&self.etag);
        out.push(b'\n');
        out.extend_from_slice(&self.last_modified);
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        out
    }

    fn decode(raw: Bytes) -> Option<Rendered> {
        let first = raw.iter().position(|b| *b == b'\n')?;
        let second = first + 1 + raw[first + 1..].iter().position(|b| *b == b'\n')?;
        Some(Rendered {
            etag: raw.slice(..first),
            last_modified: raw.slice(first + 1..second),
            body: raw.slice(second + 1..),
        })
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

/// How many stripes [`Store::lock`] hashes package names onto.
const LOCK_STRIPES: usize = 64;

/// The LevelDB-backed metadata store. Cheap to share behind an `Arc`.
pub struct Store {
    db: Mutex<Option<DB>>,
    public_url: String,
    locks: Vec<Arc<tokio::sync::Mutex<()>>>,
}

impl Store {
    /// Opens (creating if missing) the database at `path`. If the documents
    /// were rendered for another public URL (e.g. the port changed), renders
    /// them all again for `public_url`.
    pub fn open(path: &Path, public_url: &str) -> Result<Store, StoreError> {
        std::fs::create_dir_all(path)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", path.display())))?;
        let options = Options {
            env: std::rc::Rc::new(Box::new(SyncingEnv::default())),
            ..Options::default()
        };
        let db = DB::open(path, options)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        let store = Store {
            db: Mutex::new(Some(db)),
            public_url: public_url.to_string(),
            locks: (0..LOCK_STRIPES)
                .map(|_| Arc::new(tokio::sync::Mutex::new(())))
                .collect(),
        };
        let stored_url = store.with_db(|db| Ok(db.get(b"m/public_url")))?;
        if stored_url.as_deref() != Some(public_url.as_bytes()) {
            store.render_all()?;
        }
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
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut h);
        let stripe = (h.finish() as usize) % LOCK_STRIPES;
        self.locks[stripe].clone().lock_owned().await
    }

    /// The served form of `name`'s packument, or `None` when the package has
    /// no live version. One LevelDB `get`.
    pub fn rendered(&self, name: &PackageName, variant: Variant, gzip: bool) -> Option<Rendered> {
        let key = variant.key(gzip, name.as_str());
        let raw = self.with_db(|db| Ok(db.get(&key))).ok()??;
        Rendered::decode(raw)
    }

    /// The canonical packument (tombstones included), or `None` if `name`
    /// was never published.
    pub fn packument(&self, name: &PackageName) -> Result<Option<Packument>, StoreError> {
        self.get_json(&format!("d/{name}"), || format!("packument of {name}"))
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

    /// Whether `version` of `name` is live (published and not unpublished).
    pub fn has_version(&self, name: &PackageName, version: &Version) -> bool {
        let key = format!("t/{name}/{version}");
        self.with_db(|db| Ok(db.get(key.as_bytes())))
            .ok()
            .flatten()
            .is_some()
    }

    /// Commits `doc` as `name`'s packument, with its rendered forms and
    /// version index, in one synced write batch. `previous` is the packument
    /// it replaces (to drop index entries of removed versions); `binding`,
    /// when given, becomes the package's GitHub repository in the same batch.
    pub fn commit(
        &self,
        name: &PackageName,
        previous: Option<&Packument>,
        doc: &Packument,
        binding: Option<&Repo>,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        self.add_to_batch(&mut batch, name, previous, doc)?;
        if let Some(repo) = binding {
            let json = serde_json::to_vec(repo)
                .map_err(|e| StoreError(format!("cannot serialise the binding of {name}: {e}")))?;
            batch.put(format!("b/{name}").as_bytes(), &json);
        }
        self.with_db(|db| Ok(db.write(batch, true)?))
    }

    fn add_to_batch(
        &self,
        batch: &mut WriteBatch,
        name: &PackageName,
        previous: Option<&Packument>,
        doc: &Packument,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_vec(doc)
            .map_err(|e| StoreError(format!("cannot serialise {name}: {e}")))?;
        batch.put(format!("d/{name}").as_bytes(), &json);
        if let Some(previous) = previous {
            for v in previous.versions.keys() {
                if !doc.versions.contains_key(v) {
                    batch.delete(format!("t/{name}/{v}").as_bytes());
                }
            }
        }
        for (v, manifest) in &doc.versions {
            let shasum = manifest
                .pointer("/dist/shasum")
                .and_then(|s| s.as_str())
                .unwrap_or("");
            batch.put(format!("t/{name}/{v}").as_bytes(), shasum.as_bytes());
        }
        for variant in [Variant::Full, Variant::Abbreviated] {
            for gzip in [false, true] {
                let key = variant.key(gzip, name.as_str());
                if doc.is_empty() {
                    batch.delete(&key);
                } else {
                    batch.put(
                        &key,
                        &render(name, doc, &self.public_url, variant, gzip)?.encode(),
                    );
                }
            }
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

    /// Renders every packument again for this store's public URL, in one
    /// batch, and records the URL.
    fn render_all(&self) -> Result<(), StoreError> {
        let docs = self.scan(b"d/")?;
        let mut batch = WriteBatch::default();
        for (key, raw) in docs {
            let name = std::str::from_utf8(&key[2..])
                .ok()
                .and_then(|n| PackageName::parse(n).ok())
                .ok_or_else(|| StoreError("a stored package name is invalid".into()))?;
            let doc: Packument = serde_json::from_slice(&raw)
                .map_err(|e| StoreError(format!("packument of {name} is corrupt: {e}")))?;
            self.add_to_batch(&mut batch, &name, None, &doc)?;
        }
        batch.put(b"m/public_url", self.public_url.as_bytes());
        self.with_db(|db| Ok(db.write(batch, true)?))
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
        self.with_db(|db| Ok(db.write(batch, true)?))
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
        self.with_db(|db| Ok(db.write(batch, true)?))
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
        self.with_db(|db| Ok(db.write(batch, true)?))
    }

    /// Stores `repo` as the binding of `name`, alone, synced.
    pub fn set_binding(&self, name: &PackageName, repo: &Repo) -> Result<(), StoreError> {
        let json = serde_json::to_vec(repo)
            .map_err(|e| StoreError(format!("cannot serialise the binding of {name}: {e}")))?;
        let mut batch = WriteBatch::default();
        batch.put(format!("b/{name}").as_bytes(), &json);
        self.with_db(|db| Ok(db.write(batch, true)?))
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

/// Renders one served form of `doc`.
fn render(
    name: &PackageName,
    doc: &Packument,
    public_url: &str,
    variant: Variant,
    gzip: bool,
) -> Result<Rendered, StoreError> {
    let value = match variant {
        Variant::Full => packument::render_full(name, doc, public_url),
        Variant::Abbreviated => packument::render_abbreviated(name, doc, public_url),
    };
    let json = serde_json::to_vec(&value)
        .map_err(|e| StoreError(format!("cannot serialise {name}: {e}")))?;
    let body = if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&json)
            .and_then(|_| enc.finish())
            .map_err(|e| StoreError(format!("cannot gzip {name}: {e}")))?
    } else {
        json
    };
    let gz = if gzip { "-gz" } else { "" };
    let etag = format!("\"{}-{}{gz}\"", doc.rev, variant.etag_suffix());
    let last_modified = chrono::DateTime::parse_from_rfc3339(doc.modified())
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string()
        })
        .unwrap_or_default();
    Ok(Rendered {
        etag: Bytes::from(etag),
        last_modified: Bytes::from(last_modified),
        body: Bytes::from(body),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packument::{DistInfo, NewVersion, PublishOutcome};
    use serde_json::json;

    fn publish(store: &Store, name: &PackageName, v: &str) -> Packument {
        let previous = store.packument(name).unwrap();
        let new = NewVersion {
            version: Version::parse(v).unwrap(),
            manifest: json!({"name": name.as_str(), "version": v})
                .as_object()
                .unwrap()
                .clone(),
            tags: vec!["latest".into()],
            readme: None,
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
        let PublishOutcome::Published(doc) = packument::publish(
            previous.clone(),
            name,
            new,
            "alice",
            chrono::Utc::now(),
            false,
        )
        .unwrap() else {
            panic!()
        };
        let doc = *doc;
        store.commit(name, previous.as_ref(), &doc, None).unwrap();
        doc
    }

    #[test]
    fn commit_then_read_every_form() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "http://a/").unwrap();
        let name = PackageName::parse("@acme/widget").unwrap();
        assert!(store.rendered(&name, Variant::Full, false).is_none());
        let doc = publish(&store, &name, "1.0.0");
        let full = store.rendered(&name, Variant::Full, false).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&full.body).unwrap();
        assert_eq!(value["_rev"], doc.rev.as_str());
        assert_eq!(
            value["versions"]["1.0.0"]["dist"]["tarball"],
            "http://a/@acme/widget/-/widget-1.0.0.tgz"
        );
        assert_eq!(full.etag, format!("\"{}-full\"", doc.rev));
        assert!(full.last_modified.ends_with(b" GMT"));
        let gz = store.rendered(&name, Variant::Abbreviated, true).unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz.body[..]), &mut text)
            .unwrap();
        assert!(text.contains("\"modified\""));
        assert!(store.has_version(&name, &Version::parse("1.0.0").unwrap()));
        assert!(!store.has_version(&name, &Version::parse("1.0.1").unwrap()));
    }

    #[test]
    fn reopening_with_another_public_url_rerenders() {
        let dir = tempfile::tempdir().unwrap();
        let name = PackageName::parse("@acme/widget").unwrap();
        {
            let store = Store::open(dir.path(), "http://a/").unwrap();
            publish(&store, &name, "1.0.0");
            store.close().unwrap();
        }
        let store = Store::open(dir.path(), "https://b/npm/").unwrap();
        let full = store.rendered(&name, Variant::Full, false).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&full.body).unwrap();
        assert_eq!(
            value["versions"]["1.0.0"]["dist"]["tarball"],
            "https://b/npm/@acme/widget/-/widget-1.0.0.tgz"
        );
    }

    #[test]
    fn removed_versions_leave_the_index_and_empty_packages_are_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "http://a/").unwrap();
        let name = PackageName::parse("@acme/widget").unwrap();
        publish(&store, &name, "1.0.0");
        let before = publish(&store, &name, "1.1.0");
        let mut after = before.clone();
        packument::unpublish_all(&mut after, chrono::Utc::now());
        store.commit(&name, Some(&before), &after, None).unwrap();
        assert!(store.rendered(&name, Variant::Full, false).is_none());
        assert!(!store.has_version(&name, &Version::parse("1.0.0").unwrap()));
        assert!(
            store
                .packument(&name)
                .unwrap()
                .unwrap()
                .time
                .contains_key("unpublished")
        );
    }
}
