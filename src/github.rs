//! GitHub: the two REST calls nmr makes with the user's own token, their
//! in-memory cache, and the `repository` field that binds a package to a repo.
//!
//! - `GET /user` (docs: "Get the authenticated user") tells who a token
//!   belongs to: its `login`. 401 means GitHub rejects the token.
//! - `GET /repos/{owner}/{repo}` (docs: "Get a repository") carries the
//!   repo's `id`, its `owner` (`login`, `id`) and a `permissions` object
//!   (`admin`, `maintain`, `push`, `triage`, `pull`) for the token's user
//!   that already includes what org teams grant. 404 (or a plain 403) means
//!   the user cannot see the repo. A renamed or transferred repo's old name
//!   answers 301 with `Location: {api}/repositories/{id}`; nmr follows only
//!   that form, with `GET /repositories/{id}`, and leaves it to
//!   `auth::check_identity` to compare the id with the bound one.
//!
//! Answers are cached by a SHA-256 of the token (never the token itself)
//! for `auth.github.cache_ttl` seconds, denials for
//! `auth.github.denied_cache_ttl`, in caches of at most
//! `auth.github.cache_size` entries with O(1) eviction (`quick_cache`);
//! concurrent misses on one key make one call, so a burst of 200 installs
//! costs one `GET /user` and one `GET /repos/...`. A failed lookup is never
//! cached.
//!
//! What GitHub is asked is bounded (docs/security.md, "The GitHub budget"):
//!
//! - A rate-limited answer (403/429 with `x-ratelimit-remaining: 0` and
//!   `x-ratelimit-reset`, or `retry-after`; GitHub's "Rate limits for the REST
//!   API") stops all calls with that token until the reset: [`Refusal::RateLimited`].
//! - A 5xx, a timeout or an unreachable API opens a circuit breaker
//!   ([`crate::limits::Breaker`]): GitHub is asked about once per second
//!   until a call succeeds: [`Refusal::Unavailable`].
//! - `GET /user` for a token GitHub has not accepted before is budgeted per
//!   client address (`auth.github.max_lookups_per_minute`):
//!   [`Refusal::Throttled`]. Accepted tokens are remembered by SHA-256, with
//!   when they were last accepted, through [`KnownTokens`], which the store
//!   persists, so a restart does not throttle an office behind one address.
//! - At most [`MAX_IN_FLIGHT`] calls are under way at once.
//!
//! Cached answers are served whatever the state of these bounds. Refusal
//! messages never name a repository.

use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{HeaderMap, Method, StatusCode};
use octocrab::Octocrab;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::auth::{Credentials, TokenHash};
use crate::config::GithubConfig;
use crate::limits::{Breaker, Budgets, log_limited};

mod app;

/// A GitHub repository, `owner/repo`, with GitHub's immutable numeric ids
/// of the repo and its owner once known (`GET /repos/{owner}/{repo}`'s `id`
/// and `owner.id`). Compared by name, case-insensitively, as GitHub compares
/// logins and repo names; [`Repo::is`] compares identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Repo {
    pub owner: String,
    #[serde(rename = "repo")]
    pub name: String,
    /// The repository's id; `None` for bindings made before ids were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The owner's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<u64>,
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
            id: None,
            owner_id: None,
        })
    }

    /// Whether this repository is called `full` (`owner/repo`), compared
    /// case-insensitively as GitHub compares names.
    pub fn has_name(&self, full: &str) -> bool {
        full.split_once('/').is_some_and(|(owner, name)| {
            self.owner.eq_ignore_ascii_case(owner) && self.name.eq_ignore_ascii_case(name)
        })
    }

    /// Whether `other` is this repository: the same id when both have one,
    /// else the same name.
    pub fn is(&self, other: &Repo) -> bool {
        match (self.id, other.id) {
            (Some(a), Some(b)) => a == b,
            _ => self == other,
        }
    }

    fn cache_key(&self) -> String {
        let mut key = String::with_capacity(self.owner.len() + 1 + self.name.len());
        key.push_str(&self.owner);
        key.push('/');
        key.push_str(&self.name);
        key.make_ascii_lowercase();
        key
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

/// Why GitHub was not asked, or gave no usable answer. `Display` is the
/// sentence users see; it never names a repository or a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// GitHub is down, failing or unreachable (or nmr is pausing after such
    /// a failure); ask again after `retry_after` seconds.
    Unavailable { reason: String, retry_after: u64 },
    /// GitHub's rate limit for this token is exhausted for `retry_after`
    /// seconds.
    RateLimited { retry_after: u64 },
    /// The client address spent its budget of lookups of unknown tokens.
    Throttled { retry_after: u64 },
    /// In App mode: the App is not installed on `owner` (or not given
    /// access to the repository); `install_url` is where an admin of the
    /// owner installs it.
    NotInstalled { owner: String, install_url: String },
}

