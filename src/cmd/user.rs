//! The user endpoints: `npm whoami` (`GET /-/whoami`) and `npm logout`
//! (`DELETE /-/user/token/TOKEN`).

use http::StatusCode;
use warp::reply::Response;

use crate::error::ApiError;
use crate::http::{Request, json};
use crate::registry::Registry;

/// `GET /-/whoami` → `{"username": LOGIN}` (PROTOCOL.md §3.8).
pub async fn whoami(registry: &Registry, request: &Request) -> Result<Response, ApiError> {
    let identity = registry.auth.identify(request.credentials.as_ref()).await?;
    Ok(json(
        StatusCode::OK,
        serde_json::json!({ "username": identity.username }).to_string(),
    ))
}

/// `DELETE /-/user/token/TOKEN`: nmr stores no tokens, so there is nothing
/// to revoke; answering 2xx lets npm remove the token from the user's config
/// (on an error it would keep it, PROTOCOL.md §3.11).
pub fn logout() -> Result<Response, ApiError> {
    Ok(json(StatusCode::OK, r#"{"ok":true}"#))
}
