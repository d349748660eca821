//! Startup and shutdown: bind the listener, open the metadata store and
//! tarball storage, serve (through `conn.rs`) until SIGINT or SIGTERM, then
//! finish in-flight requests and close LevelDB cleanly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::auth::Auth;
use crate::config::{Config, parse_base_url};
use crate::github::KnownTokens;
use crate::registry::Registry;
use crate::storage::Storage;
use crate::store::Store;

/// How long a token GitHub accepted stays known (exempt from the per-address
/// budget) without being accepted again: 90 days.
pub const KNOWN_TOKEN_MAX_AGE: u64 = 90 * 24 * 3600;

/// A reason nmr cannot start; `Display` is the one line printed before
/// exiting with status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupError(pub String);

/// Builds the registry for `config`, reachable at `bound`.
pub async fn build(config: Config, bound: SocketAddr) -> Result<Registry, StartupError> {
    let public_url = config.public_url(bound);
    let path_prefix = parse_base_url(&public_url).map_err(StartupError)?;
    let opened = match config.db.kind {
        crate::config::DbType::Local => Store::open(&config.db.path),
        crate::config::DbType::S3 => Store::open_cache(&config.db.path),
    };
    let store = Arc::new(opened.map_err(|e| StartupError(format!("db.path: {e}")))?);
    let documents =
        crate::documents::Documents::new(store.clone(), &public_url, config.db.cache_size << 20);
    let tarballs = crate::storage::cache::TarballCache::new(config.storage.cache_size << 20);
    let storage = Storage::from_config(&config.storage)
        .await
        .map_err(|e| StartupError(e.to_string()))?;
    let shared = match (&config.db.kind, &storage) {
        (crate::config::DbType::S3, Storage::S3(s3)) => {
            let (client, prefix, describe) = s3.parts();
            if store
                .is_local_registry()
                .map_err(|e| StartupError(format!("db.path: {e}")))?
            {
                return Err(StartupError(format!(
                    "db.path ({}) holds a db.type = \"local\" registry, whose packages are not in \
                     the bucket: copy them with `nmr migrate --to s3` (README, \"Running several \
                     instances\"), or give db.type = \"s3\" an empty db.path",
                    config.db.path.display()
                )));
            }
            let shared = crate::shared::Shared::new(client, prefix, describe, &config.db.s3);
            shared.probe().await.map_err(StartupError)?;
            Some(Arc::new(shared))
        }
        (crate::config::DbType::S3, Storage::Local(_)) => {
            return Err(StartupError(
                "db.type = \"s3\" needs storage.type = \"s3\"".into(),
            ));
        }
        (crate::config::DbType::Local, _) => None,
    };
    let since = crate::github::unix_now().saturating_sub(KNOWN_TOKEN_MAX_AGE);
    let remembered = store
        .known_tokens(since)
        .map_err(|e| StartupError(format!("db.path: {e}")))?;
    let writer = store.clone();
    let known = KnownTokens::new(
        config.auth.github.cache_size,
        remembered,
        Box::new(move |hash, at| {
            let store = writer.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = store.remember_token(&hash, at) {
                    log::warn!("cannot remember an accepted token: {e}");
                }
            });
        }),
    );
    let revoker = store.clone();
    let bucket = shared.clone();
    let on_gone = Box::new(move |github_id: u64| {
        if let Some(shared) = bucket.clone() {
            tokio::spawn(async move {
                match shared.delete_user_tokens(github_id).await {
                    Ok(n) => log::info!("revoked {n} registry tokens of GitHub user {github_id}"),
                    Err(e) => {
                        log::warn!("cannot revoke the tokens of GitHub user {github_id}: {e}")
                    }
                }
            });
            return;
        }
        let store = revoker.clone();
        tokio::task::spawn_blocking(move || match store.delete_user_tokens(github_id) {
            Ok(n) => log::info!("revoked {n} registry tokens of GitHub user {github_id}"),
            Err(e) => log::warn!("cannot revoke the tokens of GitHub user {github_id}: {e}"),
        });
    });
    let auth = Auth::from_config(&config.auth, known, on_gone).map_err(StartupError)?;
    let trusted_proxies = config
        .trusted_proxies()
        .map_err(|e| StartupError(e.to_string()))?;
    let oidc = match (&auth, config.auth.github.oidc.enabled) {
        (Auth::Github(_), true) => Some(
            crate::oidc::Oidc::new(&config.auth.github.oidc, &public_host(&public_url))
                .map_err(StartupError)?,
        ),
        _ => None,
    };
    let read_grants = config.auth.github.cache_size;
    Ok(Registry {
        config,
        store,
        documents,
        tarballs,
        storage,
        auth,
        public_url,
        path_prefix,
        trusted_proxies,
        parse_slots: tokio::sync::Semaphore::new(crate::cmd::PARSE_SLOTS),
        oidc,
        sessions: crate::login::Sessions::default(),
        token_uses: quick_cache::sync::Cache::new(100_000),
        read_grants: crate::auth::ReadGrants::new(read_grants),
        shared,
    })
}