impl Refusal {
    /// Seconds after which asking again may succeed.
    pub fn retry_after(&self) -> u64 {
        match self {
            Refusal::Unavailable { retry_after, .. }
            | Refusal::RateLimited { retry_after }
            | Refusal::Throttled { retry_after } => *retry_after,
            Refusal::NotInstalled { .. } => 0,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Unavailable {
                reason,
                retry_after,
            } => write!(
                f,
                "GitHub could not be asked ({reason}), so nmr cannot check permissions: try again in {retry_after} s"
            ),
            Refusal::RateLimited { retry_after } => write!(
                f,
                "GitHub's API rate limit for this token is exhausted: try again in {retry_after} s"
            ),
            Refusal::Throttled { retry_after } => write!(
                f,
                "too many unknown tokens from your address: try again in {retry_after} s with a valid GitHub token"
            ),
            Refusal::NotInstalled { owner, install_url } => write!(
                f,
                "nmr's GitHub App is not installed on {owner} (or not given access to this repository), so nmr cannot check permissions there: an admin of {owner} must install it at {install_url}"
            ),
        }
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
    /// A rate limit: no call with this token for this many seconds.
    RateLimited(u64),
    /// 301/307: the repository was renamed or transferred; the `Location`
    /// names it by id (`/repositories/{id}`).
    Moved,
    /// 5xx, anything unexpected: fail closed.
    Unavailable,
}

/// Classifies a GitHub REST status and headers at `now_unix` (seconds since
/// the epoch), per GitHub's docs "Rate limits for the REST API" and
/// "Troubleshooting the REST API": a 403 or 429 with
/// `x-ratelimit-remaining: 0` waits until `x-ratelimit-reset` (epoch
/// seconds); one with `retry-after` waits that many seconds (secondary rate
/// limits); without either header a 429 waits a minute, as GitHub advises.
pub fn classify(status: StatusCode, headers: &HeaderMap, now_unix: u64) -> Answer {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let retry_after = header("retry-after").and_then(|v| v.trim().parse::<u64>().ok());
    let reset = (header("x-ratelimit-remaining") == Some("0"))
        .then(|| header("x-ratelimit-reset").and_then(|v| v.trim().parse::<u64>().ok()))
        .flatten()
        .map(|reset| reset.saturating_sub(now_unix));
    let wait = retry_after.or(reset).map(|s| s.clamp(1, 3600));
    match (status.as_u16(), wait) {
        (200..=299, _) => Answer::Ok,
        (301 | 302 | 307 | 308, _) => Answer::Moved,
        // GitHub sends the rate-limit headers on every answer: a 401 or 404
        // that used the last call is still a denial.
        (401 | 404, _) => Answer::Denied,
        (403 | 429, Some(wait)) => Answer::RateLimited(wait),
        (429, None) => Answer::RateLimited(60),
        (403, None) => Answer::Denied,
        _ => Answer::Unavailable,
    }
}

/// A cached answer and until when it holds.
#[derive(Clone)]
struct Timed<V> {
    value: V,
    until: Instant,
}

type AnswerCache<K, V> = quick_cache::sync::Cache<K, Timed<V>>;

/// The cached, still-valid value of `key`, or the one `fetch` yields (with
/// how long it stays valid). Concurrent misses on one key wait for one
/// fetch; a failed fetch caches nothing, and the next waiter fetches.
async fn cached<K, V, F, Fut>(cache: &AnswerCache<K, V>, key: K, fetch: F) -> Result<V, Refusal>
where
    K: Eq + std::hash::Hash + Clone,
    V: Clone,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(V, Duration), Refusal>>,
{
    // A live answer is a plain lookup; only a miss or an expired answer
    // takes the single-flight guard, in a box of its own: the guard's and
    // the fetch's state (a GitHub call) would otherwise be part of every
    // caller's future, and so of every request's, hit or not.
    if let Some(hit) = cache.get(&key)
        && hit.until > Instant::now()
    {
        return Ok(hit.value);
    }
    // The miss path: wait for a concurrent fetch of `key` or make the one
    // fetch.
    Box::pin(async move {
        loop {
            match cache.get_value_or_guard_async(&key).await {
                Ok(hit) if hit.until > Instant::now() => return Ok(hit.value),
                Ok(_) => {
                    cache.remove(&key);
                }
                Err(guard) => {
                    let (value, ttl) = fetch().await?;
                    let _ = guard.insert(Timed {
                        value: value.clone(),
                        until: Instant::now() + ttl,
                    });
                    return Ok(value);
                }
            }
        }
    })
    .await
}

/// At most this many GitHub calls are under way at once.
pub const MAX_IN_FLIGHT: usize = 32;

/// Tokens GitHub accepted before, by SHA-256, with when (Unix seconds) that
/// was last recorded. Bounded like the answer caches; a token missing here
/// is only budgeted, never refused for it.
pub struct KnownTokens {
    tokens: quick_cache::sync::Cache<TokenHash, u64>,
    /// Called with a token hash and the time whenever an acceptance should
    /// be recorded durably (at most once a day per token).
    persist: Box<dyn Fn(TokenHash, u64) + Send + Sync>,
}

impl KnownTokens {
    /// How often one token's acceptance is written again.
    const REFRESH: u64 = 24 * 3600;

