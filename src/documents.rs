//! The served documents: packuments as npm reads them, rendered from the
//! store's records on demand and kept in memory, apart from the store that
//! keeps the records (ARCHITECTURE.md, "The path of a request").
//!
//! - Rendering ([`render`]): the full or abbreviated document
//!   (`packument::render_full` / `render_abbreviated`) with the public
//!   URL's tarball URLs, serialised once and gzipped once (level
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
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::error::ApiError;
use crate::github::Repo;
use crate::name::PackageName;
use crate::packument::{self, Packument};
use crate::store::Store;

/// The gzip level of served documents. Measured on a 1,000-version
/// packument (844 KB): level 1 compresses it in ~4 ms to 12 % of its size,
/// level 6 in ~9 ms to 10 %, level 9 in ~30 ms for 1 % less; npm
/// downloads it at most once per change, so the cheap end wins.
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

/// One encoding of a served packument: its validators and body.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Quoted strong ETag, e.g. `"3-ab12…-full"` (`-gz` added for gzip).
    pub etag: Bytes,
    /// HTTP date of `time.modified`.
    pub last_modified: Bytes,
    /// The JSON document, gzip-compressed in the gzip encoding.
    pub body: Bytes,
}

/// Both encodings of one form of a package's packument.
#[derive(Debug, Clone)]
pub struct Served {
    pub plain: Rendered,
    pub gzip: Rendered,
}

/// Renders `variant` of `doc` for `public_url`, plain and gzipped.
pub fn render(
    name: &PackageName,
    doc: &Packument,
    public_url: &str,
    variant: Variant,
) -> Result<Served, String> {
    let value = match variant {
        Variant::Full => packument::render_full(name, doc, public_url),
        Variant::Abbreviated => packument::render_abbreviated(name, doc, public_url),
    };
    let json = serde_json::to_vec(&value).map_err(|e| format!("cannot serialise {name}: {e}"))?;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(json.len() / 4),
        flate2::Compression::new(GZIP_LEVEL),
    );
    let gz = enc
        .write_all(&json)
        .and_then(|_| enc.finish())
        .map_err(|e| format!("cannot gzip {name}: {e}"))?;
    let etag = format!("\"{}-{}", doc.rev, variant.etag_suffix());
    let last_modified = Bytes::from(
        chrono::DateTime::parse_from_rfc3339(doc.modified())
            .map(|t| {
                t.with_timezone(&chrono::Utc)
                    .format("%a, %d %b %Y %H:%M:%S GMT")
                    .to_string()
            })
            .unwrap_or_default(),
    );
    Ok(Served {
        plain: Rendered {
            etag: Bytes::from(format!("{etag}\"")),
            last_modified: last_modified.clone(),
            body: Bytes::from(json),
        },
        gzip: Rendered {
            etag: Bytes::from(format!("{etag}-gz\"")),
            last_modified,
            body: Bytes::from(gz),
        },
    })
}

/// A cached form: `None` when the package has no live version.
type Entry = Arc<Option<Served>>;

/// Weighs an entry by the bytes it holds.
#[derive(Clone)]
struct ByBytes;

impl quick_cache::Weighter<PackageName, Entry> for ByBytes {
    fn weight(&self, name: &PackageName, entry: &Entry) -> u64 {
        let body = entry.as_ref().as_ref().map_or(0, |s| {
            s.plain.body.len() + s.gzip.body.len() + s.plain.etag.len() * 2
        });
        (name.as_str().len() + body + 128) as u64
    }
}

/// How many generation stripes package names hash onto.
const STRIPES: usize = 64;

/// The cache of served documents and bindings.
pub struct Documents {
    full: quick_cache::sync::Cache<PackageName, Entry, ByBytes>,
    abbreviated: quick_cache::sync::Cache<PackageName, Entry, ByBytes>,
    bindings: quick_cache::sync::Cache<PackageName, Option<Repo>>,
    generations: Vec<Mutex<u64>>,
    public_url: String,
    store: Arc<Store>,
}

