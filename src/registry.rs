//! The registry's shared state: configuration and the services every
//! handler uses, built once at startup and shared behind an `Arc`.

use crate::auth::Auth;
use crate::config::Config;
use crate::storage::Storage;
use crate::store::Store;

/// Everything a request handler needs.
pub struct Registry {
    pub config: Config,
    /// Metadata store (packuments).
    pub store: Store,
    /// Tarball storage.
    pub storage: Storage,
    /// Authorization model.
    pub auth: Auth,
    /// Base URL clients reach nmr at, ending in `/`.
    pub public_url: String,
    /// Path part of `public_url` (`/` or e.g. `/npm/`): every route is served
    /// under it.
    pub path_prefix: String,
}
