//! `npm trust`: the trusted-publisher configurations of a package, which
//! narrow trusted publishing (`src/oidc.rs`) to one workflow file and,
//! optionally, one environment. `GET`, `POST /-/package/{name}/trust` and
//! `DELETE /-/package/{name}/trust/{id}`, shaped as npm 11.15+ sends and
//! reads them (docs/trusted-publishing.md, "npm trust").
//!
//! The dispatcher authorized the request: listing needs push on the bound
//! repository, creating and revoking admin. As on the public registry, a
//! package has at most one configuration (409 for a second).

use http::StatusCode;
use serde_json::Value;
use warp::reply::Response;

use crate::auth::Access;
use crate::error::ApiError;
use crate::name::PackageName;
use crate::oidc::{TrustClaims, TrustConfig, WorkflowFile};
use crate::registry::Registry;
use crate::request::json;

use crate::cmd::meta;

/// `GET /-/package/{name}/trust` → the configurations, as a JSON array.
pub async fn list(registry: &Registry, name: &PackageName) -> Result<Response, ApiError> {
    let (configs, _) = meta::trust(registry, name).await?;
    Ok(json(
        StatusCode::OK,
        serde_json::to_string(&configs).unwrap_or_else(|_| "[]".into()),
    ))
}

/// `POST /-/package/{name}/trust` with npm's body, a one-element array
/// `[{"type": "github", "claims": {"repository", "workflow_ref": {"file"},
/// "environment"?}, "permissions": [...]}]`: 200 with the created
/// configuration (with its `id`). 400 for another `type`, another
/// repository than the bound one, or a file that is not a bare `.yml`; 409
/// when the package has one already.
pub async fn create(
    registry: &Registry,
    access: Access,
    name: &PackageName,
    body: &[u8],
) -> Result<Response, ApiError> {
    let bad = |m: String| ApiError::bad_request(m);
    let parsed: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    let item = match &parsed {
        Value::Array(items) if items.len() == 1 => &items[0],
        Value::Object(_) => &parsed,
        _ => return Err(bad("the body must hold one trust configuration".into())),
    };
    let kind = item.get("type").and_then(Value::as_str).unwrap_or("");
    if kind != "github" {
        return Err(bad(format!(
            "trust configurations of type {kind:?} are not supported: nmr trusts GitHub Actions only (npm trust github)"
        )));
    }
    let claims = item.get("claims").cloned().unwrap_or(Value::Null);
    let repository = claims
        .get("repository")
        .and_then(Value::as_str)
        .unwrap_or("");
    let file = claims
        .get("workflow_ref")
        .and_then(|w| w.get("file").or(Some(w)))
        .and_then(Value::as_str)
        .unwrap_or("");
    let environment = claims
        .get("environment")
        .and_then(Value::as_str)
        .map(str::to_string);
    let bound = access
        .binding
        .as_ref()
        .ok_or_else(|| crate::auth::hidden(name))?;
    if !bound.has_name(repository) {
        return Err(bad(format!(
            "{name} is bound to the GitHub repository {bound}: a trusted publisher must be a workflow of {bound}, not of {repository:?}"
        )));
    }
    if file.is_empty() || file.contains('/') || !(file.ends_with(".yml") || file.ends_with(".yaml"))
    {
        return Err(bad(format!(
            "the workflow must be a file name ending in .yml or .yaml, not {file:?}"
        )));
    }
    let (mut configs, read) = meta::trust(registry, name).await?;
    if !configs.is_empty() {
        return Err(ApiError::conflict(format!(
            "{name} already has a trusted publisher (id {}): revoke it first with npm trust revoke",
            configs[0].id
        )));
    }
    let permissions = item
        .get("permissions")
        .and_then(Value::as_array)
        .map(|p| {
            p.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let config = TrustConfig {
        id: crate::tokens::new_key().map_err(ApiError::internal)?,
        kind: "github".into(),
        claims: TrustClaims {
            repository: bound.to_string(),
            workflow_ref: WorkflowFile { file: file.into() },
            environment,
        },
        permissions,
    };
    configs.push(config.clone());
    meta::set_trust(registry, name, configs, read).await?;
    log::info!(
        "{name}: {} trusts {} (by {})",
        config.claims.repository,
        config.claims.workflow_ref.file,
        access.identity.username
    );
    Ok(json(
        StatusCode::OK,
        serde_json::to_string(&[config]).unwrap_or_default(),
    ))
}

/// `DELETE /-/package/{name}/trust/{id}`: 204, or 404 for an unknown id.
pub async fn revoke(
    registry: &Registry,
    name: &PackageName,
    id: &str,
) -> Result<Response, ApiError> {
    let (mut configs, read) = meta::trust(registry, name).await?;
    let before = configs.len();
    configs.retain(|c| c.id != id);
    if configs.len() == before {
        return Err(ApiError::not_found(format!(
            "{name} has no trusted publisher with id {id}"
        )));
    }
    meta::set_trust(registry, name, configs, read).await?;
    let mut response = json(StatusCode::NO_CONTENT, "");
    response.headers_mut().remove(http::header::CONTENT_TYPE);
    Ok(response)
}
