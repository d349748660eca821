//! The registry's shared state: configuration and the services every
//! handler uses, built once at startup and shared behind an `Arc`.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::auth::Auth;
use crate::config::Config;
use crate::storage::Storage;
use crate::store::Store;

/// Everything a request handler needs.
pub struct Registry {
    pub config: Config,
    /// Metadata store (packuments); shared with blocking tasks.
    pub store: Arc<Store>,
    /// The served packuments and bindings, cached (`src/documents.rs`).
    pub documents: crate::documents::Documents,
    /// Small hot tarballs, cached (`src/storage/cache.rs`).
    pub tarballs: crate::storage::cache::TarballCache,
    /// Tarball storage.
    pub storage: Storage,
    /// Authorization model.
    pub auth: Auth,
    /// Base URL clients reach nmr at, ending in `/`.
    pub public_url: String,
    /// Path part of `public_url` (`/` or e.g. `/npm/`).
    pub path_prefix: String,
    /// `server.trusted_proxies`, parsed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Slots for parsing write bodies (see [`crate::cmd::parse_blocking`]).
    pub parse_slots: Semaphore,
    /// The ID-token verifier of trusted publishing (`None`: off, or not
    /// under GitHub authorization).
    pub oidc: Option<crate::oidc::Oidc>,
    /// Web logins in progress (`npm login`).
    pub sessions: crate::login::Sessions,
    /// Registry token hash → when its use was last recorded (Unix
    /// seconds), so a busy token writes at most once a minute.
    pub token_uses: quick_cache::sync::Cache<crate::auth::TokenHash, u64>,
    /// Read decisions just made, reused for a second
    /// ([`crate::auth::ReadGrants`]); `auth.github.cache_size` entries.
    pub read_grants: crate::auth::ReadGrants,
    /// Under `db.type = "s3"`, the bucket that holds the metadata's truth
    /// (`src/shared.rs`); `None` under `local`.
    pub shared: Option<Arc<crate::shared::Shared>>,
}

impl Registry {
    /// The request path below the public URL's prefix: a path that starts
    /// with the prefix (`/npm/-/ping` under `/npm/`) has it removed, any
    /// other is served as is, since reverse proxies differ in whether they
    /// strip it before forwarding.
    pub fn strip_prefix<'a>(&self, path: &'a str) -> &'a str {
        let prefix = self.path_prefix.trim_end_matches('/');
        match path.strip_prefix(prefix) {
            Some(rest) if !prefix.is_empty() && (rest.is_empty() || rest.starts_with('/')) => {
                if rest.is_empty() {
                    "/"
                } else {
                    rest
                }
            }
            _ => path,
        }
    }
}
