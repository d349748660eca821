//! The HTTP layer: one service ([`Service`]) that takes every request, finds its
//! [`Route`], authorizes it, reads its body, calls the command in `cmd/`,
//! renders errors as `{"error": ...}`, and writes one access-log line.
//!
//! The order is the security boundary (docs/security.md, "Identity first"):
//!
//! 1. The route is parsed from the method and path alone.
//! 2. Authorization is decided once, here, from the route's
//!    [`crate::auth::Action`] and the headers ([`authorize`]): no command can
//!    forget it, and nobody is read a body before they are known.
//! 3. Only then is the body read, within the route's limit
//!    ([`Route::body_limit`]) and `server.body_timeout` between bytes.
//! 4. An answer given before the body was read (a refusal) reads at most
//!    [`DRAIN_LIMIT`] bytes of it and closes the connection
//!    (`Connection: close`), so npm still reads the answer while an attacker's
//!    upload costs nothing.
//!
//! Kept thin on purpose: decisions live in `auth.rs` and `cmd/`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use warp::reply::Response;

use crate::auth::{Access, Credentials};
use crate::cmd;
use crate::error::ApiError;
use crate::limits::log_limited;
use crate::registry::Registry;
use crate::request::{Request, client_address, json};
use crate::route::{self, Op, Route};

/// The most bytes of a body read before an early answer closes the
/// connection.
pub const DRAIN_LIMIT: u64 = 64 * 1024;

/// The service serving every route of `registry` (what `conn.rs` runs on
/// each connection): each request's method, path, query, headers, peer and
/// body go straight to [`handle`], with no filter chain in between and no
/// copy of the headers.
#[derive(Clone)]
pub struct Service {
    registry: Arc<Registry>,
    /// The connection's peer ([`Service::for_peer`]); `None` until the
    /// connection layer names it.
    peer: Option<SocketAddr>,
}

impl Service {
    /// The service of `registry`.
    pub fn new(registry: Arc<Registry>) -> Service {
        Service {
            registry,
            peer: None,
        }
    }

    /// This service for one connection from `peer` (what `conn.rs` calls
    /// per accepted connection): the peer travels with the service, so no
    /// request needs an extensions map to carry it.
    pub fn for_peer(&self, peer: SocketAddr) -> Service {
        Service {
            registry: self.registry.clone(),
            peer: Some(peer),
        }
    }
}

impl tower_service::Service<http::Request<hyper::body::Incoming>> for Service {
    type Response = Response;
    type Error = Infallible;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<hyper::body::Incoming>) -> Self::Future {
        let registry = self.registry.clone();
        let (parts, body) = request.into_parts();
        let body = http_body_util::BodyDataStream::new(body);
        Box::pin(handle(
            registry,
            parts.method,
            parts.uri,
            parts.headers,
            self.peer,
            body,
        ))
    }
}

/// How much of a request's body was consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    /// Not read at all yet.
    Unread,
    /// Read to its end.
    Done,
    /// Reading stopped partway (too large, too slow, broken).
    Abandoned,
}

