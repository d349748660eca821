//! The HTTP layer: one warp filter that takes every request, finds its
//! [`Route`], calls the command in `cmd/`, renders errors as
//! `{"error": ...}`, and writes one access-log line.
//!
//! Kept thin on purpose: parsing and rendering live here, decisions in
//! `cmd/` and the plain modules they call.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use warp::Filter;
use warp::reply::Response;

use crate::auth::Credentials;
use crate::cmd;
use crate::error::ApiError;
use crate::registry::Registry;
use crate::route::{self, Route, Target};

/// One parsed request, as the commands see it.
pub struct Request {
    pub method: Method,
    /// The path below the public URL's prefix, still percent-encoded, with a
    /// leading `/`.
    pub path: String,
    /// The raw query string, without `?` (empty when none).
    pub query: String,
    pub headers: HeaderMap,
    /// The caller's token, if any.
    pub credentials: Option<Credentials>,
}

/// The warp filter serving every route of `registry`.
pub fn routes(
    registry: Arc<Registry>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::any()
        .map(move || registry.clone())
        .and(warp::method())
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and_then(handle)
}

async fn handle(
    registry: Arc<Registry>,
    method: Method,
    path: warp::path::FullPath,
    query: String,
    headers: HeaderMap,
    body: impl Stream<Item = Result<impl Buf, warp::Error>> + Send + Unpin,
) -> Result<Response, Infallible> {
    let started = Instant::now();
    let full_path = path.as_str();
    let response = match full_path.strip_prefix(registry.path_prefix.trim_end_matches('/')) {
        Some(rest) if rest.starts_with('/') => {
            let request = Request {
                method: method.clone(),
                path: rest.to_string(),
                query,
                credentials: Credentials::from_headers(&headers),
                headers,
            };
            // Bodies are read before any answer, so an early error leaves the
            // connection usable for the client's next request.
            let limit = registry.config.server.max_body_size;
            match read_body(&request.headers, body, limit).await {
                Ok(body) => dispatch(&registry, request, body).await,
                Err(e) => Err(e),
            }
        }
        _ => Err(ApiError::not_found(format!(
            "not found: this registry is served under {}",
            registry.public_url
        ))),
    };
    let response = response.unwrap_or_else(error_response);
    let bytes = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("0")
        .to_string();
    log::info!(
        target: "nmr::access",
        "{method} {} {} {bytes}B {:.2}ms",
        loggable_path(full_path),
        response.status().as_u16(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(response)
}

/// The path as it may appear in a log: the token `npm logout` puts in the
/// path is replaced by `<redacted>`.
pub fn loggable_path(path: &str) -> String {
    match path.find("/-/user/token/") {
        Some(i) => format!("{}/-/user/token/<redacted>", &path[..i]),
        None => path.to_string(),
    }
}

async fn dispatch(
    registry: &Registry,
    request: Request,
    body: Bytes,
) -> Result<Response, ApiError> {
    let route = route::parse(&request.path);
    let method = request.method.clone();
    let is_read = method == Method::GET || method == Method::HEAD;
    match route {
        Route::Ping if is_read => Ok(json(StatusCode::OK, "{}")),
        Route::Whoami if is_read => cmd::user::whoami(registry, &request).await,
        Route::Logout if method == Method::DELETE => cmd::user::logout(),
        Route::User(name) if method == Method::PUT => {
            cmd::user::login(registry, &name, &body).await
        }
        Route::WebLogin => Err(ApiError::not_found(
            "web login is not available: run npm login --auth-type=legacy and give a GitHub token as the password",
        )),
        Route::Audit if method == Method::POST => Ok(json(StatusCode::OK, "{}")),
        Route::DistTags { name, tag } => match (method, tag) {
            (Method::GET, None) => cmd::dist_tags::list(registry, &request, &name).await,
            (Method::PUT, Some(tag)) => {
                cmd::dist_tags::add(registry, &request, &name, &tag, &body).await
            }
            (Method::DELETE, Some(tag)) => {
                cmd::dist_tags::remove(registry, &request, &name, &tag).await
            }
            _ => Err(method_not_allowed()),
        },
        Route::Package { name, target } => match (target, method) {
            (Target::Document, m) if is_read_method(&m) => {
                cmd::packument::get(registry, &request, &name).await
            }
            (Target::Document, Method::PUT) => {
                cmd::publish::put(registry, &request, &name, body).await
            }
            (Target::Version(spec), m) if is_read_method(&m) => {
                cmd::packument::get_version(registry, &request, &name, &spec).await
            }
            (Target::Rev(rev), Method::PUT) => {
                cmd::unpublish::remove_versions(registry, &request, &name, &rev, &body).await
            }
            (Target::Rev(rev), Method::DELETE) => {
                cmd::unpublish::remove_package(registry, &request, &name, &rev).await
            }
            (Target::Tarball(file), m) if is_read_method(&m) => {
                cmd::tarball::get(registry, &request, &name, &file).await
            }
            (Target::TarballRev(_), Method::DELETE) => {
                cmd::tarball::delete(registry, &request, &name).await
            }
            _ => Err(method_not_allowed()),
        },
        Route::Upstream if is_read => cmd::upstream::redirect(registry, &request),
        Route::Upstream if method == Method::DELETE && is_tarball_delete(&request.path) => {
            // npm's unpublish may double a path prefix here (PROTOCOL.md
            // §3.4); the tarball went with the version, so report success.
            Ok(json(StatusCode::OK, r#"{"ok":true}"#))
        }
        Route::Upstream => Err(ApiError::forbidden(
            "only scoped packages (@scope/name) can be published or changed on this registry",
        )),
        Route::InvalidName(message) => Err(ApiError::bad_request(message)),
        Route::NotFound
        | Route::Ping
        | Route::Whoami
        | Route::Logout
        | Route::User(_)
        | Route::Audit => Err(ApiError::not_found("not found")),
    }
}

fn is_read_method(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

fn is_tarball_delete(path: &str) -> bool {
    path.rsplit_once("/-rev/")
        .is_some_and(|(before, _)| before.ends_with(".tgz"))
}

fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this path",
    )
}

/// Reads a request body of at most `limit` bytes: 413 when the declared
/// `Content-Length` or the bytes actually sent exceed it.
pub async fn read_body(
    headers: &HeaderMap,
    mut body: impl Stream<Item = Result<impl Buf, warp::Error>> + Unpin,
    limit: u64,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than this registry's limit of {limit} bytes (server.max_body_size)"
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("could not read the request body: {e}")))?;
        if buf.len() as u64 + chunk.remaining() as u64 > limit {
            return Err(too_large());
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

/// A JSON response with `Cache-Control: no-store` (answers to writes and
/// per-user reads must not be cached).
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response {
    let body: Bytes = body.into();
    let mut response = Response::new(body.clone().into());
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `{"ok": true, "id": NAME, "rev": REV}`: npm's success answer to writes.
pub fn ok(status: StatusCode, id: &str, rev: &str) -> Response {
    json(
        status,
        serde_json::json!({ "ok": true, "id": id, "rev": rev }).to_string(),
    )
}

/// Renders an [`ApiError`] as `{"error": ...}` with its status.
pub fn error_response(error: ApiError) -> Response {
    if error.status.is_server_error() {
        log::error!("{error}");
    }
    let mut response = json(error.status, error.body());
    if let Some(challenge) = error.www_authenticate {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_in_paths_are_redacted() {
        assert_eq!(
            loggable_path("/-/user/token/npm_secret"),
            "/-/user/token/<redacted>"
        );
        assert_eq!(
            loggable_path("/npm/-/user/token/x%2Fy"),
            "/npm/-/user/token/<redacted>"
        );
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
        let mut headers = HeaderMap::new();
        assert_eq!(read_body(&headers, chunks(), 9).await.unwrap(), "123456789");
        assert_eq!(
            read_body(&headers, chunks(), 8).await.unwrap_err().status,
            413
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(100));
        assert_eq!(
            read_body(&headers, chunks(), 50).await.unwrap_err().status,
            413
        );
    }

    #[test]
    fn tarball_deletes_are_recognised() {
        assert!(is_tarball_delete(
            "/scoped/@acme/widget/-/widget-1.0.0.tgz/-rev/3-a"
        ));
        assert!(!is_tarball_delete("/lodash/-rev/3-a"));
    }
}
