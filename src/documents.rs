//! The served documents: packuments as npm reads them, rendered from the
//! store's records on demand and kept in memory, apart from the store that
//! keeps the records (ARCHITECTURE.md, "The path of a request").
//!
//! - Rendering ([`render_raw`]): the full or abbreviated document, byte
//!   for byte what `packument::render_full` / `render_abbreviated` give,
//!   spliced from the stored manifests' raw JSON, with the public URL's
//!   tarball URLs, serialised once and gzipped once (level
//!   [`GZIP_LEVEL`]), with a strong ETag from `_rev` and `Last-Modified`
//!   from `time.modified`.
//! - The cache ([`Documents`]): one entry per (package, form), both
//!   encodings, weighed by their bytes within `db.cache_size` MiB
//!   (`quick_cache`, which evicts the least useful entries first). A hit is
//!   one sharded map lookup and a clone of an `Arc`; the body is `Bytes`, so
//!   a response copies nothing. A miss renders once for every concurrent
//!   reader (single flight), on the blocking pool, so the async workers
//!   never parse or gzip, and never wait for LevelDB.
//! - Invalidation: a commit calls [`Documents::invalidate`] after its batch
//!   is written. Each package hashes onto a stripe with a generation
//!   counter; a render records the generation before it reads the store
//!   and is cached only if no commit bumped it meanwhile, so a render that
//!   raced a commit is served to its own waiters but never kept.
//! - The package's GitHub binding is cached beside, for the dispatcher's
//!   authorization of every request, and invalidated the same way.
//!
//! A changed `public_url` needs nothing: documents are rendered for the
//! URL this process runs with.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::HeaderValue;

use crate::error::ApiError;
use crate::github::Repo;
use crate::name::PackageName;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::packument;
use crate::store::{LOCK_STRIPES, PackageRecord, Store};

/// The gzip level of served documents, chosen by measuring (this machine,
/// flate2's miniz_oxide backend) on a 1,000-version packument of 1.45 MB:
/// level 1 takes 1.8 ms for 45 KB, level 6 9.8 ms for 21 KB; the
/// abbreviated 1.1 MB form 1.1 ms / 30 KB against 6.9 ms / 15 KB. A render
/// happens once per change while its readers wait; level 1 keeps a cold
/// 10,000-version render near 150 ms, and both sizes are small next to
/// the plain document.
pub const GZIP_LEVEL: u32 = 1;

/// Which served form of a packument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// `application/json`: the full document.
    Full,
    /// `application/vnd.npm.install-v1+json`: the abbreviated document.
    Abbreviated,
}

impl Variant {
    /// The short tag this variant's ETags end in.
    pub fn etag_suffix(self) -> &'static str {
        match self {
            Variant::Full => "full",
            Variant::Abbreviated => "abbr",
        }
    }
}

/// One encoding of a served packument: its validators and body. The
/// validators are header values already, checked once at render, so that
/// a response clones them without checking their bytes again.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Quoted strong ETag, e.g. `"3-ab12…-full"` (`-gz` added for gzip);
    /// `None` (no ETag, so never a 304) if `_rev` could not be one.
    pub etag: Option<HeaderValue>,
    /// HTTP date of `time.modified`; `None` when that is not a date.
    pub last_modified: Option<HeaderValue>,
    /// The JSON document, gzip-compressed in the gzip encoding.
    pub body: Bytes,
}

/// Both encodings of one form of a package's packument.
#[derive(Debug, Clone)]
pub struct Served {
    pub plain: Rendered,
    pub gzip: Rendered,
}

/// A manifest's top-level entries in stored order, each value still raw
/// JSON: parsing one level deep is what rendering needs, and skips building
/// a tree of every dependency map.
struct Entries(Vec<(String, Box<RawValue>)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Entries, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Entries, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(Visit)
    }
}

impl Entries {
    fn get(&self, key: &str) -> Option<&RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| &**v)
    }
}

