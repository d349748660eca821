//! The user endpoints: `npm whoami` (`GET /-/whoami`), `npm login
//! --auth-type=legacy` (`PUT /-/user/org.couchdb.user:NAME`) and `npm logout`
//! (`DELETE /-/user/token/TOKEN`), shaped as docs/npm-protocol.md ("whoami",
//! "login", "logout") describes.
//!
//! nmr issues no tokens of its own: the password given to `npm login` is a
//! GitHub token, checked with `GET /user`, and handed back as the npm token.

use http::StatusCode;
use warp::reply::Response;

use crate::error::ApiError;
use crate::registry::Registry;
use crate::request::{Request, json};

/// `GET /-/whoami` → `{"username": LOGIN}`.
pub async fn whoami(registry: &Registry, request: &Request) -> Result<Response, ApiError> {
    let identity = registry
        .auth
        .identify(&request.credentials, request.client)
        .await?;
    Ok(json(
        StatusCode::OK,
        serde_json::json!({ "username": identity.username }).to_string(),
    ))
}

/// `PUT /-/user/org.couchdb.user:NAME` with `{"name", "password", ...}`
/// (a small body: the dispatcher reads at most 64 KiB): 201
/// `{"ok": true, "id", "token"}` where the token is the password itself
/// once GitHub confirms it belongs to NAME. A wrong token is 401 with a
/// message and no `WWW-Authenticate`, so npm prints it.
pub async fn login(
    registry: &Registry,
    request: &Request,
    path_name: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let body = crate::verify::json_object(body)?;
    let name = body
        .get("name")
        .and_then(|v| v.as_str())
        .unwrap_or(path_name);
    if name != path_name {
        return Err(ApiError::bad_request(format!(
            "the body's name ({name}) does not match the URL's ({path_name})"
        )));
    }
    let password = body
        .get("password")
        .and_then(|v| v.as_str())
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::bad_request("a password (your GitHub token) is required"))?;
    let identity = crate::auth::check_login(&registry.auth, name, password, request.client).await?;
    Ok(json(
        StatusCode::CREATED,
        serde_json::json!({
            "ok": true,
            "id": format!("org.couchdb.user:{}", identity.username),
            "token": password,
        })
        .to_string(),
    ))
}

/// `DELETE /-/user/token/TOKEN`: nmr stores no tokens, so there is nothing
/// to revoke; answering 2xx lets npm remove the token from the user's config
/// (on an error it would keep it).
pub fn logout() -> Result<Response, ApiError> {
    Ok(json(StatusCode::OK, r#"{"ok":true}"#))
}