    /// Known tokens from `remembered` (hash, last accepted), holding at most
    /// `capacity`; `persist` records new acceptances.
    pub fn new(
        capacity: usize,
        remembered: impl IntoIterator<Item = (TokenHash, u64)>,
        persist: Box<dyn Fn(TokenHash, u64) + Send + Sync>,
    ) -> KnownTokens {
        let tokens = quick_cache::sync::Cache::new(capacity);
        for (hash, at) in remembered {
            tokens.insert(hash, at);
        }
        KnownTokens { tokens, persist }
    }

    /// Whether GitHub accepted `hash` before.
    pub fn contains(&self, hash: &TokenHash) -> bool {
        self.tokens.get(hash).is_some()
    }

    /// Records that GitHub accepted `hash` at `now` (Unix seconds).
    pub fn accepted(&self, hash: TokenHash, now: u64) {
        let stale = self
            .tokens
            .get(&hash)
            .is_none_or(|at| now.saturating_sub(at) >= Self::REFRESH);
        if stale {
            self.tokens.insert(hash, now);
            (self.persist)(hash, now);
        }
    }
}

/// The GitHub client: one octocrab client built at startup, per-user clients
/// derived from it per call, the answer caches and the bounds on calls.
pub struct GitHub {
    client: Octocrab,
    host: String,
    ttl: Duration,
    denied_ttl: Duration,
    timeout: Duration,
    /// SHA-256(token) → its user (`None`: token rejected).
    logins: AnswerCache<TokenHash, Option<GithubUser>>,
    /// (SHA-256(token), lowercase owner/repo) → the repo and permissions
    /// (`None`: no access). Keyed by name, as GitHub is asked by name: a
    /// first publish learns the id only from this answer.
    permissions: AnswerCache<(TokenHash, String), Option<RepoAccess>>,
    /// SHA-256(token) → until when GitHub rate-limits it.
    limited: quick_cache::sync::Cache<TokenHash, Instant>,
    /// Client address → its budget of unknown-token lookups.
    budgets: Budgets,
    known: KnownTokens,
    breaker: Mutex<Breaker>,
    in_flight: Semaphore,
    /// The GitHub App permissions are asked through (`None`: each user's
    /// own token is asked).
    app: Option<app::App>,
    /// Called with the id of a GitHub user whose account no longer exists
    /// (their registry tokens are then revoked).
    on_gone: Box<dyn Fn(u64) + Send + Sync>,
}

/// A GitHub user as `GET /user` (and `GET /user/{account_id}`) names
/// them: the login, which may change, and the immutable numeric id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GithubUser {
    pub login: String,
    pub id: u64,
}

