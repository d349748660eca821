//! The user endpoints: `npm whoami` (`GET /-/whoami`), `npm login
//! --auth-type=legacy` (`PUT /-/user/org.couchdb.user:NAME`), `npm logout`
//! (`DELETE /-/user/token/TOKEN`) and `npm profile get` (`GET
//! /-/npm/v1/user`), shaped as docs/npm-protocol.md ("whoami", "login",
//! "logout", "Tokens") describes.
//!
//! The password given to the legacy `npm login` is a GitHub token, checked
//! with `GET /user`. In App mode it is then forgotten and npm gets a login
//! token of nmr's own; otherwise it is handed back as the npm token.

use http::StatusCode;
use warp::reply::Response;

use crate::auth::Access;
use crate::error::ApiError;
use crate::registry::Registry;
use crate::request::{Request, json};

/// `GET /-/whoami` → `{"username": LOGIN}` for the caller the dispatcher
/// identified (a registry token answers its user's GitHub login).
pub fn whoami(access: &Access) -> Response {
    json(
        StatusCode::OK,
        serde_json::json!({ "username": access.identity.username }).to_string(),
    )
}

/// `GET /-/npm/v1/user`: the profile `npm profile get` prints, from
/// GitHub's login (nmr keeps no email, and two-factor authentication is
/// GitHub's).
pub fn profile(access: &Access) -> Response {
    let login = &access.identity.username;
    json(
        StatusCode::OK,
        serde_json::json!({
            "name": login,
            "github": login,
            "email": "",
            "email_verified": false,
            "tfa": false,
            "fullname": "",
            "homepage": "",
            "freenode": "",
            "twitter": "",
            "cidr_whitelist": null,
        })
        .to_string(),
    )
}

/// `PUT /-/user/org.couchdb.user:NAME` with `{"name", "password", ...}`
/// (a small body: the dispatcher reads at most 64 KiB): 201
/// `{"ok": true, "id", "token"}` once GitHub confirms the password is a
/// token of NAME. The token is a new login token in App mode, else the
/// password itself. A wrong token is 401 with a message and no
/// `WWW-Authenticate`, so npm prints it.
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
    let app_mode = registry.auth.github().is_some_and(|g| g.app_mode());
    let token = match identity.github_user() {
        Some(user) if app_mode => crate::cmd::issue_login_token(registry, &user).await?,
        _ => password.to_string(),
    };
    Ok(json(
        StatusCode::CREATED,
        serde_json::json!({
            "ok": true,
            "id": format!("org.couchdb.user:{}", identity.username),
            "token": token,
        })
        .to_string(),
    ))
}

/// `DELETE /-/user/token/TOKEN`: revokes TOKEN when it is a registry token
/// (knowing the secret is the authority to revoke it), at once for every
/// request. A GitHub token is not nmr's to revoke. Either way 2xx, so npm
/// removes the token from the user's config (on an error it would keep it).
pub async fn logout(registry: &Registry, request: &Request) -> Result<Response, ApiError> {
    let token = request
        .path
        .rsplit('/')
        .next()
        .map(|t| {
            percent_encoding::percent_decode_str(t)
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    if crate::tokens::is_registry_token(&token) && token.len() <= crate::auth::MAX_TOKEN_LEN {
        let hash = crate::auth::hash_token(&token);
        crate::cmd::meta::delete_token(registry, &hash).await?;
    }
    Ok(json(StatusCode::OK, r#"{"ok":true}"#))
}
