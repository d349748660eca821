//! `npm token list`, `npm token create` and `npm token revoke`, in the
//! shapes npm 11 sends and reads (docs/npm-protocol.md, "Tokens"):
//!
//! - `GET /-/npm/v1/tokens[?page=N&perPage=M]` → `{"objects": [TOKEN…],
//!   "total", "urls": {"next"?}}`; npm follows `urls.next` and needs `urls`
//!   to be an object.
//! - `POST /-/npm/v1/tokens` with `{name, password, description, packages,
//!   scopes, packages_and_scopes_permission, expires (days),
//!   cidr_whitelist, …}` → `201` TOKEN with the full secret, once.
//! - `DELETE /-/npm/v1/tokens/token/{key or token}` → 204.
//!
//! The dispatcher identified the caller before the body was read. Only a
//! GitHub user's unrestricted credentials create tokens (a login token, or
//! a GitHub token where those are accepted), so a new token can only
//! narrow what its creator may do; `password` is not needed and ignored.
//! Every token is the caller's own: another user's key is 404.

use http::StatusCode;
use serde_json::{Value, json};
use warp::reply::Response;

use crate::auth::Access;
use crate::cmd::iso;
use crate::error::ApiError;
use crate::github::unix_now;
use crate::name::PackageName;
use crate::registry::Registry;
use crate::request::{Request, json};
use crate::tokens::{self, TokenKind, TokenRecord};

/// Tokens per page of `npm token list` at most (and by default).
pub const PER_PAGE: usize = 100;

/// The most packages, scopes or CIDRs one token may name.
pub const MAX_LIMITS: usize = 50;

/// The longest `--expires`, in days.
pub const MAX_EXPIRES_DAYS: u64 = 365;

/// Live registry tokens one GitHub user may hold.
pub const MAX_TOKENS_PER_USER: usize = 1000;

/// The GitHub user id of the caller, or why they have no tokens here.
fn user_id(registry: &Registry, access: &Access) -> Result<u64, ApiError> {
    if !registry.auth.github().is_some_and(|g| g.app_mode()) {
        return Err(ApiError::not_found(
            "registry tokens of users need nmr to run as a GitHub App (auth.github.app.*): use a GitHub token instead",
        ));
    }
    match (&access.token, access.identity.github_id) {
        (Some(t), _) if !t.is_user() => Err(ApiError::forbidden(
            "a token exchanged in GitHub Actions cannot manage registry tokens",
        )),
        (_, Some(id)) => Ok(id),
        (_, None) => Err(ApiError::unauthorized(
            "log in first: npm login --registry=<this registry>",
        )),
    }
}

/// One token as `npm token list` and `create` show it.
fn shape(record: &TokenRecord) -> Value {
    json!({
        "token": record.prefix,
        "key": record.key,
        "name": record.name,
        "description": record.description,
        "created": iso(record.created),
        "expires": iso(record.expires),
        "readonly": record.readonly,
        "cidr_whitelist": if record.cidr_whitelist.is_empty() {
            Value::Null
        } else {
            json!(record.cidr_whitelist)
        },
        "packages": record.packages,
        "scopes": record.scopes.iter().map(|s| format!("@{s}")).collect::<Vec<_>>(),
        "type": match record.kind {
            TokenKind::Login => "login",
            _ => "created",
        },
    })
}

/// The live tokens of the GitHub user `github_id`, oldest first (by the
/// second they were made); expired ones are deleted on the way.
async fn live_tokens(
    registry: &Registry,
    github_id: u64,
) -> Result<Vec<([u8; 32], TokenRecord)>, ApiError> {
    let now = unix_now();
    let mut found = crate::cmd::meta::user_tokens(registry, github_id).await?;
    for (hash, _) in found.iter().filter(|(_, r)| r.revoked || r.expires <= now) {
        crate::cmd::meta::delete_token(registry, hash).await?;
    }
    found.retain(|(_, r)| !r.revoked && r.expires > now);
    found.sort_by(|a, b| (a.1.created, &a.1.key).cmp(&(b.1.created, &b.1.key)));
    Ok(found)
}

/// 409 when the GitHub user `github_id` already holds
/// [`MAX_TOKENS_PER_USER`] live tokens.
pub async fn check_room(registry: &Registry, github_id: u64) -> Result<(), ApiError> {
    if live_tokens(registry, github_id).await?.len() >= MAX_TOKENS_PER_USER {
        return Err(ApiError::conflict(format!(
            "you hold {MAX_TOKENS_PER_USER} registry tokens, the most one user may: revoke some (npm token list, npm token revoke KEY)"
        )));
    }
    Ok(())
}