/// The host name of a base URL, without port: `npm:` + this is the audience
/// npm asks GitHub for.
pub fn public_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6).to_string();
    }
    authority.split(':').next().unwrap_or(authority).to_string()
}

/// Blocking threads per worker (`spawn_blocking`: file reads, LevelDB
/// misses, publish parsing); a bound keeps memory flat under load.
const BLOCKING_THREADS: usize = 16;

/// Runs nmr with `config` until SIGINT or SIGTERM. Prints
/// `nmr listening on http://ADDR (public URL URL)` on stdout once ready.
pub async fn run(config: Config) -> Result<(), StartupError> {
    let addr = format!("{}:{}", config.server.host, config.server.port);
    let listener = listen(&addr).await.map_err(|e| {
        StartupError(format!(
            "server.host/server.port: cannot listen on {addr}: {e}"
        ))
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| StartupError(format!("cannot read the bound address: {e}")))?;
    let registry = Arc::new(build(config, bound).await?);
    println!(
        "nmr listening on http://{bound} (public URL {})",
        registry.public_url
    );
    log::info!("listening on {bound}, public URL {}", registry.public_url);
    let server = &registry.config.server;
    match crate::conn::raise_open_files_limit() {
        Ok((soft, hard)) => {
            log::info!(
                "open-files limit {soft} (hard {hard}); serving at most {} connections",
                server.max_connections
            );
            if (server.max_connections as u64).saturating_add(64) > soft {
                log::warn!(
                    "server.max_connections ({}) is close to the open-files limit ({soft}): lower it or raise the limit",
                    server.max_connections
                );
            }
        }
        Err(e) => log::warn!("cannot raise the open-files limit: {e}"),
    }
    let limits = crate::conn::Limits {
        header_timeout: Duration::from_secs(server.header_timeout),
        keep_alive_timeout: Duration::from_secs(server.keep_alive_timeout),
        max_connections: server.max_connections,
    };
    let workers =
        crate::workers::Workers::start(server.workers, BLOCKING_THREADS).map_err(|e| {
            StartupError(format!(
                "server.workers: cannot start the worker threads: {e}"
            ))
        })?;
    log::info!("serving connections on {} worker threads", workers.len());
    let service = crate::http::Service::new(registry.clone());
    crate::conn::serve(
        listener,
        &workers,
        |peer| service.for_peer(peer),
        limits,
        shutdown_signal(),
    )
    .await;
    // Connections have finished (or had their grace): what the workers
    // still run is cancelled, and their blocking tasks (store writes among
    // them) return before the store closes.
    workers.stop();

    log::info!("stopped accepting; closing the metadata store");
    registry
        .store
        .close()
        .map_err(|e| StartupError(format!("closing the database: {e}")))?;
    log::info!("shut down cleanly");
    Ok(())
}

/// Binds `addr` (`HOST:PORT`, HOST may be a name) with `TCP_NODELAY` set on
/// the listening socket, which Linux passes on to every accepted connection:
/// without it, the last partial segment of a multi-chunk response waits for
/// a delayed ACK (~40 ms).
async fn listen(addr: &str) -> std::io::Result<TcpListener> {
    let mut last_error = None;
    for addr in tokio::net::lookup_host(addr).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_nodelay(true)?;
        match socket.bind(addr).and_then(|_| socket.listen(1024)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::other("the host resolves to no address")))
}

/// Asks the nmr that `config` describes for `GET {prefix}-/ping` on the
/// loopback address of its port (with a 5 s timeout): `Ok` on 200.
pub fn healthcheck(config: &Config) -> Result<(), String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], config.server.port));
    let prefix = parse_base_url(&config.public_url(addr))?;
    let timeout = std::time::Duration::from_secs(5);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).ok();
    write!(
        stream,
        "GET {prefix}-/ping HTTP/1.0\r\nHost: {addr}\r\n\r\n"
    )
    .map_err(|e| format!("cannot send to {addr}: {e}"))?;
    let mut response = String::new();
    stream
        .take(4096)
        .read_to_string(&mut response)
        .map_err(|e| format!("no answer from {addr}: {e}"))?;
    match response.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        other => Err(format!(
            "GET {prefix}-/ping answered {}",
            other.unwrap_or("nothing")
        )),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => log::info!("SIGINT received, shutting down"),
        _ = term.recv() => log::info!("SIGTERM received, shutting down"),
    }
}
