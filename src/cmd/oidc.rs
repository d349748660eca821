//! Trusted publishing's endpoints: `POST
//! /-/npm/v1/oidc/token/exchange/package/{name}` (a GitHub Actions ID token
//! for a registry token good for that one package) and
//! `GET /-/package/{name}/visibility`. The rules are in `src/oidc.rs`; the
//! wire shapes in docs/trusted-publishing.md.
//!
//! npm posts the exchange to its registry's host root, dropping any path
//! prefix; the dispatcher serves every route with and without the prefix, so
//! this one answers at both. A refusal is 4xx `{"message", "error"}`: npm
//! logs `message` at verbose level and carries on with other credentials.

use http::StatusCode;
use http::header::{self, HeaderValue};
use serde_json::json;
use warp::reply::Response;

use crate::cmd::iso;
use crate::error::ApiError;
use crate::github::unix_now;
use crate::name::PackageName;
use crate::oidc::{self, Claims, Oidc, Refused};
use crate::registry::Registry;
use crate::request::{Request, json};
use crate::tokens::{TokenKind, TokenRecord};

fn refused(r: Refused) -> Response {
    json(r.status, r.body())
}

/// `POST /-/npm/v1/oidc/token/exchange/package/{name}` with
/// `Authorization: Bearer <ID token>` and no body: `201 {"token",
/// "token_type": "oidc", "created", "expires"}`, or a refusal.
pub async fn exchange(
    registry: &Registry,
    request: &Request,
    name: &PackageName,
) -> Result<Response, ApiError> {
    let Some(verifier) = &registry.oidc else {
        return Ok(refused(Refused {
            status: StatusCode::NOT_FOUND,
            message: "trusted publishing is off on this registry (auth.github.oidc.enabled)".into(),
        }));
    };
    let (claims, now) = match verified_claims(verifier, request).await {
        Ok(verified) => verified,
        Err(refusal) => return Ok(refusal),
    };
    if !crate::cmd::meta::first_use_of_jti(registry, &claims.jti).await? {
        return Ok(refused(Refused {
            status: StatusCode::UNAUTHORIZED,
            message: "this ID token (jti) was already exchanged: request a new one".into(),
        }));
    }
    crate::cmd::sync::fresh(registry, name, request.client).await?;
    let binding = crate::cmd::binding(registry, name)?;
    if binding.is_none()
        && registry
            .store
            .record(name)
            .map_err(|e| ApiError::internal(e.to_string()))?
            .is_some()
    {
        return Ok(refused(Refused {
            status: StatusCode::FORBIDDEN,
            message: format!(
                "{name} exists but is bound to no GitHub repository: an admin of its repository must adopt it with a publish first"
            ),
        }));
    }
    let (trust, _) = crate::cmd::meta::trust(registry, name).await?;
    let grant = match oidc::decide(
        name,
        binding.as_ref(),
        &claims,
        verifier.allow_pull_requests,
        &trust,
    ) {
        Ok(grant) => grant,
        Err(r) => return Ok(refused(r)),
    };
    let record = TokenRecord {
        packages: vec![name.to_string()],
        repository: Some(grant.repository),
        repository_id: grant.repository_id,
        publisher: Some(grant.publisher),
        ..new_record(TokenKind::Oidc, now, verifier.token_ttl)?
    };
    let response = issue(registry, &record, "oidc").await?;
    log::info!(
        "exchanged an ID token of {} ({}) for a token for {name} (key {})",
        claims.repository,
        claims.workflow_ref,
        record.key
    );
    Ok(response)
}

/// `POST /-/nmr/v1/oidc/token/exchange/read` with the workflow's ID token:
/// `201 {"token", "token_type": "oidc-read", "created", "expires"}`, a
/// read-only token for what `auth.github.oidc.read` allows
/// ([`oidc::decide_read`]). npm exchanges only on publish; a workflow
/// fetches this one itself (README, "Installing in GitHub Actions").
pub async fn exchange_read(registry: &Registry, request: &Request) -> Result<Response, ApiError> {
    let policy = registry.config.auth.github.oidc.read;
    let verifier = match (&registry.oidc, policy) {
        (Some(v), p) if p != crate::config::ReadPolicy::None => v,
        _ => {
            return Ok(refused(Refused {
                status: StatusCode::NOT_FOUND,
                message: "read tokens for GitHub Actions are off on this registry (auth.github.oidc.read)".into(),
            }));
        }
    };
    let (claims, now) = match verified_claims(verifier, request).await {
        Ok(verified) => verified,
        Err(refusal) => return Ok(refusal),
    };
    if !crate::cmd::meta::first_use_of_jti(registry, &claims.jti).await? {
        return Ok(refused(Refused {
            status: StatusCode::UNAUTHORIZED,
            message: "this ID token (jti) was already exchanged: request a new one".into(),
        }));
    }
    let grant = match oidc::decide_read(&claims, policy) {
        Ok(grant) => grant,
        Err(r) => return Ok(refused(r)),
    };
    let record = TokenRecord {
        scopes: grant.scopes,
        repository: grant.repository,
        repository_id: grant.repository_id,
        ..new_record(TokenKind::OidcRead, now, verifier.token_ttl)?
    };
    let response = issue(registry, &record, "oidc-read").await?;
    log::info!(
        "exchanged an ID token of {} for a read token (key {})",
        claims.repository,
        record.key
    );
    Ok(response)
}

/// The verified claims of the request's ID token (`Authorization: Bearer`)
/// and the time they were checked at, or the refusal to answer.
async fn verified_claims(verifier: &Oidc, request: &Request) -> Result<(Claims, u64), Response> {
    let jwt = request
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|jwt| !jwt.is_empty() && jwt.len() <= 16 * 1024)
        .ok_or_else(|| {
            refused(Refused {
                status: StatusCode::UNAUTHORIZED,
                message: "the exchange needs the workflow's ID token as Authorization: Bearer (permissions: id-token: write)".into(),
            })
        })?;
    let now = unix_now();
    verifier
        .verify(jwt, now)
        .await
        .map(|claims| (claims, now))
        .map_err(refused)
}

/// A token record of `kind` for GitHub Actions, issued at `now` for `ttl`
/// seconds, with a fresh key and no limits yet (the caller adds them).
fn new_record(kind: TokenKind, now: u64, ttl: u64) -> Result<TokenRecord, ApiError> {
    TokenRecord::new(kind, "GitHub Actions", now, ttl).map_err(ApiError::internal)
}

/// Issues a token for `record` ([`crate::cmd::store_new_token`]) and
/// answers `201 {"token", "token_type": kind, "created", "expires"}`,
/// which hands the secret out once.
async fn issue(
    registry: &Registry,
    record: &TokenRecord,
    kind: &str,
) -> Result<Response, ApiError> {
    let (secret, record) = crate::cmd::store_new_token(registry, record.clone()).await?;
    Ok(json(
        StatusCode::CREATED,
        json!({
            "token": secret,
            "token_type": kind,
            "created": iso(record.created),
            "expires": iso(record.expires),
        })
        .to_string(),
    ))
}

/// `GET /-/package/{name}/visibility` → `{"public": false}` for whoever may
/// read the package (the dispatcher authorized the read). npm turns
/// provenance on by itself only for public packages, and provenance would
/// publish a private repository's name to a public log.
pub fn visibility() -> Response {
    let mut response = json(StatusCode::OK, r#"{"public":false}"#);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