/// `GET /-/npm/v1/tokens`: a page of the caller's tokens.
pub async fn list(
    registry: &Registry,
    request: &Request,
    access: &Access,
) -> Result<Response, ApiError> {
    let github_id = user_id(registry, access)?;
    let number = |key: &str| {
        request
            .query
            .split('&')
            .find_map(|p| p.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse::<usize>().ok())
    };
    let page = number("page").unwrap_or(0);
    let per_page = number("perPage").unwrap_or(PER_PAGE).clamp(1, PER_PAGE);
    let tokens = live_tokens(registry, github_id).await?;
    let total = tokens.len();
    let objects: Vec<Value> = tokens
        .iter()
        .skip(page.saturating_mul(per_page))
        .take(per_page)
        .map(|(_, r)| shape(r))
        .collect();
    let mut urls = json!({});
    if (page + 1).saturating_mul(per_page) < total {
        urls["next"] = json!(format!(
            "{}-/npm/v1/tokens?page={}&perPage={per_page}",
            registry.public_url,
            page + 1
        ));
    }
    Ok(json(
        StatusCode::OK,
        json!({ "objects": objects, "total": total, "urls": urls }).to_string(),
    ))
}

/// What `npm token create` asks for, checked.
#[derive(Debug, Default, PartialEq)]
pub struct TokenRequest {
    pub name: Option<String>,
    pub description: Option<String>,
    pub readonly: bool,
    pub packages: Vec<String>,
    /// Without `@`.
    pub scopes: Vec<String>,
    pub cidr_whitelist: Vec<String>,
    /// Seconds.
    pub ttl: Option<u64>,
}

/// Reads npm 11's create body (and the public API's names `readonly`,
/// `token_description`, `cidr`): 400 naming the field that is wrong.
pub fn parse_request(body: &[u8]) -> Result<TokenRequest, ApiError> {
    let body = crate::verify::json_object(body)?;
    let bad = |m: String| ApiError::bad_request(m);
    let text = |key: &str, max: usize| -> Result<Option<String>, ApiError> {
        match body.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.len() <= max => {
                Ok(Some(s.clone()).filter(|s| !s.is_empty()))
            }
            Some(_) => Err(bad(format!(
                "{key} must be a string of at most {max} bytes"
            ))),
        }
    };
    let list = |keys: &[&str]| -> Result<Vec<String>, ApiError> {
        let Some((key, value)) = keys.iter().find_map(|k| body.get(*k).map(|v| (*k, v))) else {
            return Ok(Vec::new());
        };
        let items = match value {
            Value::Null => return Ok(Vec::new()),
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad(format!("{key} must be a list of strings")))?,
            _ => return Err(bad(format!("{key} must be a list of strings"))),
        };
        if items.len() > MAX_LIMITS {
            return Err(bad(format!("{key} may name at most {MAX_LIMITS} entries")));
        }
        Ok(items)
    };
    let mut request = TokenRequest {
        name: text("name", 128)?,
        description: match text("description", 1024)? {
            Some(d) => Some(d),
            None => text("token_description", 1024)?,
        },
        ..TokenRequest::default()
    };
    request.readonly = match body.get("packages_and_scopes_permission") {
        None | Some(Value::Null) => body
            .get("readonly")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        Some(Value::String(p)) if p == "read-only" => true,
        Some(Value::String(p)) if p == "read-write" => false,
        Some(Value::String(p)) if p == "no-access" => {
            return Err(bad(
                "packages_and_scopes_permission no-access would make a token that can do nothing here: use read-only or read-write".into(),
            ));
        }
        Some(_) => {
            return Err(bad(
                "packages_and_scopes_permission must be read-only or read-write".into(),
            ));
        }
    };
    for package in list(&["packages"])? {
        let name =
            PackageName::parse(&package).map_err(|e| bad(format!("packages: {package:?}: {e}")))?;
        request.packages.push(name.to_string());
    }
    for scope in list(&["scopes"])? {
        let bare = scope.trim_start_matches('@').to_ascii_lowercase();
        PackageName::parse(&format!("@{bare}/x"))
            .map_err(|_| bad(format!("scopes: {scope:?} is not a scope such as @acme")))?;
        request.scopes.push(bare);
    }
    for cidr in list(&["cidr_whitelist", "cidr"])? {
        let net = cidr
            .parse::<ipnet::IpNet>()
            .or_else(|_| cidr.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                bad(format!(
                    "cidr_whitelist: {cidr:?} is not a CIDR such as 10.0.0.0/8"
                ))
            })?;
        request.cidr_whitelist.push(net.to_string());
    }
    request.ttl = match body.get("expires") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(days) if (1..=MAX_EXPIRES_DAYS).contains(&days) => Some(days * 24 * 3600),
            _ => {
                return Err(bad(format!(
                    "expires must be a number of days from 1 to {MAX_EXPIRES_DAYS}"
                )));
            }
        },
    };
    Ok(request)
}