async fn handle(
    registry: Arc<Registry>,
    method: Method,
    uri: http::Uri,
    headers: HeaderMap,
    peer: Option<SocketAddr>,
    mut body: impl Stream<Item = Result<impl Buf, impl std::fmt::Display>> + Send + Unpin,
) -> Result<Response, Infallible> {
    let started = Instant::now();
    let full_path = uri.path();
    let query = uri.query().unwrap_or_default().to_string();
    let path = registry.strip_prefix(full_path);
    let route = route::parse(&method, path);
    let peer_ip = peer.map_or(std::net::Ipv4Addr::LOCALHOST.into(), |p| p.ip());
    let request = Request {
        method: method.clone(),
        path: path.to_string(),
        query,
        client: client_address(peer_ip, &headers, &registry.trusted_proxies),
        credentials: Credentials::from_headers(&headers),
        headers,
    };
    let mut state = BodyState::Unread;
    // Authorize, read the body, run the command. Written out here rather
    // than in a function of its own: each nested future is copied whole
    // into the one that awaits it, on every request.
    let result = 'serve: {
        let access = match authorize(&registry, &request, &route).await {
            Ok(access) => access,
            Err(e) => break 'serve Err(e),
        };
        let limit = route.body_limit(registry.config.server.max_body_size);
        let timeout = Duration::from_secs(registry.config.server.body_timeout);
        // A request with neither Content-Length nor Transfer-Encoding has
        // no body (RFC 9112 §6.3): nothing to read or time, as for every GET.
        let read = if !has_body(&request.headers) {
            Ok(Bytes::new())
        } else if route.discards_body() {
            discard_body(&mut body, limit, timeout)
                .await
                .map(|()| Bytes::new())
        } else {
            read_body(&request.headers, &mut body, limit, timeout).await
        };
        state = if read.is_ok() {
            BodyState::Done
        } else {
            BodyState::Abandoned
        };
        let body = match read {
            Ok(body) => body,
            Err(e) => break 'serve Err(e),
        };
        // The hot reads (`Op::is_hot_read`: packuments, version manifests,
        // tarballs) are awaited in place; every other route goes through
        // [`run`] in one box, so this future, and so every request's, stays
        // small instead of being as large as the largest command's (a
        // publish's is kilobytes, and a future is copied whole whenever it
        // moves).
        let authorized = matches!(access, Authorized::Read | Authorized::Access(_));
        match (&route, authorized) {
            (
                Route::Package {
                    name,
                    op: Op::Packument,
                },
                true,
            ) => cmd::packument::get(&registry, &request, name).await,
            (
                Route::Package {
                    name,
                    op: Op::Version(spec),
                },
                true,
            ) => cmd::packument::get_version(&registry, name, spec).await,
            (
                Route::Package {
                    name,
                    op: Op::Tarball(file),
                },
                true,
            ) => cmd::tarball::get(&registry, &request, name, file).await,
            _ => Box::pin(run(&registry, &request, route, access.into_access(), body)).await,
        }
    };
    let mut response = result.unwrap_or_else(error_response);
    if state != BodyState::Done && has_body(&request.headers) {
        // Answered before the body was read: take at most DRAIN_LIMIT of it
        // (so a small body, like npm's, is consumed and the answer is read),
        // then close rather than read the rest.
        if state == BodyState::Abandoned || !drain(&mut body).await {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    if log::log_enabled!(target: "nmr::access", log::Level::Info) {
        let bytes = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("0");
        log::info!(
            target: "nmr::access",
            "{} {method} {} {} {bytes}B {:.2}ms",
            request.client,
            loggable_path(full_path),
            response.status().as_u16(),
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    Ok(response)
}

/// The request's one authorization decision, from the route and headers:
/// for a package route, [`crate::auth::Auth::authorize`] with the package's
/// binding; for a user's route ([`Route::needs_user`]), who the caller is
/// ([`crate::auth::Auth::identify`]); other routes decide nothing here
/// (they are not about one package or user, or authenticate through their
/// body or path, as login and logout do).
async fn authorize(
    registry: &Registry,
    request: &Request,
    route: &Route,
) -> Result<Authorized, ApiError> {
    if route.needs_user() {
        return Box::pin(identify(registry, request)).await;
    }
    let Some((name, action)) = route.package() else {
        return Ok(Authorized::Nothing);
    };
    // Under db.type = "s3", the cache of this package is revalidated
    // first when older than db.s3.max_staleness (a no-op otherwise). Its
    // future is boxed, being large, and asked for only under s3, so that a
    // local store pays no box on every read.
    if registry.shared.is_some() {
        Box::pin(cmd::sync::fresh(registry, name, request.client)).await?;
    }
    // Read before any fact about the package, so a grant recorded below
    // rests on facts no commit changed since (auth::ReadGrants).
    let generation = registry.documents.generation(name);
    let grantable = grantable_read(registry, request, route);
    if let Some(token) = &grantable
        && registry
            .read_grants
            .holds(token, name, generation, std::time::Instant::now())
    {
        return Ok(Authorized::Read);
    }
    // The facts and the decision, in a box: their future is kilobytes,
    // and every request's future would otherwise be as large.
    Box::pin(decide(
        registry, request, name, action, generation, grantable,
    ))
    .await
}

/// Who the caller of a user's route is ([`Route::needs_user`]).
async fn identify(registry: &Registry, request: &Request) -> Result<Authorized, ApiError> {
    let registry_token = cmd::registry_token(registry, request).await?;
    let (identity, token) = registry
        .auth
        .identify(&request.credentials, request.client, registry_token)
        .await?;
    Ok(Authorized::Access(Access {
        identity,
        binding: None,
        found: None,
        rebind: None,
        token,
    }))
}

/// [`authorize`]'s decision for `action` on `name` from the facts: the
/// binding, the caller's registry token record, `Auth::authorize`; then a
/// rebind, or a grant recorded at `generation` for a `grantable` read.
async fn decide(
    registry: &Registry,
    request: &Request,
    name: &crate::name::PackageName,
    action: crate::auth::Action,
    generation: u64,
    grantable: Option<crate::auth::TokenHash>,
) -> Result<Authorized, ApiError> {
    let binding = match registry.auth {
        crate::auth::Auth::None => None,
        crate::auth::Auth::Github(_) => cmd::binding(registry, name)?,
    };
    let registry_token = cmd::registry_token(registry, request).await?;
    let access = registry
        .auth
        .authorize(
            &request.credentials,
            request.client,
            name,
            binding,
            action,
            registry_token,
        )
        .await?;
    if let Some(repo) = &access.rebind {
        cmd::rebind(registry, name, access.binding.as_ref(), repo).await?;
    } else if let Some(token) = grantable {
        registry
            .read_grants
            .record(token, name, generation, std::time::Instant::now());
    }
    Ok(Authorized::Access(access))
}

/// What [`authorize`] decided for a request that it let through.
// Held once per request in place, like the `Option<Access>` it replaced:
// boxing the large variant would cost an allocation on every request.
#[allow(clippy::large_enum_variant)]
enum Authorized {
    /// The route is not about one package or user: its command decides.
    Nothing,
    /// A hot read that a read decision of the last second allows
    /// ([`crate::auth::ReadGrants`]); only [`grantable_read`] routes.
    Read,
    /// This request's facts and decision.
    Access(Access),
}

impl Authorized {
    /// The facts the commands of [`run`] take (a [`Authorized::Read`]
    /// never reaches it: only hot reads are granted).
    fn into_access(self) -> Option<Access> {
        match self {
            Authorized::Access(access) => Some(access),
            Authorized::Nothing | Authorized::Read => None,
        }
    }
}

/// The token hash under which this request's read may be granted and
/// reused ([`crate::auth::ReadGrants`]): a packument, version manifest or
/// tarball GET under GitHub authorization, with a GitHub token. `None` for
/// anything else, including registry tokens, whose record is read on
/// every request so that revoking one takes effect at once.
fn grantable_read(
    registry: &Registry,
    request: &Request,
    route: &Route,
) -> Option<crate::auth::TokenHash> {
    let hot = matches!(route, Route::Package { op, .. } if op.is_hot_read());
    let Ok(Some(credentials)) = &request.credentials else {
        return None;
    };
    (hot && registry.auth.github().is_some()
        && !crate::tokens::is_registry_token(credentials.token()))
    .then(|| credentials.hash())
}

/// Runs any route's command (see [`handle`], which takes the hot reads
/// before they get here).
async fn run(
    registry: &Registry,
    request: &Request,
    route: Route,
    access: Option<Access>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (name, op, access) = match (route, access) {
        (Route::Package { name, op }, Some(access)) => (name, op, access),
        (Route::Ping, _) => return Ok(json(StatusCode::OK, "{}")),
        (Route::Whoami, Some(access)) => return Ok(cmd::user::whoami(&access)),
        (Route::Logout, _) => return cmd::user::logout(registry, request).await,
        (Route::Login(name), _) => return cmd::user::login(registry, request, &name, &body).await,
        (Route::WebLogin, _) => return cmd::login::start(registry, request).await,
        (Route::LoginSession(id), _) => return Ok(cmd::login::session(registry, &id).await),
        (Route::LoginCallback, _) => return Ok(cmd::login::callback(registry, request).await),
        (Route::LoginDone(id), _) => return cmd::login::done(registry, &id).await,
        (Route::ListTokens, Some(access)) => {
            return cmd::tokens::list(registry, request, &access).await;
        }
        (Route::CreateToken, Some(access)) => {
            return cmd::tokens::create(registry, &access, &body).await;
        }
        (Route::RevokeToken(which), Some(access)) => {
            return cmd::tokens::revoke(registry, &access, &which).await;
        }
        (Route::Profile, Some(access)) => return Ok(cmd::user::profile(&access)),
        (Route::ProfileWrite, _) => {
            return Err(ApiError::forbidden(
                "the profile is managed on GitHub: change it there",
            ));
        }
        (Route::Audit, _) => return Ok(json(StatusCode::OK, "{}")),
        (Route::OidcExchange(name), _) => {
            return cmd::oidc::exchange(registry, request, &name).await;
        }
        (Route::OidcReadExchange, _) => return cmd::oidc::exchange_read(registry, request).await,
        (Route::Upstream, _) => return cmd::upstream::redirect(registry, request),
        // npm's unpublish may double a path prefix here (docs/npm-protocol.md,
        // "unpublish"); the tarball went with the version, so report success.
        (Route::UpstreamTarballDelete, _) => return Ok(json(StatusCode::OK, r#"{"ok":true}"#)),
        (Route::UpstreamWrite, _) => {
            return Err(ApiError::forbidden(
                "only scoped packages (@scope/name) can be published or changed on this registry",
            ));
        }
        (Route::InvalidName(message), _) => return Err(ApiError::bad_request(message)),
        (Route::MethodNotAllowed, _) => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this path",
            ));
        }
        (
            Route::NotFound
            | Route::Package { .. }
            | Route::Whoami
            | Route::ListTokens
            | Route::CreateToken
            | Route::RevokeToken(_)
            | Route::Profile,
            _,
        ) => {
            return Err(ApiError::not_found("not found"));
        }
    };
    match op {
        Op::Packument => cmd::packument::get(registry, request, &name).await,
        Op::Version(spec) => cmd::packument::get_version(registry, &name, &spec).await,
        Op::Tarball(file) => cmd::tarball::get(registry, request, &name, &file).await,
        Op::Put => cmd::publish::put(registry, request, access, &name, body).await,
        Op::UnpublishVersions { rev } => {
            cmd::unpublish::remove_versions(registry, &name, &rev, body).await
        }
        Op::UnpublishPackage { rev } => cmd::unpublish::remove_package(registry, &name, &rev).await,
        Op::DeleteTarball { rev, .. } => cmd::tarball::delete(registry, &name, &rev).await,
        Op::DistTags => cmd::dist_tags::list(registry, &name).await,
        Op::AddDistTag(tag) => cmd::dist_tags::add(registry, &name, &tag, &body).await,
        Op::RemoveDistTag(tag) => cmd::dist_tags::remove(registry, &name, &tag).await,
        Op::Visibility => Ok(cmd::oidc::visibility()),
        Op::ListTrust => cmd::trust::list(registry, &name).await,
        Op::CreateTrust => cmd::trust::create(registry, access, &name, &body).await,
        Op::RevokeTrust(id) => cmd::trust::revoke(registry, &name, &id).await,
    }
}

/// The path as it may appear in a log: anything that could be `npm
/// logout`'s path (any spelling: percent-encoded slashes, doubled slashes,
/// any case) is logged as `.../-/user/token/<redacted>`, since it carries a
/// token.
pub fn loggable_path(path: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let mut collapsed = String::with_capacity(decoded.len());
    for c in decoded.chars() {
        if !(c == '/' && collapsed.ends_with('/')) {
            collapsed.push(c.to_ascii_lowercase());
        }
    }
    if collapsed.contains("/-/user/token") || collapsed.contains("/user/token/") {
        let cut = path.find("/-/").map_or(0, |i| i + 3);
        return format!("{}user/token/<redacted>", &path[..cut]);
    }
    if collapsed.contains("/tokens/token") {
        let cut = path.find("/-/").map_or(0, |i| i + 3);
        return format!("{}npm/v1/tokens/token/<redacted>", &path[..cut]);
    }

    path.to_string()
}

/// Whether the request says it carries a body.
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// Reads what is left of a body, up to [`DRAIN_LIMIT`] bytes within a
/// second: whether it ended (the connection may then be kept).
async fn drain(
    body: &mut (impl Stream<Item = Result<impl Buf, impl std::fmt::Display>> + Unpin),
) -> bool {
    let mut seen = 0u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(None) => return true,
            Ok(Some(Ok(chunk))) => {
                seen += chunk.remaining() as u64;
                if seen > DRAIN_LIMIT {
                    return false;
                }
            }
            Ok(Some(Err(_))) | Err(_) => return false,
        }
    }
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request body is larger than this route's limit of {limit} bytes (server.max_body_size for publishes)"
        ),
    )
}