/// An object being written: keys in order, a key set twice keeps its first
/// place and takes the later value (as a `serde_json::Map` with
/// `preserve_order` does).
#[derive(Default)]
struct Object<'a>(Vec<(&'a str, std::borrow::Cow<'a, str>)>);

impl<'a> Object<'a> {
    fn set(&mut self, key: &'a str, json: std::borrow::Cow<'a, str>) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = json,
            None => self.0.push((key, json)),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json(out, k);
            out.push(b':');
            out.extend_from_slice(v.as_bytes());
        }
        out.push(b'}');
    }
}

fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Serialising strings, maps of strings and `Value`s cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> std::borrow::Cow<'static, str> {
    std::borrow::Cow::Owned(serde_json::to_string(value).unwrap_or_else(|_| "null".into()))
}

/// `dist` with `dist.tarball` set, as `packument::render_version` does:
/// appended to the stored object (which never has one), else merged.
fn rendered_dist(name: &PackageName, version: &str, dist: &RawValue, public_url: &str) -> String {
    let raw = dist.get();
    if let (Some(body), Ok(v)) = (raw.strip_suffix('}'), crate::name::Version::parse(version))
        && raw.starts_with('{')
        && !raw.contains("\"tarball\"")
    {
        let url = serde_json::to_string(&format!("{public_url}{}", name.tarball_path(&v)))
            .unwrap_or_default();
        let comma = if body.trim() == "{" { "" } else { "," };
        return format!("{body}{comma}\"tarball\":{url}}}");
    }
    let mut map: serde_json::Map<String, Value> =
        serde_json::from_str(dist.get()).unwrap_or_default();
    if let Ok(v) = crate::name::Version::parse(version) {
        map.insert(
            "tarball".into(),
            Value::String(format!("{public_url}{}", name.tarball_path(&v))),
        );
    }
    serde_json::to_string(&map).unwrap_or_else(|_| "{}".into())
}