/// `POST /-/npm/v1/tokens`: a new token for the caller, never wider than
/// the caller's own credentials.
pub async fn create(
    registry: &Registry,
    access: &Access,
    body: &[u8],
) -> Result<Response, ApiError> {
    let github_id = user_id(registry, access)?;
    if let Some(caller) = &access.token
        && caller.is_restricted()
    {
        return Err(ApiError::forbidden(
            "a read-only or restricted token cannot create tokens: use the token npm login gave you",
        ));
    }
    let wanted = parse_request(body)?;
    check_room(registry, github_id).await?;
    let now = unix_now();
    let ttl = wanted.ttl.unwrap_or(registry.config.auth.tokens.ttl);
    let record = TokenRecord {
        github_id: Some(github_id),
        name: wanted.name,
        description: wanted.description,
        readonly: wanted.readonly,
        packages: wanted.packages,
        scopes: wanted.scopes,
        cidr_whitelist: wanted.cidr_whitelist,
        ..TokenRecord::new(TokenKind::Created, &access.identity.username, now, ttl)
            .map_err(ApiError::internal)?
    };
    let (secret, record) = crate::cmd::store_new_token(registry, record).await?;
    log::info!(
        "{} created a token (key {}{}{})",
        access.identity.username,
        record.key,
        if record.readonly { ", read-only" } else { "" },
        if record.is_restricted() {
            ", restricted"
        } else {
            ""
        },
    );
    let mut answer = shape(&record);
    answer["token"] = json!(secret);
    Ok(json(StatusCode::CREATED, answer.to_string()))
}

/// `DELETE /-/npm/v1/tokens/token/{which}`: revokes the caller's token
/// whose key is `which` (or starts with it, when only one does), or whose
/// secret is `which`.
pub async fn revoke(
    registry: &Registry,
    access: &Access,
    which: &str,
) -> Result<Response, ApiError> {
    let github_id = user_id(registry, access)?;
    let tokens = live_tokens(registry, github_id).await?;
    let by_secret = tokens::is_registry_token(which).then(|| crate::auth::hash_token(which));
    let matches: Vec<&[u8; 32]> = tokens
        .iter()
        .filter(|(hash, record)| match by_secret {
            Some(h) => *hash == h,
            None => !which.is_empty() && record.key.starts_with(which),
        })
        .map(|(hash, _)| hash)
        .collect();
    let hash = match matches.as_slice() {
        [hash] => **hash,
        [] => {
            return Err(ApiError::not_found(
                "you have no token with that key: see npm token list",
            ));
        }
        _ => {
            return Err(ApiError::bad_request(
                "that key prefix matches several of your tokens: give more of it",
            ));
        }
    };
    crate::cmd::meta::delete_token(registry, &hash).await?;
    log::info!("{} revoked one of their tokens", access.identity.username);
    let mut response = json(StatusCode::NO_CONTENT, "");
    response.headers_mut().remove(http::header::CONTENT_TYPE);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_npm_11_sends() {
        let body = br#"{"name": "ci", "password": "pw", "description": "for ci",
            "packages": ["@acme/widget"], "scopes": ["acme", "@other"], "orgs": ["acme"],
            "packages_and_scopes_permission": "read-only", "orgs_permission": "read-only",
            "expires": 30, "cidr_whitelist": ["10.0.0.0/8"], "bypass_2fa": true}"#;
        let r = parse_request(body).unwrap();
        assert_eq!(r.name.as_deref(), Some("ci"));
        assert_eq!(r.description.as_deref(), Some("for ci"));
        assert!(r.readonly);
        assert_eq!(r.packages, ["@acme/widget"]);
        assert_eq!(r.scopes, ["acme", "other"]);
        assert_eq!(r.cidr_whitelist, ["10.0.0.0/8"]);
        assert_eq!(r.ttl, Some(30 * 24 * 3600));
        let bare = parse_request(br#"{"name": null, "password": "x"}"#).unwrap();
        assert_eq!(bare, TokenRequest::default());
        let single = parse_request(br#"{"packages": "@acme/widget"}"#).unwrap();
        assert_eq!(single.packages, ["@acme/widget"]);
    }

    #[test]
    fn refuses_what_cannot_be_a_limit() {
        for (body, field) in [
            (r#"{"packages": ["@acme/../x"]}"#, "packages"),
            (r#"{"scopes": ["@a c"]}"#, "scopes"),
            (r#"{"cidr_whitelist": ["everywhere"]}"#, "cidr_whitelist"),
            (r#"{"expires": 0}"#, "expires"),
            (r#"{"expires": 1000}"#, "expires"),
            (
                r#"{"packages_and_scopes_permission": "no-access"}"#,
                "no-access",
            ),
            (r#"{"name": 5}"#, "name"),
        ] {
            let e = parse_request(body.as_bytes()).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert!(e.message.contains(field), "{body}: {}", e.message);
        }
    }
}