/// The part of `GET /repos/{owner}/{repo}` (and `GET /repositories/{id}`)
/// nmr reads.
#[derive(Deserialize)]
struct Repository {
    id: u64,
    name: String,
    owner: Owner,
    #[serde(default)]
    permissions: Option<Permissions>,
    #[serde(default)]
    private: bool,
}

impl Repository {
    /// The repository as GitHub names it now, with its ids.
    fn repo(&self) -> Repo {
        Repo {
            owner: self.owner.login.clone(),
            name: self.name.clone(),
            id: Some(self.id),
            owner_id: Some(self.owner.id),
        }
    }
}

#[derive(Deserialize)]
struct Owner {
    id: u64,
    login: String,
}

/// What GitHub says of a repository to one user: which repository it is now
/// (its current owner and name, with ids) and the user's permissions on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoAccess {
    pub repo: Repo,
    pub permissions: Permissions,
}

/// One GitHub answer: its status, headers and body.
type Response = (StatusCode, HeaderMap, String);

/// The secret a GitHub call is made with (a user's token, the App's JWT or
/// an installation token) and its SHA-256, which keys its rate-limit pause.
#[derive(Clone, Copy)]
struct Bearer<'a> {
    token: &'a str,
    hash: TokenHash,
}

impl<'a> Bearer<'a> {
    fn of(credentials: &'a Credentials) -> Bearer<'a> {
        Bearer {
            token: credentials.token(),
            hash: credentials.hash(),
        }
    }

    fn new(token: &'a str) -> Bearer<'a> {
        Bearer {
            token,
            hash: crate::auth::hash_token(token),
        }
    }
}

/// A call's path as logged: a collaborator lookup names a user, which is
/// not the log's business.
fn loggable(path: &str) -> &str {
    path.split("/collaborators/").next().unwrap_or(path)
}

/// What one lookup found.
enum Lookup<T> {
    Found(T),
    /// 401, 403 or 404 (the status): not for this token.
    Denied(StatusCode),
    /// Moved to the repository with this id.
    Moved(u64),
}

/// The repository id a redirect's `Location` names: GitHub answers a
/// renamed or transferred repository's old name with a redirect to
/// `{api}/repositories/{id}` (docs: "Follow redirects" in the REST API's
/// best practices). Any other target is not followed.
fn moved_to(headers: &HeaderMap) -> Option<u64> {
    let location = headers.get(http::header::LOCATION)?.to_str().ok()?;
    let (_, id) = location.rsplit_once("/repositories/")?;
    let id = id.split(['?', '#', '/']).next()?;
    id.parse().ok()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

impl GitHub {
    /// Builds the client for `config` (no request is made); `known` holds
    /// the tokens GitHub accepted before.
    ///
    /// With `auth.github.app.id` set, the App's private key is read and
    /// parsed here: an unreadable or malformed key is an error naming
    /// `auth.github.app.private_key`. `on_gone` is called with the id of a
    /// user GitHub says no longer exists.
    pub fn new(
        config: &GithubConfig,
        known: KnownTokens,
        on_gone: Box<dyn Fn(u64) + Send + Sync>,
    ) -> Result<GitHub, String> {
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
        let size = config.cache_size;
        let app = if config.app.enabled() {
            Some(app::App::new(config)?)
        } else {
            None
        };
        Ok(GitHub {
            client,
            host: config.host.clone(),
            ttl: Duration::from_secs(config.cache_ttl),
            denied_ttl: Duration::from_secs(config.denied_cache_ttl),
            timeout,
            logins: quick_cache::sync::Cache::new(size),
            permissions: quick_cache::sync::Cache::new(size),
            limited: quick_cache::sync::Cache::new(size),
            budgets: Budgets::new(config.max_lookups_per_minute, size),
            known,
            breaker: Mutex::new(Breaker::default()),
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
            app,
            on_gone,
        })
    }

    /// How long an answer is cached: `cache_ttl` when it found something,
    /// `denied_cache_ttl` when it did not.
    fn ttl_for(&self, found: bool) -> Duration {
        if found { self.ttl } else { self.denied_ttl }
    }

    /// Whether permissions are asked through the GitHub App.
    pub fn app_mode(&self) -> bool {
        self.app.is_some()
    }

    /// Whether GitHub tokens are accepted as bearers (always, unless App
    /// mode sets `auth.github.app.accept_github_tokens = false`).
    pub fn accepts_github_tokens(&self) -> bool {
        self.app.as_ref().is_none_or(|app| app.accept_github_tokens)
    }

    /// The web host `repository` URLs must name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The user the token of `credentials` belongs to (`GET /user`);
    /// `Ok(None)` when GitHub rejects the token. `client` is charged for the
    /// lookup when GitHub has not accepted this token before.
    pub async fn login(
        &self,
        credentials: &Credentials,
        client: IpAddr,
    ) -> Result<Option<GithubUser>, Refusal> {
        let hash = credentials.hash();
        let login = cached(&self.logins, hash, || async {
            let charge = (!self.known.contains(&hash)).then_some(client);
            match self
                .call::<GithubUser>(Bearer::of(credentials), Method::GET, "/user", charge)
                .await?
            {
                Lookup::Found(user) => {
                    // Recorded when GitHub says so, not on each cached hit.
                    self.known.accepted(hash, unix_now());
                    Ok((Some(user), self.ttl))
                }
                _ => Ok((None, self.denied_ttl)),
            }
        })
        .await?;
        Ok(login)
    }

    /// What the token's user may do on `repo` (`GET /repos/{owner}/{repo}`);
    /// `Ok(None)` when the user cannot see it. When GitHub answers that the
    /// repository moved (renamed or transferred: a 301 to
    /// `/repositories/{id}`), the answer is that of `GET /repositories/{id}`,
    /// GitHub's stable lookup, which names the repository as it is now.
    /// Whether it is still the bound repository is the caller's to decide,
    /// by id ([`crate::auth::decide`]).
    pub async fn repo_access(
        &self,
        credentials: &Credentials,
        repo: &Repo,
    ) -> Result<Option<RepoAccess>, Refusal> {
        cached(
            &self.permissions,
            (credentials.hash(), repo.cache_key()),
            || async {
                let path = format!("/repos/{}/{}", repo.owner, repo.name);
                let found = self
                    .repository(Bearer::of(credentials), &path)
                    .await?
                    .map(|r| RepoAccess {
                        permissions: r.permissions.unwrap_or_default(),
                        repo: r.repo(),
                    })
                    .filter(|a| a.permissions.pull);
                let ttl = self.ttl_for(found.is_some());
                Ok((found, ttl))
            },
        )
        .await
    }

    /// `GET path` (a `/repos/{owner}/{repo}` path) with `bearer`, following
    /// GitHub's redirect of a moved repository to `GET /repositories/{id}`
    /// once; `None` when the bearer cannot see it.
    async fn repository(
        &self,
        bearer: Bearer<'_>,
        path: &str,
    ) -> Result<Option<Repository>, Refusal> {
        Ok(
            match self
                .call::<Repository>(bearer, Method::GET, path, None)
                .await?
            {
                Lookup::Found(r) => Some(r),
                Lookup::Denied(_) => None,
                Lookup::Moved(id) => {
                    let by_id = format!("/repositories/{id}");
                    match self
                        .call::<Repository>(bearer, Method::GET, &by_id, None)
                        .await?
                    {
                        Lookup::Found(r) => Some(r),
                        _ => None,
                    }
                }
            },
        )
    }

    /// What `user` may do on `repo`: through the GitHub App in App mode
    /// (`credentials` unused), else with the user's own token
    /// ([`GitHub::repo_access`]). `Ok(None)`: no access.
    pub async fn access(
        &self,
        user: &GithubUser,
        credentials: Option<&Credentials>,
        repo: &Repo,
    ) -> Result<Option<RepoAccess>, Refusal> {
        match (&self.app, credentials) {
            (Some(app), _) => self.app_access(app, user, repo).await,
            (None, Some(credentials)) => self.repo_access(credentials, repo).await,
            (None, None) => Ok(None),
        }
    }

    /// Spends one of `client`'s lookups of unknown tokens.
    fn charge(&self, client: IpAddr) -> Result<(), Refusal> {
        self.budgets
            .take(client, Instant::now())
            .map_err(|wait| Refusal::Throttled {
                retry_after: seconds(wait),
            })
    }

    /// `METHOD path` with `bearer`, within every bound. `charge` is the
    /// client address to charge for the call, once it is sure to go out.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        bearer: Bearer<'_>,
        method: Method,
        path: &str,
        charge: Option<IpAddr>,
    ) -> Result<Lookup<T>, Refusal> {
        let hash = bearer.hash;
        let now = Instant::now();
        if let Some(until) = self.limited.get(&hash) {
            if until > now {
                return Err(Refusal::RateLimited {
                    retry_after: seconds(until - now),
                });
            }
            self.limited.remove(&hash);
        }
        self.lock_breaker()
            .allow(now)
            .map_err(|wait| Refusal::Unavailable {
                reason: "it failed moments ago".into(),
                retry_after: seconds(wait),
            })?;
        if let Some(client) = charge
            && let Err(refusal) = self.charge(client)
        {
            self.lock_breaker().cancel_probe();
            return Err(refusal);
        }
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| Refusal::Unavailable {
                reason: "nmr is shutting down".into(),
                retry_after: 1,
            })?;
        let outcome = self.request(bearer.token, &method, path).await;
        let failed = |reason: String, detail: String| {
            self.lock_breaker().failure(Instant::now());
            log_limited(
                log::Level::Warn,
                "github-unavailable",
                format!("GitHub: {method} {}: {detail}", loggable(path)),
            );
            Err(Refusal::Unavailable {
                reason,
                retry_after: 1,
            })
        };
        let (status, headers, body) = match outcome {
            Ok(answer) => answer,
            Err(detail) => return failed("no answer".into(), detail),
        };
        match classify(status, &headers, unix_now()) {
            Answer::Ok => {
                self.lock_breaker().success();
                serde_json::from_str(&body).map(Lookup::Found).or_else(|e| {
                    failed(
                        "unexpected answer".into(),
                        format!("unexpected answer: {e}"),
                    )
                })
            }
            Answer::Denied => {
                self.lock_breaker().success();
                Ok(Lookup::Denied(status))
            }
            Answer::Moved => {
                self.lock_breaker().success();
                match moved_to(&headers) {
                    Some(id) => Ok(Lookup::Moved(id)),
                    None => failed(
                        "an unexpected redirect".into(),
                        format!("answered {status} to an unexpected place"),
                    ),
                }
            }
            Answer::RateLimited(wait) => {
                self.lock_breaker().success();
                self.limited
                    .insert(hash, Instant::now() + Duration::from_secs(wait));
                log_limited(
                    log::Level::Warn,
                    "github-rate-limited",
                    format!(
                        "GitHub rate-limits a token for {wait} s ({method} {} answered {status})",
                        loggable(path)
                    ),
                );
                Err(Refusal::RateLimited { retry_after: wait })
            }
            Answer::Unavailable => failed(
                format!("it answered {}", status.as_u16()),
                format!("answered {status}"),
            ),
        }
    }

    fn lock_breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One `METHOD path` (GET, or a body-less POST) with `token`, within
    /// `auth.github.timeout` (redirects are not followed): the status,
    /// headers and body, or what went wrong (for the log only).
    async fn request(&self, token: &str, method: &Method, path: &str) -> Result<Response, String> {
        let client = self
            .client
            .user_access_token(token.to_string())
            .map_err(|e| e.to_string())?;
        let request = async {
            let response = if *method == Method::POST {
                client._post(path, None::<&()>).await
            } else {
                client._get(path).await
            }
            .map_err(|e| e.to_string())?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = client
                .body_to_string(response)
                .await
                .map_err(|e| e.to_string())?;
            Ok((status, headers, body))
        };
        tokio::time::timeout(self.timeout, request)
            .await
            .map_err(|_| format!("timed out after {:?}", self.timeout))?
    }
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
        let now = 1_800_000_000;
        let none = HeaderMap::new();
        let mut limited = HeaderMap::new();
        limited.insert("x-ratelimit-remaining", "0".parse().unwrap());
        limited.insert(
            "x-ratelimit-reset",
            (now + 120).to_string().parse().unwrap(),
        );
        let mut retry = HeaderMap::new();
        retry.insert("retry-after", "60".parse().unwrap());
        let c = |status, headers: &HeaderMap| classify(status, headers, now);
        assert_eq!(c(StatusCode::OK, &none), Answer::Ok);
        assert_eq!(c(StatusCode::UNAUTHORIZED, &none), Answer::Denied);
        assert_eq!(c(StatusCode::NOT_FOUND, &none), Answer::Denied);
        assert_eq!(c(StatusCode::FORBIDDEN, &none), Answer::Denied);
        assert_eq!(c(StatusCode::FORBIDDEN, &limited), Answer::RateLimited(120));
        assert_eq!(
            c(StatusCode::TOO_MANY_REQUESTS, &retry),
            Answer::RateLimited(60)
        );
        assert_eq!(
            c(StatusCode::TOO_MANY_REQUESTS, &none),
            Answer::RateLimited(60)
        );
        assert_eq!(c(StatusCode::BAD_GATEWAY, &none), Answer::Unavailable);
        assert_eq!(c(StatusCode::NOT_FOUND, &limited), Answer::Denied);
        // A reset already past still waits a second.
        limited.insert("x-ratelimit-reset", (now - 5).to_string().parse().unwrap());
        assert_eq!(c(StatusCode::FORBIDDEN, &limited), Answer::RateLimited(1));
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
        let cache: AnswerCache<u8, u32> = quick_cache::sync::Cache::new(10);
        let calls = std::sync::atomic::AtomicU32::new(0);
        let fetch = || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, Refusal>((7, Duration::from_millis(100)))
        };
        let results =
            futures_util::future::join_all((0..50).map(|_| cached(&cache, 1, fetch))).await;
        assert!(results.iter().all(|r| *r == Ok(7)));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(150)).await;
        cached(&cache, 1, fetch).await.unwrap();
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        let down = || async { Err::<(u32, Duration), _>(Refusal::RateLimited { retry_after: 1 }) };
        assert!(cached(&cache, 2, down).await.is_err());
        assert_eq!(cache.len(), 1, "failed lookups leave no entry");
        assert_eq!(
            cached(&cache, 2, fetch).await,
            Ok(7),
            "errors are not cached"
        );
    }

    #[test]
    fn caches_stay_within_their_bound() {
        let cache: AnswerCache<u32, u32> = quick_cache::sync::Cache::new(1000);
        for i in 0..100_000 {
            cache.insert(
                i,
                Timed {
                    value: i,
                    until: Instant::now(),
                },
            );
        }
        assert!(cache.len() <= 1000, "{}", cache.len());
    }
}
