//! GitHub: the two REST calls nmr makes with the user's own token, their
//! in-memory cache, and the `repository` field that binds a package to a repo.
//!
//! - `GET /user` (docs: "Get the authenticated user") tells who a token
//!   belongs to: its `login`. 401 means GitHub rejects the token.
//! - `GET /repos/{owner}/{repo}` (docs: "Get a repository") carries a
//!   `permissions` object (`admin`, `maintain`, `push`, `triage`, `pull`) for
//!   the token's user that already includes what org teams grant. 404 (or a
//!   plain 403) means the user cannot see the repo.
//!
//! A rate-limited answer (403/429 with `x-ratelimit-remaining: 0` or
//! `retry-after`), a 5xx, a timeout or an unreachable API is
//! [`Unavailable`]: nmr then fails closed (503) unless a still-valid cached
//! answer exists. Answers are cached by a SHA-256 of the token (never the
//! token itself) for `auth.github.cache_ttl` seconds, denials for
//! `auth.github.denied_cache_ttl`; concurrent misses on one key make one
//! call, so a burst of 200 installs costs one `GET /user` and one
//! `GET /repos/...`.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, StatusCode};
use octocrab::Octocrab;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::config::GithubConfig;

/// A GitHub repository, `owner/repo`. Compared case-insensitively, as GitHub
/// compares logins and repo names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Repo {
    pub owner: String,
    #[serde(rename = "repo")]
    pub name: String,
}

impl PartialEq for Repo {
    fn eq(&self, other: &Repo) -> bool {
        self.owner.eq_ignore_ascii_case(&other.owner) && self.name.eq_ignore_ascii_case(&other.name)
    }
}

impl Eq for Repo {}

impl fmt::Display for Repo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

impl Repo {
    /// Builds a repo from its parts, checking GitHub's rules: an owner is 1-39
    /// letters, digits or single inner hyphens; a repo name is 1-100 letters,
    /// digits, `-`, `_` or `.`, and not `.` or `..`.
    pub fn new(owner: &str, name: &str) -> Result<Repo, String> {
        let owner_ok = !owner.is_empty()
            && owner.len() <= 39
            && owner.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !owner.starts_with('-')
            && !owner.ends_with('-')
            && !owner.contains("--");
        let name_ok = !name.is_empty()
            && name.len() <= 100
            && name != "."
            && name != ".."
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !owner_ok || !name_ok {
            return Err(format!("{owner}/{name} is not a valid GitHub owner/repo"));
        }
        Ok(Repo {
            owner: owner.to_string(),
            name: name.to_string(),
        })
    }

    fn cache_key(&self) -> String {
        format!("{}/{}", self.owner, self.name).to_ascii_lowercase()
    }
}

/// The example users are told to put in package.json.
pub fn repository_hint(scope: &str) -> String {
    format!("\"repository\": \"github:{scope}/REPO\"")
}

/// Parses a package.json `repository` field naming a GitHub repo on `host`,
/// in every form npm accepts: `owner/repo`, `github:owner/repo`,
/// `https://HOST/owner/repo(.git)`, `git+https://…`, `git://HOST/…`,
/// `git+ssh://git@HOST/…`, `ssh://git@HOST/…`, `git@HOST:owner/repo.git`,
/// and `{"type": "git", "url": …, "directory": …}`.
pub fn parse_repository(value: &Value, host: &str) -> Result<Repo, String> {
    let url = match value {
        Value::String(s) => s.as_str(),
        Value::Object(o) => o
            .get("url")
            .and_then(Value::as_str)
            .ok_or("the repository object has no url")?,
        _ => return Err("repository must be a string or an object with a url".into()),
    };
    let url = url.trim();
    let url = url.split('#').next().unwrap_or(url);
    let not_github = || format!("{url:?} is not a repository on {host}");

    let path = if let Some(rest) = url.strip_prefix("github:") {
        rest
    } else if let Some(rest) = url.strip_prefix("git@") {
        let (h, path) = rest.split_once(':').ok_or_else(not_github)?;
        if !h.eq_ignore_ascii_case(host) {
            return Err(not_github());
        }
        path
    } else if let Some((scheme, rest)) = url.split_once("://") {
        if !matches!(
            scheme,
            "https" | "http" | "git" | "git+https" | "git+http" | "git+ssh" | "ssh"
        ) {
            return Err(not_github());
        }
        let (authority, path) = rest.split_once('/').ok_or_else(not_github)?;
        let h = authority.rsplit('@').next().unwrap_or(authority);
        let h = h.split(':').next().unwrap_or(h);
        if !h.eq_ignore_ascii_case(host) {
            return Err(not_github());
        }
        path
    } else if !url.contains(':') && url.matches('/').count() == 1 {
        url
    } else {
        return Err(not_github());
    };
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let (owner, name) = path.split_once('/').ok_or_else(not_github)?;
    Repo::new(owner, name)
}