/// Renders `variant` of a package from its record and raw manifests into
/// JSON bytes equal to serialising `packument::render_full` /
/// `render_abbreviated` of the same packument (a unit test holds them
/// equal), without building a tree per manifest.
pub fn render_raw(
    name: &PackageName,
    record: &PackageRecord,
    manifests: &[(String, Vec<u8>)],
    public_url: &str,
    variant: Variant,
) -> Result<Vec<u8>, String> {
    let parsed: Vec<(&str, Entries)> = manifests
        .iter()
        .map(|(v, raw)| {
            serde_json::from_slice::<Entries>(raw)
                .map(|e| (v.as_str(), e))
                .map_err(|e| format!("the manifest of {name}@{v} is corrupt: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let total: usize = manifests.iter().map(|(_, m)| m.len()).sum();
    let mut out = Vec::with_capacity(total + total / 8 + 4096);
    let mut top = Object::default();
    match variant {
        Variant::Full => {
            top.set("_id", to_json(&record.id));
            top.set("_rev", to_json(&record.rev));
            top.set("name", to_json(&record.name));
            let latest = record
                .dist_tags
                .get("latest")
                .and_then(|l| parsed.iter().find(|(v, _)| v == l));
            if let Some((_, latest)) = latest {
                for field in packument::HOISTED_FIELDS {
                    if let Some(raw) = latest.get(field) {
                        top.set(field, raw.get().into());
                    }
                }
            }
            if let Some(readme) = &record.readme {
                top.set("readme", to_json(readme));
            }
            top.set("dist-tags", to_json(&record.dist_tags));
            top.set("versions", "".into());
            top.set("time", to_json(&record.time));
            top.set("maintainers", to_json(&record.maintainers));
        }
        Variant::Abbreviated => {
            let modified = record
                .time
                .get("modified")
                .and_then(Value::as_str)
                .unwrap_or("");
            top.set("name", to_json(&record.name));
            top.set("modified", to_json(modified));
            top.set("dist-tags", to_json(&record.dist_tags));
            top.set("versions", "".into());
        }
    }
    // `versions` is written in place, streaming, between its neighbours.
    out.push(b'{');
    for (i, (key, json)) in top.0.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json(&mut out, key);
        out.push(b':');
        if *key != "versions" {
            out.extend_from_slice(json.as_bytes());
            continue;
        }
        out.push(b'{');
        for (n, (v, entries)) in parsed.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            write_json(&mut out, v);
            out.push(b':');
            let mut manifest = Object::default();
            match variant {
                Variant::Full => {
                    for (k, raw) in &entries.0 {
                        match (k.as_str(), raw.get()) {
                            ("readme", _) | ("hasInstallScript", "false") => {}
                            ("dist", _) => {
                                manifest.set(k, rendered_dist(name, v, raw, public_url).into())
                            }
                            (_, json) => manifest.set(k, json.into()),
                        }
                    }
                }
                Variant::Abbreviated => {
                    for field in packument::ABBREVIATED_FIELDS {
                        if let Some(raw) = entries.get(field) {
                            manifest.set(field, raw.get().into());
                        }
                    }
                    if let Some(dist) = entries.get("dist") {
                        manifest.set("dist", rendered_dist(name, v, dist, public_url).into());
                    }
                    let install = match entries.get("hasInstallScript") {
                        Some(computed) => computed.get() == "true",
                        None => entries.get("scripts").is_some_and(|s| {
                            serde_json::from_str::<serde_json::Map<String, Value>>(s.get())
                                .is_ok_and(|s| {
                                    ["preinstall", "install", "postinstall"]
                                        .iter()
                                        .any(|k| s.contains_key(*k))
                                })
                        }),
                    };
                    if install {
                        manifest.set("hasInstallScript", "true".into());
                    }
                }
            }
            manifest.write(&mut out);
        }
        out.push(b'}');
    }
    out.push(b'}');
    Ok(out)
}

/// Both encodings of the rendered `json`, with validators from `rev` and
/// `modified` (RFC 3339).
fn encode(json: Vec<u8>, rev: &str, modified: &str, variant: Variant) -> Served {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(json.len() / 4),
        flate2::Compression::new(GZIP_LEVEL),
    );
    // Writing to a Vec cannot fail.
    let gz = enc
        .write_all(&json)
        .and_then(|_| enc.finish())
        .unwrap_or_default();
    // `_rev` is what nmr wrote (`{n}-{hex}`) and the date is formatted
    // here, so both are valid header values unless the record is damaged.
    let header = |text: String| HeaderValue::from_maybe_shared(Bytes::from(text)).ok();
    let etag = |encoding: &str| header(format!("\"{rev}-{}{encoding}\"", variant.etag_suffix()));
    let last_modified = chrono::DateTime::parse_from_rfc3339(modified)
        .ok()
        .and_then(|t| {
            let date = t.with_timezone(&chrono::Utc);
            header(date.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        });
    Served {
        plain: Rendered {
            etag: etag(""),
            last_modified: last_modified.clone(),
            body: Bytes::from(json),
        },
        gzip: Rendered {
            etag: etag("-gz"),
            last_modified,
            body: Bytes::from(gz),
        },
    }
}

/// Renders `variant` from the records: [`render_raw`], then [`encode`].
fn render_records(
    name: &PackageName,
    record: &PackageRecord,
    manifests: &[(String, Vec<u8>)],
    public_url: &str,
    variant: Variant,
) -> Result<Served, String> {
    let json = render_raw(name, record, manifests, public_url, variant)?;
    let modified = record
        .time
        .get("modified")
        .and_then(Value::as_str)
        .unwrap_or("");
    Ok(encode(json, &record.rev, modified, variant))
}

/// A cached form: `None` when the package has no live version.
type Entry = Arc<Option<Served>>;

/// A cache key: one form of one package.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DocKey {
    name: PackageName,
    variant: Variant,
}

/// [`DocKey`] borrowed, for lookups that copy nothing.
#[derive(Hash)]
struct DocRef<'a> {
    name: &'a PackageName,
    variant: Variant,
}