fn too_slow(timeout: Duration) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "the request body sent nothing for {} s (server.body_timeout)",
            timeout.as_secs()
        ),
    )
}

/// The next chunk of `body`, or 408 when none arrives within `timeout`.
async fn next_chunk<B: Buf>(
    body: &mut (impl Stream<Item = Result<B, impl std::fmt::Display>> + Unpin),
    timeout: Duration,
) -> Result<Option<B>, ApiError> {
    match tokio::time::timeout(timeout, body.next()).await {
        Err(_) => Err(too_slow(timeout)),
        Ok(None) => Ok(None),
        Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
        Ok(Some(Err(e))) => Err(ApiError::bad_request(format!(
            "could not read the request body: {e}"
        ))),
    }
}

/// How much of a body must have arrived before the rest of its declared
/// length is reserved.
pub const RESERVE_AFTER: usize = 1 << 20;

/// Reads a request body of at most `limit` bytes: 413 when the declared
/// `Content-Length` or the bytes actually sent exceed it, 408 when no byte
/// arrives for `timeout`. The buffer grows with the bytes received; only
/// once [`RESERVE_AFTER`] bytes have arrived is the rest of a declared
/// length reserved at once (sparing a large publish the copies of doubling).
pub async fn read_body(
    headers: &HeaderMap,
    mut body: impl Stream<Item = Result<impl Buf, impl std::fmt::Display>> + Unpin,
    limit: u64,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let mut buf = BytesMut::new();
    while let Some(mut chunk) = next_chunk(&mut body, timeout).await? {
        if buf.len() as u64 + chunk.remaining() as u64 > limit {
            return Err(too_large(limit));
        }
        if let Some(declared) = declared
            && buf.len() >= RESERVE_AFTER
            && (buf.capacity() as u64) < declared
        {
            buf.reserve(declared as usize - buf.len());
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            buf.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    Ok(buf.freeze())
}

/// Consumes a body of at most `limit` bytes without keeping it.
async fn discard_body(
    body: &mut (impl Stream<Item = Result<impl Buf, impl std::fmt::Display>> + Unpin),
    limit: u64,
    timeout: Duration,
) -> Result<(), ApiError> {
    let mut seen = 0u64;
    while let Some(chunk) = next_chunk(body, timeout).await? {
        seen += chunk.remaining() as u64;
        if seen > limit {
            return Err(too_large(limit));
        }
    }
    Ok(())
}

/// Renders an [`ApiError`] as `{"error": ...}` with its status (and
/// `WWW-Authenticate`, `Retry-After` when set). Server errors are logged,
/// at most one line per status every 10 s, so a flood of failing requests
/// leaves access-log lines, not an error line each.
pub fn error_response(error: ApiError) -> Response {
    match error.status {
        StatusCode::INTERNAL_SERVER_ERROR => log_limited(log::Level::Error, "500", &error),
        s if s.is_server_error() => log_limited(log::Level::Warn, "5xx", &error),
        _ => {}
    }
    let mut response = json(error.status, error.body());
    let h = response.headers_mut();
    if let Some(challenge) = error.www_authenticate {
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    if let Some(seconds) = error.retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_in_paths_are_redacted_in_every_spelling() {
        for path in [
            "/-/user/token/npm_secret",
            "/npm/-/user/token/x%2Fy",
            "/-/user/token%2Fnpm_secret",
            "/-//user/token/npm_secret",
            "/-/user//token/npm_secret",
            "/-/USER/Token/npm_secret",
            "/-/user%2ftoken%2fnpm_secret",
            "/-/npm/v1/tokens/token/nmr_secret",
            "/-/npm/v1/tokens%2Ftoken%2Fnmr_secret",
        ] {
            let logged = loggable_path(path);
            assert!(!logged.contains("secret"), "{path} logged as {logged}");
            assert!(logged.ends_with("<redacted>"), "{logged}");
        }
        assert_eq!(loggable_path("/@acme%2fwidget"), "/@acme%2fwidget");
    }

    #[tokio::test]
    async fn body_limit_counts_declared_and_actual_bytes() {
        let chunks = || {
            futures_util::stream::iter(vec![
                Ok::<_, warp::Error>(Bytes::from_static(b"12345")),
                Ok(Bytes::from_static(b"6789")),
            ])
        };
        let t = Duration::from_secs(5);
        let mut headers = HeaderMap::new();
        assert_eq!(
            read_body(&headers, chunks(), 9, t).await.unwrap(),
            "123456789"
        );
        assert_eq!(
            read_body(&headers, chunks(), 8, t)
                .await
                .unwrap_err()
                .status,
            413
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(100));
        assert_eq!(
            read_body(&headers, chunks(), 50, t)
                .await
                .unwrap_err()
                .status,
            413
        );
    }

    #[tokio::test]
    async fn a_stalled_body_times_out() {
        let stalled =
            futures_util::stream::iter(vec![Ok::<_, warp::Error>(Bytes::from_static(b"{"))])
                .chain(futures_util::stream::pending());
        let e = read_body(
            &HeaderMap::new(),
            Box::pin(stalled),
            100,
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
        assert_eq!(e.status, 408);
    }
}