/// The `permissions` object of `GET /repos/{owner}/{repo}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Permissions {
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub maintain: bool,
    #[serde(default)]
    pub push: bool,
    #[serde(default)]
    pub triage: bool,
    #[serde(default)]
    pub pull: bool,
}

impl Permissions {
    /// The highest permission held, by GitHub's name.
    pub fn highest(&self) -> &'static str {
        if self.admin {
            "admin"
        } else if self.maintain {
            "maintain"
        } else if self.push {
            "push"
        } else if self.triage {
            "triage"
        } else if self.pull {
            "pull"
        } else {
            "none"
        }
    }

    /// Whether the user may write: `push`, `maintain` or `admin`.
    pub fn can_push(&self) -> bool {
        self.push || self.maintain || self.admin
    }
}

/// GitHub could not be asked (down, 5xx, rate-limited, timed out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GitHub could not be asked: {}", self.0)
    }
}

/// How nmr reads a GitHub answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 2xx: the body is the answer.
    Ok,
    /// The token or the user has no access (401, 404, a 403 that is not a
    /// rate limit).
    Denied,
    /// Rate limit, 5xx, anything unexpected: fail closed.
    Unavailable,
}

/// Classifies a GitHub REST status and headers (GitHub's docs: "Rate limits
/// for the REST API" and "Troubleshooting the REST API").
pub fn classify(status: StatusCode, headers: &HeaderMap) -> Answer {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let rate_limited =
        header("x-ratelimit-remaining") == Some("0") || header("retry-after").is_some();
    match status.as_u16() {
        200..=299 => Answer::Ok,
        403 | 429 if rate_limited => Answer::Unavailable,
        401 | 403 | 404 => Answer::Denied,
        _ => Answer::Unavailable,
    }
}

/// A cached answer and when it stops being valid.
struct Slot<V> {
    cell: OnceCell<(V, Instant)>,
}

/// A TTL cache whose concurrent misses on one key share one fetch.
struct Cache<K, V> {
    slots: Mutex<HashMap<K, Arc<Slot<V>>>>,
}