impl quick_cache::Equivalent<DocKey> for DocRef<'_> {
    fn equivalent(&self, key: &DocKey) -> bool {
        *self.name == key.name && self.variant == key.variant
    }
}

/// Weighs an entry by the bytes it holds.
#[derive(Clone)]
struct ByBytes;

impl quick_cache::Weighter<DocKey, Entry> for ByBytes {
    fn weight(&self, key: &DocKey, entry: &Entry) -> u64 {
        let body = entry.as_ref().as_ref().map_or(0, |s| {
            s.plain.body.len()
                + s.gzip.body.len()
                + s.plain.etag.as_ref().map_or(0, HeaderValue::len) * 2
        });
        (key.name.as_str().len() + body + 128) as u64
    }
}

/// Documents at least this large (bytes of the plain form) are followed by
/// [`return_freed_memory`]: rendering one takes a few times its size in
/// short-lived buffers.
const TRIM_AFTER: usize = 1 << 20;

/// Gives the allocator's freed pages back to the system (glibc's
/// `malloc_trim`), so the transient buffers of a large render do not stay
/// in the process's RSS after the render (each blocking thread has its own
/// malloc arena, which glibc otherwise keeps). A few ms, next to the
/// render's hundreds. Elsewhere, a no-op.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and releases the allocator's free
    // lists; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// One lock stripe's invalidation count: bumped, and compared before a
/// render or binding read is cached, under `lock`, so an answer read
/// before an invalidation is never cached after it; read alone without it
/// ([`Documents::generation`]).
#[derive(Default)]
struct Stripe {
    lock: Mutex<()>,
    generation: AtomicU64,
}

/// The cache of served documents and bindings.
pub struct Documents {
    /// One shard, so one document may take the whole budget (quick_cache
    /// splits its capacity between shards and refuses an item larger than
    /// its shard's part): the 10,000-version packument is 15 MB. A hit
    /// takes the shard's lock for reading only.
    documents: quick_cache::sync::Cache<DocKey, Entry, ByBytes>,
    bindings: quick_cache::sync::Cache<PackageName, Option<Repo>>,
    generations: Vec<Stripe>,
    public_url: String,
    store: Arc<Store>,
}

impl Documents {
    /// A cache of at most `budget` bytes of documents rendered from `store`
    /// for `public_url`.
    pub fn new(store: Arc<Store>, public_url: &str, budget: u64) -> Documents {
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(10_000)
            .weight_capacity(budget.max(1))
            .shards(1)
            .build()
            .expect("valid cache options");
        Documents {
            documents: quick_cache::sync::Cache::with_options(
                options,
                ByBytes,
                Default::default(),
                Default::default(),
            ),
            bindings: quick_cache::sync::Cache::new(100_000),
            generations: (0..LOCK_STRIPES).map(|_| Stripe::default()).collect(),
            public_url: public_url.to_string(),
            store,
        }
    }

    fn stripe(&self, name: &PackageName) -> &Stripe {
        &self.generations[crate::store::stripe(name)]
    }

    /// How many times what is cached of `name` (and of the packages
    /// sharing its lock stripe) has been invalidated: a value read before
    /// reading any of its facts, still current afterwards, means none of
    /// them changed in between. One atomic load, no lock.
    pub fn generation(&self, name: &PackageName) -> u64 {
        self.stripe(name).generation.load(Ordering::Acquire)
    }

