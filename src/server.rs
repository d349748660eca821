//! Startup and shutdown: bind the listener, open the metadata store and
//! tarball storage, serve until SIGINT or SIGTERM, then finish in-flight
//! requests and close LevelDB cleanly.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::auth::Auth;
use crate::config::{Config, parse_base_url};
use crate::registry::Registry;
use crate::storage::Storage;
use crate::store::Store;

/// A reason nmr cannot start; `Display` is the one line printed before
/// exiting with status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupError(pub String);

/// Builds the registry for `config`, reachable at `bound`.
pub async fn build(config: Config, bound: SocketAddr) -> Result<Registry, StartupError> {
    let public_url = config.public_url(bound);
    let path_prefix = parse_base_url(&public_url).map_err(StartupError)?;
    let store = Store::open(&config.db.path, &public_url)
        .map_err(|e| StartupError(format!("db.path: {e}")))?;
    let storage = Storage::from_config(&config.storage)
        .await
        .map_err(|e| StartupError(e.to_string()))?;
    let auth = Auth::from_config(&config.auth).map_err(StartupError)?;
    Ok(Registry {
        config,
        store,
        storage,
        auth,
        public_url,
        path_prefix,
    })
}

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

    warp::serve(crate::http::routes(registry.clone()))
        .incoming(listener)
        .graceful(shutdown_signal())
        .run()
        .await;

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