impl<K: Eq + Hash + Clone, V: Clone> Cache<K, V> {
    fn new() -> Self {
        Cache {
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The cached value for `key`, or the result of `fetch` (which returns the
    /// value and how long it stays valid). Errors are not cached.
    async fn get_or_fetch<E, F, Fut>(&self, key: K, fetch: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(V, Duration), E>>,
    {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if slots.len() > 10_000 {
                slots.retain(|_, s| s.cell.get().is_none_or(|(_, until)| *until > now));
            }
            let fresh = slots
                .get(&key)
                .filter(|s| s.cell.get().is_none_or(|(_, until)| *until > now))
                .cloned();
            fresh.unwrap_or_else(|| {
                let slot = Arc::new(Slot {
                    cell: OnceCell::new(),
                });
                slots.insert(key, slot.clone());
                slot
            })
        };
        let (value, _) = slot
            .cell
            .get_or_try_init(|| async {
                let (value, ttl) = fetch().await?;
                Ok((value, Instant::now() + ttl))
            })
            .await?;
        Ok(value.clone())
    }
}

/// The GitHub client: one octocrab client built at startup, per-user clients
/// derived from it per call, and the answer caches.
pub struct GitHub {
    client: Octocrab,
    host: String,
    ttl: Duration,
    denied_ttl: Duration,
    timeout: Duration,
    /// SHA-256(token) → login (`None`: token rejected).
    logins: Cache<[u8; 32], Option<String>>,
    /// (SHA-256(token), lowercase owner/repo) → permissions (`None`: no access).
    permissions: Cache<([u8; 32], String), Option<Permissions>>,
}

/// The part of `GET /user` nmr reads.
#[derive(Deserialize)]
struct User {
    login: String,
}

/// The part of `GET /repos/{owner}/{repo}` nmr reads.
#[derive(Deserialize)]
struct Repository {
    #[serde(default)]
    permissions: Option<Permissions>,
}

impl GitHub {
    /// Builds the client for `config` (no request is made).
    pub fn new(config: &GithubConfig) -> Result<GitHub, String> {
        let timeout = Duration::from_secs(config.timeout);
        let client = Octocrab::builder()
            .base_uri(config.api_url.trim_end_matches('/'))
            .map_err(|e| format!("auth.github.api_url: {e}"))?
            .add_retry_config(octocrab::service::middleware::retry::RetryConfig::None)
            .set_connect_timeout(Some(timeout))
            .set_read_timeout(Some(timeout))
            .add_header(http::header::ACCEPT, "application/vnd.github+json".into())
            .add_header(
                http::HeaderName::from_static("x-github-api-version"),
                "2022-11-28".into(),
            )
            .build()
            .map_err(|e| format!("auth.github: cannot build the GitHub client: {e}"))?;
        Ok(GitHub {
            client,
            host: config.host.clone(),
            ttl: Duration::from_secs(config.cache_ttl),
            denied_ttl: Duration::from_secs(config.denied_cache_ttl),
            timeout,
            logins: Cache::new(),
            permissions: Cache::new(),
        })
    }

    /// The web host `repository` URLs must name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The login `token` belongs to; `Ok(None)` when GitHub rejects the token.
    pub async fn login(&self, token: &str) -> Result<Option<String>, Unavailable> {
        self.logins
            .get_or_fetch(token_hash(token), || async {
                match self.call::<User>(token, "/user").await? {
                    Some(user) => Ok((Some(user.login), self.ttl)),
                    None => Ok((None, self.denied_ttl)),
                }
            })
            .await
    }

    /// The token's user's permissions on `repo`; `Ok(None)` when the user
    /// cannot see it.
    pub async fn permissions(
        &self,
        token: &str,
        repo: &Repo,
    ) -> Result<Option<Permissions>, Unavailable> {
        let path = format!("/repos/{}/{}", repo.owner, repo.name);
        self.permissions
            .get_or_fetch((token_hash(token), repo.cache_key()), || async {
                let found = self
                    .call::<Repository>(token, &path)
                    .await?
                    .map(|r| r.permissions.unwrap_or_default())
                    .filter(|p| p.pull);
                let ttl = if found.is_some() {
                    self.ttl
                } else {
                    self.denied_ttl
                };
                Ok((found, ttl))
            })
            .await
    }

    /// `GET path` with the user's token: `Ok(None)` when denied.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        path: &str,
    ) -> Result<Option<T>, Unavailable> {
        let client = self
            .client
            .user_access_token(token.to_string())
            .map_err(|e| Unavailable(e.to_string()))?;
        let request = async {
            let response = client
                ._get(path)
                .await
                .map_err(|e| Unavailable(e.to_string()))?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = client
                .body_to_string(response)
                .await
                .map_err(|e| Unavailable(e.to_string()))?;
            Ok::<_, Unavailable>((status, headers, body))
        };
        let (status, headers, body) = tokio::time::timeout(self.timeout, request)
            .await
            .map_err(|_| Unavailable(format!("GET {path} timed out after {:?}", self.timeout)))??;
        match classify(status, &headers) {
            Answer::Ok => serde_json::from_str(&body)
                .map(Some)
                .map_err(|e| Unavailable(format!("GET {path}: unexpected answer: {e}"))),
            Answer::Denied => Ok(None),
            Answer::Unavailable => Err(Unavailable(format!("GET {path} answered {status}"))),
        }
    }
}

/// SHA-256 of a token: the only form in which nmr keeps one.
fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<String, String> {
        parse_repository(&v, "github.com").map(|r| r.to_string())
    }

    #[test]
    fn every_form_npm_accepts() {
        for form in [
            "acme/widget",
            "github:acme/widget",
            "https://github.com/acme/widget",
            "https://github.com/acme/widget.git",
            "https://github.com/acme/widget/",
            "http://github.com/acme/widget",
            "git+https://github.com/acme/widget.git",
            "git://github.com/acme/widget.git",
            "git+ssh://git@github.com/acme/widget.git",
            "ssh://git@github.com/acme/widget.git",
            "git@github.com:acme/widget.git",
            "https://GitHub.com/acme/widget#main",
        ] {
            assert_eq!(parse(json!(form)).as_deref(), Ok("acme/widget"), "{form}");
        }
        let object = json!({"type": "git", "url": "git+https://github.com/acme/widget.git", "directory": "packages/w"});
        assert_eq!(parse(object).as_deref(), Ok("acme/widget"));
        let ghe = parse_repository(&json!("https://ghe.corp/acme/widget.git"), "ghe.corp").unwrap();
        assert_eq!(ghe.to_string(), "acme/widget");
    }

    #[test]
    fn refuses_other_hosts_and_shapes() {
        for bad in [
            json!("https://gitlab.com/acme/widget"),
            json!("gitlab:acme/widget"),
            json!("bitbucket:acme/widget"),
            json!("git@gitlab.com:acme/widget.git"),
            json!("https://github.com/acme"),
            json!("acme"),
            json!("https://github.com/acme/../etc"),
            json!("github:-acme/widget"),
            json!("file:../widget"),
            json!(42),
            json!({"type": "git"}),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn repos_compare_case_insensitively() {
        assert_eq!(
            Repo::new("Acme", "Widget").unwrap(),
            Repo::new("acme", "widget").unwrap()
        );
        assert_ne!(
            Repo::new("acme", "a").unwrap(),
            Repo::new("acme", "b").unwrap()
        );
    }

    #[test]
    fn classifies_github_answers() {
        let none = HeaderMap::new();
        let mut limited = HeaderMap::new();
        limited.insert("x-ratelimit-remaining", "0".parse().unwrap());
        let mut retry = HeaderMap::new();
        retry.insert("retry-after", "60".parse().unwrap());
        assert_eq!(classify(StatusCode::OK, &none), Answer::Ok);
        assert_eq!(classify(StatusCode::UNAUTHORIZED, &none), Answer::Denied);
        assert_eq!(classify(StatusCode::NOT_FOUND, &none), Answer::Denied);
        assert_eq!(classify(StatusCode::FORBIDDEN, &none), Answer::Denied);
        assert_eq!(
            classify(StatusCode::FORBIDDEN, &limited),
            Answer::Unavailable
        );
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &retry),
            Answer::Unavailable
        );
        assert_eq!(
            classify(StatusCode::BAD_GATEWAY, &none),
            Answer::Unavailable
        );
    }

    #[test]
    fn permission_names() {
        let p = Permissions {
            pull: true,
            triage: true,
            push: true,
            ..Default::default()
        };
        assert_eq!(p.highest(), "push");
        assert!(p.can_push());
        let read = Permissions {
            pull: true,
            ..Default::default()
        };
        assert!(!read.can_push());
        assert_eq!(read.highest(), "pull");
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_fetch_and_entries_expire() {
        let cache: Cache<u8, u32> = Cache::new();
        let calls = std::sync::atomic::AtomicU32::new(0);
        let fetch = || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, ()>((7, Duration::from_millis(100)))
        };
        let results =
            futures_util::future::join_all((0..50).map(|_| cache.get_or_fetch(1, fetch))).await;
        assert!(results.iter().all(|r| *r == Ok(7)));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(150)).await;
        cache.get_or_fetch(1, fetch).await.unwrap();
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        let failed: Result<u32, &str> = cache.get_or_fetch(2, || async { Err("down") }).await;
        assert_eq!(failed, Err("down"));
        assert_eq!(
            cache.get_or_fetch(2, fetch).await,
            Ok(7),
            "errors are not cached"
        );
    }
}