impl Documents {
    /// A cache of at most `budget` bytes of documents (split between the
    /// two forms) rendered from `store` for `public_url`.
    pub fn new(store: Arc<Store>, public_url: &str, budget: u64) -> Documents {
        let half = (budget / 2).max(1);
        Documents {
            full: quick_cache::sync::Cache::with_weighter(10_000, half, ByBytes),
            abbreviated: quick_cache::sync::Cache::with_weighter(10_000, half, ByBytes),
            bindings: quick_cache::sync::Cache::new(100_000),
            generations: (0..STRIPES).map(|_| Mutex::new(0)).collect(),
            public_url: public_url.to_string(),
            store,
        }
    }

    fn stripe(&self, name: &PackageName) -> &Mutex<u64> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut h);
        &self.generations[(h.finish() as usize) % STRIPES]
    }

    fn generation(&self, name: &PackageName) -> u64 {
        *self.stripe(name).lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `variant` of `name`'s packument, `None` when it has no live version.
    /// A hit is a map lookup; a miss renders once on the blocking pool.
    pub async fn get(&self, name: &PackageName, variant: Variant) -> Result<Entry, ApiError> {
        let cache = match variant {
            Variant::Full => &self.full,
            Variant::Abbreviated => &self.abbreviated,
        };
        if let Some(hit) = cache.get(name) {
            return Ok(hit);
        }
        let guard = match cache.get_value_or_guard_async(name).await {
            Ok(hit) => return Ok(hit),
            Err(guard) => guard,
        };
        let generation = self.generation(name);
        let store = self.store.clone();
        let public_url = self.public_url.clone();
        let owned = name.clone();
        let entry: Entry = tokio::task::spawn_blocking(move || {
            let doc = store.packument(&owned).map_err(|e| e.to_string())?;
            match doc {
                Some(doc) if !doc.is_empty() => {
                    render(&owned, &doc, &public_url, variant).map(|s| Arc::new(Some(s)))
                }
                _ => Ok(Arc::new(None)),
            }
        })
        .await
        .map_err(|e| ApiError::internal(format!("rendering did not finish: {e}")))?
        .map_err(ApiError::internal)?;
        let stripe = self.stripe(name).lock().unwrap_or_else(|p| p.into_inner());
        if *stripe == generation {
            let _ = guard.insert(entry.clone());
        }
        drop(stripe);
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
        let stripe = self.stripe(name).lock().unwrap_or_else(|p| p.into_inner());
        if *stripe == generation {
            self.bindings.insert(name.clone(), found.clone());
        }
        Ok(found)
    }

    /// Forgets what is cached of `name`: called after every committed
    /// change to it.
    pub fn invalidate(&self, name: &PackageName) {
        let mut stripe = self.stripe(name).lock().unwrap_or_else(|p| p.into_inner());
        *stripe += 1;
        self.full.remove(name);
        self.abbreviated.remove(name);
        self.bindings.remove(name);
    }

    /// Bytes held by the document caches.
    pub fn weight(&self) -> u64 {
        self.full.weight() + self.abbreviated.weight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packument::{DistInfo, NewVersion, PublishOutcome};
    use serde_json::json;

    fn publish(store: &Store, name: &PackageName, v: &str) {
        let previous = store.package(name, &[v]).unwrap();
        let new = NewVersion {
            version: crate::name::Version::parse(v).unwrap(),
            manifest: json!({"name": name.as_str(), "version": v, "description": "d"})
                .as_object()
                .unwrap()
                .clone(),
            tags: vec!["latest".into()],
            readme: Some("# readme".into()),
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
        store.commit(name, previous.as_ref(), &doc, None).unwrap();
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
        assert!(served.plain.last_modified.ends_with(b" GMT"));
        assert!(served.gzip.etag.ends_with(b"-full-gz\""));
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
