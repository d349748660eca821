//! The in-memory cache of small tarballs: a hot tarball is served from
//! memory (one map lookup and a clone of `Bytes`) instead of a file stream
//! through the blocking pool. Tarballs are immutable under their version
//! (a live version is never replaced), so an entry never goes stale; it
//! leaves only when its version is unpublished ([`TarballCache::remove`])
//! or when the byte budget (`storage.cache_size` MiB) evicts it.

use bytes::Bytes;

use crate::name::{PackageName, Version};

/// Tarballs larger than this are always streamed, never cached.
pub const MAX_CACHED_TARBALL: u64 = 1 << 20;

/// A cached tarball: its bytes and its ETag (`"SHASUM"`).
#[derive(Debug, Clone)]
pub struct Cached {
    pub bytes: Bytes,
    pub etag: Bytes,
}

/// Weighs an entry by its bytes.
#[derive(Clone)]
struct ByBytes;

impl quick_cache::Weighter<String, Cached> for ByBytes {
    fn weight(&self, key: &String, cached: &Cached) -> u64 {
        (key.len() + cached.bytes.len() + cached.etag.len() + 64) as u64
    }
}

/// Tarballs by `name@version`.
pub struct TarballCache {
    cache: quick_cache::sync::Cache<String, Cached, ByBytes>,
}

fn key(name: &PackageName, version: &Version) -> String {
    format!("{name}@{version}")
}

impl TarballCache {
    /// A cache of at most `budget` bytes (0: nothing is cached).
    pub fn new(budget: u64) -> TarballCache {
        TarballCache {
            cache: quick_cache::sync::Cache::with_weighter(4096, budget.max(1), ByBytes),
        }
    }

    /// The cached tarball of `name@version`.
    pub fn get(&self, name: &PackageName, version: &Version) -> Option<Cached> {
        self.cache.get(&key(name, version))
    }

    /// Keeps `cached` as `name@version` when small enough.
    pub fn insert(&self, name: &PackageName, version: &Version, cached: Cached) {
        if (cached.bytes.len() as u64) <= MAX_CACHED_TARBALL {
            self.cache.insert(key(name, version), cached);
        }
    }

    /// Forgets `name@version` (it was unpublished).
    pub fn remove(&self, name: &PackageName, version: &Version) {
        self.cache.remove(&key(name, version));
    }

    /// Bytes held.
    pub fn weight(&self) -> u64 {
        self.cache.weight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_small_tarballs_within_the_budget() {
        let cache = TarballCache::new(10 << 20);
        let name = PackageName::parse("@acme/widget").unwrap();
        let v = |s: &str| Version::parse(s).unwrap();
        let of = |n: usize| Cached {
            bytes: Bytes::from(vec![1u8; n]),
            etag: Bytes::from_static(b"\"abc\""),
        };
        cache.insert(&name, &v("1.0.0"), of(1000));
        cache.insert(&name, &v("2.0.0"), of(2 << 20));
        assert_eq!(cache.get(&name, &v("1.0.0")).unwrap().bytes.len(), 1000);
        assert!(
            cache.get(&name, &v("2.0.0")).is_none(),
            "too large to cache"
        );
        cache.remove(&name, &v("1.0.0"));
        assert!(cache.get(&name, &v("1.0.0")).is_none());
        for i in 0..100 {
            cache.insert(&name, &v(&format!("3.0.{i}")), of(500 << 10));
        }
        assert!(cache.weight() <= 10 << 20);
    }
}