    /// `variant` of `name`'s packument, `None` when it has no live version.
    /// A hit is a map lookup; a miss renders once on the blocking pool.
    pub async fn get(&self, name: &PackageName, variant: Variant) -> Result<Entry, ApiError> {
        if let Some(hit) = self.documents.get(&DocRef { name, variant }) {
            return Ok(hit);
        }
        let key = DocKey {
            name: name.clone(),
            variant,
        };
        let guard = match self.documents.get_value_or_guard_async(&key).await {
            Ok(hit) => return Ok(hit),
            Err(guard) => guard,
        };
        let generation = self.generation(name);
        let store = self.store.clone();
        let public_url = self.public_url.clone();
        let owned = name.clone();
        let entry: Entry = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let found = store.raw_packument(&owned).map_err(|e| e.to_string())?;
            let loaded = started.elapsed();
            match found {
                Some((record, manifests)) if !manifests.is_empty() => {
                    let served =
                        render_records(&owned, &record, &manifests, &public_url, variant)?;
                    let rendered = started.elapsed();
                    let versions = manifests.len();
                    drop((record, manifests));
                    if served.plain.body.len() >= TRIM_AFTER {
                        return_freed_memory();
                    }
                    log::debug!(
                        "rendered {owned} ({variant:?}, {versions} versions, {} bytes): load {:.1} ms, render {:.1} ms, trim {:.1} ms",
                        served.plain.body.len(),
                        loaded.as_secs_f64() * 1000.0,
                        (rendered - loaded).as_secs_f64() * 1000.0,
                        (started.elapsed() - rendered).as_secs_f64() * 1000.0
                    );
                    Ok::<Entry, String>(Arc::new(Some(served)))
                }
                _ => Ok(Arc::new(None)),
            }
        })
        .await
        .map_err(|e| ApiError::internal(format!("rendering did not finish: {e}")))?
        .map_err(ApiError::internal)?;
        let stripe = self.stripe(name);
        let held = stripe.lock.lock().unwrap_or_else(|p| p.into_inner());
        if stripe.generation.load(Ordering::Acquire) == generation {
            let _ = guard.insert(entry.clone());
        }
        drop(held);
        Ok(entry)
    }

    /// The GitHub repository `name` is bound to, if any: cached, else one
    /// store read.
    pub fn binding(&self, name: &PackageName) -> Result<Option<Repo>, ApiError> {
        if let Some(hit) = self.bindings.get(name) {
            return Ok(hit);
        }
        let generation = self.generation(name);
        let found = self
            .store
            .binding(name)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let stripe = self.stripe(name);
        let _held = stripe.lock.lock().unwrap_or_else(|p| p.into_inner());
        if stripe.generation.load(Ordering::Acquire) == generation {
            self.bindings.insert(name.clone(), found.clone());
        }
        Ok(found)
    }

    /// Forgets what is cached of `name`: called after every committed
    /// change to it.
    pub fn invalidate(&self, name: &PackageName) {
        let stripe = self.stripe(name);
        let _held = stripe.lock.lock().unwrap_or_else(|p| p.into_inner());
        stripe.generation.fetch_add(1, Ordering::AcqRel);
        for variant in [Variant::Full, Variant::Abbreviated] {
            self.documents.remove(&DocRef { name, variant });
        }
        self.bindings.remove(name);
    }

    /// Bytes held by the document caches.
    pub fn weight(&self) -> u64 {
        self.documents.weight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn publish(store: &Store, name: &PackageName, v: &str) {
        crate::store::testing::publish(store, name, v, Some("# readme"));
    }

    #[tokio::test]
    async fn documents_are_rendered_once_and_renewed_after_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let docs = Documents::new(store.clone(), "http://a/", 1 << 20);
        let name = PackageName::parse("@acme/widget").unwrap();
        assert!(docs.get(&name, Variant::Full).await.unwrap().is_none());
        publish(&store, &name, "1.0.0");
        docs.invalidate(&name);
        let first = docs.get(&name, Variant::Full).await.unwrap();
        let served = first.as_ref().as_ref().unwrap();
        let value: serde_json::Value = serde_json::from_slice(&served.plain.body).unwrap();
        assert_eq!(
            value["versions"]["1.0.0"]["dist"]["tarball"],
            "http://a/@acme/widget/-/widget-1.0.0.tgz"
        );
        assert_eq!(value["readme"], "# readme");
        let ends_with = |value: &Option<HeaderValue>, tail: &[u8]| {
            value.as_ref().is_some_and(|v| v.as_bytes().ends_with(tail))
        };
        assert!(ends_with(&served.plain.last_modified, b" GMT"));
        assert!(ends_with(&served.gzip.etag, b"-full-gz\""));
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(&served.gzip.body[..]),
            &mut text,
        )
        .unwrap();
        assert_eq!(text.as_bytes(), &served.plain.body[..]);
        let again = docs.get(&name, Variant::Full).await.unwrap();
        assert!(Arc::ptr_eq(&first, &again), "a hit is the same bytes");
        publish(&store, &name, "1.1.0");
        docs.invalidate(&name);
        let renewed = docs.get(&name, Variant::Abbreviated).await.unwrap();
        let value: serde_json::Value =
            serde_json::from_slice(&renewed.as_ref().as_ref().unwrap().plain.body).unwrap();
        assert_eq!(value["dist-tags"]["latest"], "1.1.0");
        assert!(docs.weight() > 0);
    }

    #[test]
    fn rendering_from_raw_records_equals_rendering_the_packument() {
        let name = PackageName::parse("@acme/widget").unwrap();
        let mut versions = serde_json::Map::new();
        let manifests = [
            json!({"name": "@acme/widget", "version": "1.0.0", "description": "old",
                   "hasInstallScript": false, "deprecated": "use 2", "readme": "stale",
                   "dependencies": {"a": "^1"}, "dist": {"shasum": "s1", "integrity": "i1"}}),
            json!({"name": "@acme/widget", "version": "1.1.0", "scripts": {"postinstall": "x"},
                   "bin": {"w": "w.js"}, "dist": {"shasum": "s2", "integrity": "i2"}, "_hasShrinkwrap": true}),
            json!({"name": "@acme/widget", "version": "2.0.0", "description": "new \"quoted\" ✓",
                   "hasInstallScript": true, "repository": "acme/widget", "keywords": ["k"],
                   "readme": "in the manifest", "engines": {"node": ">=18"},
                   "dist": {"integrity": "i3", "shasum": "s3", "fileCount": 2}}),
        ];
        for m in &manifests {
            versions.insert(m["version"].as_str().unwrap().into(), m.clone());
        }
        let mut time = serde_json::Map::new();
        time.insert("created".into(), json!("2026-01-01T00:00:00.000Z"));
        time.insert("modified".into(), json!("2026-01-02T00:00:00.000Z"));
        time.insert("0.9.0".into(), json!("2025-12-31T00:00:00.000Z"));
        let doc = packument::Packument {
            id: name.to_string(),
            rev: "4-abc".into(),
            name: name.to_string(),
            dist_tags: [
                ("latest".to_string(), "2.0.0".to_string()),
                ("old".to_string(), "1.0.0".to_string()),
            ]
            .into_iter()
            .collect(),
            versions,
            time,
            maintainers: vec![json!({"name": "alice"})],
            readme: Some("# top".into()),
        };
        let record = PackageRecord::of(&doc);
        let raw: Vec<(String, Vec<u8>)> = doc
            .versions
            .iter()
            .map(|(v, m)| (v.clone(), serde_json::to_vec(m).unwrap()))
            .collect();
        for (variant, value) in [
            (
                Variant::Full,
                packument::render_full(&name, &doc, "http://a/"),
            ),
            (
                Variant::Abbreviated,
                packument::render_abbreviated(&name, &doc, "http://a/"),
            ),
        ] {
            let fast = render_raw(&name, &record, &raw, "http://a/", variant).unwrap();
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                serde_json::to_string(&value).unwrap(),
                "{variant:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_cache_stays_within_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let docs = Documents::new(store.clone(), "http://a/", 64 << 10);
        for i in 0..200 {
            let name = PackageName::parse(&format!("@acme/p{i}")).unwrap();
            publish(&store, &name, "1.0.0");
            docs.get(&name, Variant::Full).await.unwrap();
        }
        assert!(docs.weight() <= 64 << 10, "{}", docs.weight());
    }
}
