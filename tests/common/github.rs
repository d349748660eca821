//! A fake GitHub REST API for tests, answering the two endpoints nmr calls
//! exactly as GitHub documents them:
//!
//! - `GET /user` ("Get the authenticated user"): 200 with the full user
//!   object, or 401 `{"message": "Bad credentials"|"Requires authentication",
//!   "documentation_url", "status": "401"}`.
//! - `GET /repos/{owner}/{repo}` ("Get a repository"): 200 with the repository
//!   object including `permissions` for the token's user, or 404
//!   `{"message": "Not Found", ...}` when the user cannot see it.
//!
//! Every answer carries GitHub's rate-limit headers (`x-ratelimit-limit`,
//! `-remaining`, `-reset`, `-used`, `-resource`). Modes simulate an outage
//! (503) and an exhausted rate limit (403 with `x-ratelimit-remaining: 0`).
//! Installation access tokens (`ghs_...`, what GitHub Actions' `GITHUB_TOKEN`
//! is) get GitHub's 403 "Resource not accessible by integration" from
//! `GET /user`, which only user tokens may call.
//! Users, repos, collaborators and team grants come from a table; the fake
//! counts the calls it receives.
//!
//! The GitHub App side (nmr's App mode) follows GitHub's docs too:
//!
//! - `GET /app`, `GET /repos/{owner}/{repo}/installation` and `POST
//!   /app/installations/{id}/access_tokens` need the App's JWT (RS256,
//!   verified with `tests/fixtures/github-app-key.pub.pem`; `iss` the App
//!   id; `exp` at most 10 minutes ahead), else 401 "A JSON web token could
//!   not be decoded". The installation endpoint answers 404 for an owner
//!   that has not installed the App. Access tokens (`ghs_…`) are `201
//!   {"token", "expires_at", "permissions": {"metadata": "read"},
//!   "repository_selection": "all"}` and stop working at `expires_at`.
//! - With an installation token: `GET /repos/{owner}/{repo}` (no
//!   `permissions` object: that is only for user tokens), `GET
//!   /repos/{owner}/{repo}/collaborators/{login}/permission` (`permission`
//!   admin/write/read/none, `role_name` admin/maintain/write/triage/read;
//!   404 for an unknown login) and `GET /user/{id}` (404 for a deleted
//!   account), for repositories of owners the installation covers.
//! - The OAuth web flow: `GET /login/oauth/authorize` with the App's
//!   `client_id` and exactly the registered `redirect_uri` sends the
//!   test-chosen signed-in user straight back (an already-authorized user,
//!   as GitHub does) with `?code=&state=`, or with
//!   `?error=access_denied&error_description=…&state=` when the test makes
//!   them decline. `POST /login/oauth/access_token` checks the client
//!   credentials, the code (single use, 10 minutes), the `redirect_uri` and
//!   the PKCE `code_verifier` against the S256 challenge; errors are
//!   `200 {"error", "error_description", "error_uri"}` as GitHub sends them;
//!   success is `{"access_token": "ghu_…", "expires_in": 28800,
//!   "refresh_token": "ghr_…", "refresh_token_expires_in", "scope": "",
//!   "token_type": "bearer"}` (form-encoded without `Accept:
//!   application/json`).
//!
//! Renames and transfers behave as GitHub documents: the old name answers
//! `301 Moved Permanently` with `Location: {api}/repositories/{id}` and the
//! body `{"message": "Moved Permanently", "url": ..., "documentation_url":
//! ...}` until a repository with that name exists again, and
//! `GET /repositories/{id}` answers like `GET /repos/...` for the repository
//! as it is now. A deleted and recreated repository gets a new `id`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use sha2::Digest;
use warp::Filter;

/// The fixture App's id, OAuth client id and secret.
pub const APP_ID: u64 = 424242;
pub const CLIENT_ID: &str = "Iv23liNmrTestApp0001";
pub const CLIENT_SECRET: &str = "nmr-test-app-client-secret";

/// The path of the fixture App's private key.
pub fn app_key_path() -> String {
    format!(
        "{}/tests/fixtures/github-app-key.pem",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A repository permission level, lowest first, as GitHub orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Perm {
    Pull,
    Triage,
    Push,
    Maintain,
    Admin,
}

/// How the fake answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Every call: 503.
    Down,
    /// Every call: 403 rate limit exceeded.
    RateLimited,
}

struct Repo {
    id: u64,
    owner: String,
    name: String,
    private: bool,
    /// login (lowercase) → permission as a collaborator.
    collaborators: HashMap<String, Perm>,
    /// (team members, permission granted to the team).
    teams: Vec<(Vec<String>, Perm)>,
}

#[derive(Default)]
struct State {
    /// token → (login, id).
    users: HashMap<String, (String, u64)>,
    /// lowercase "owner/repo" → repo.
    repos: HashMap<String, Repo>,
    /// lowercase old "owner/repo" → the id of the repo it was renamed or
    /// transferred to.
    redirects: HashMap<String, u64>,
    next_repo_id: u64,
    /// The fake's own base URL (for `Location`).
    base: String,
    mode: Option<Mode>,
    /// "GET /path" → count.
    calls: HashMap<String, usize>,
    /// Installation access tokens.
    installation_tokens: Vec<String>,
    /// token → calls made with it.
    calls_by_token: HashMap<String, usize>,
    /// Whether the App exists (App mode tests).
    app: bool,
    /// The registered callback URL (`None`: any is accepted).
    callback: Option<String>,
    /// lowercase owner → installation id.
    installations: HashMap<String, u64>,
    /// Issued installation tokens → (installation id, expiry).
    issued: HashMap<String, (u64, Instant)>,
    /// Lifetime of new installation tokens.
    installation_ttl: Duration,
    /// The user signed in to the fake's web pages, and whether they decline.
    signed_in: Option<String>,
    declines: bool,
    /// OAuth codes → the grant they stand for.
    codes: HashMap<String, Code>,
    /// How long a code is good for (GitHub: 10 minutes).
    code_ttl: Duration,
    /// The user tokens (`ghu_…`) the OAuth flow handed out.
    user_tokens: Vec<String>,
    counter: u64,
}

struct Code {
    login: String,
    redirect_uri: String,
    challenge: Option<String>,
    issued: Instant,
    used: bool,
}

/// The cast the GitHub tests share, on the private repo `acme/widget`:
/// alice (admin), bob (push through a team only), carol (pull), dave (no
/// access). `acme/gadget` is a second repo where alice and bob push;
/// `other/thing` one where alice is admin.
pub mod cast {
    pub const ALICE: &str = "ghp_alice_token_0001";
    pub const BOB: &str = "ghp_bob_token_0002";
    pub const CAROL: &str = "ghp_carol_token_0003";
    pub const DAVE: &str = "ghp_dave_token_0004";
}

/// A fake GitHub holding [`cast`].
pub fn with_cast() -> FakeGithub {
    use cast::*;
    let gh = FakeGithub::start();
    gh.user("alice", ALICE)
        .user("bob", BOB)
        .user("carol", CAROL)
        .user("dave", DAVE);
    gh.repo("acme", "widget", true)
        .collaborator("acme/widget", "alice", Perm::Admin)
        .collaborator("acme/widget", "carol", Perm::Pull)
        .team("acme/widget", &["bob"], Perm::Push);
    gh.repo("acme", "gadget", true)
        .collaborator("acme/gadget", "alice", Perm::Push)
        .collaborator("acme/gadget", "bob", Perm::Push);
    gh.repo("other", "thing", true)
        .collaborator("other/thing", "alice", Perm::Admin);
    gh
}

/// An nmr with `auth.type = "github"` against `gh`, plus `extra` settings.
pub fn server(gh: &FakeGithub, extra: &[(&str, &str)]) -> super::Server {
    let mut env = vec![
        ("NMR_AUTH__TYPE", "github"),
        ("NMR_AUTH__GITHUB__API_URL", gh.url.as_str()),
    ];
    env.extend_from_slice(extra);
    super::Server::start(&env)
}

/// [`server`] where alice has published `@acme/widget@1.0.0`, bound to
/// `acme/widget`.
pub fn seeded(gh: &FakeGithub, extra: &[(&str, &str)]) -> super::Server {
    let server = server(gh, extra);
    let reply = super::publish_with_repository(
        &server.http_as(cast::ALICE),
        "@acme/widget",
        "1.0.0",
        Some("acme/widget"),
    );
    assert_eq!(reply.status, 201, "{}", reply.error());
    server
}

/// The running fake.
pub struct FakeGithub {
    /// API base URL, e.g. `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<Mutex<State>>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl FakeGithub {
    pub fn start() -> FakeGithub {
        let state: Arc<Mutex<State>> = Arc::default();
        let shared = state.clone();
        let routes = warp::method()
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .map(
                move |method: http::Method,
                      path: warp::path::FullPath,
                      query: String,
                      headers: http::HeaderMap,
                      body: bytes::Bytes| {
                    let mut state = shared.lock().unwrap();
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let key = format!("{method} {}", path.as_str());
                    *state.calls.entry(key).or_default() += 1;
                    if let Some(token) = auth.as_deref().and_then(|a| a.split_once(' ')) {
                        *state.calls_by_token.entry(token.1.to_string()).or_default() += 1;
                    }
                    if let Some(reply) =
                        web(&mut state, &method, path.as_str(), &query, &headers, &body)
                    {
                        return reply;
                    }
                    if let Some(reply) =
                        app_api(&mut state, &method, path.as_str(), auth.as_deref())
                    {
                        return reply;
                    }
                    answer(&mut state, path.as_str(), auth.as_deref())
                },
            );
        let (port, shutdown) = super::serve_in_background(routes, 0);
        {
            let mut s = state.lock().unwrap();
            s.base = format!("http://127.0.0.1:{port}");
            s.installation_ttl = Duration::from_secs(3600);
            s.code_ttl = Duration::from_secs(600);
        }
        FakeGithub {
            url: format!("http://127.0.0.1:{port}"),
            state,
            _shutdown: shutdown,
        }
    }

    /// Adds a user whose token is `token`.
    pub fn user(&self, login: &str, token: &str) -> &Self {
        let mut s = self.state.lock().unwrap();
        let id = s.users.len() as u64 + 1000;
        s.users.insert(token.into(), (login.into(), id));
        self
    }

    /// Adds a repository (with a new id).
    pub fn repo(&self, owner: &str, name: &str, private: bool) -> &Self {
        let mut s = self.state.lock().unwrap();
        s.next_repo_id += 1;
        let id = 4000 + s.next_repo_id;
        s.repos.insert(
            format!("{owner}/{name}").to_lowercase(),
            Repo {
                id,
                owner: owner.into(),
                name: name.into(),
                private,
                collaborators: HashMap::new(),
                teams: Vec::new(),
            },
        );
        self
    }

    /// The id of `owner/name`.
    pub fn repo_id(&self, repo: &str) -> u64 {
        self.state.lock().unwrap().repos[&repo.to_lowercase()].id
    }

    /// Renames `owner/name` to `owner/new_name`, or transfers it to
    /// `new_owner`, as GitHub does: the same repository (same id and grants)
    /// under its new name, the old name redirecting to it.
    pub fn move_repo(&self, repo: &str, new_owner: &str, new_name: &str) -> &Self {
        let mut s = self.state.lock().unwrap();
        let mut moved = s.repos.remove(&repo.to_lowercase()).expect("repo exists");
        moved.owner = new_owner.into();
        moved.name = new_name.into();
        s.redirects.insert(repo.to_lowercase(), moved.id);
        s.repos
            .insert(format!("{new_owner}/{new_name}").to_lowercase(), moved);
        self
    }

    /// Deletes `owner/name` and creates a new, empty repository of the same
    /// name (a new id, no grants), as someone reclaiming the name would.
    pub fn recreate(&self, repo: &str) -> &Self {
        let (owner, name, private) = {
            let mut s = self.state.lock().unwrap();
            let old = s.repos.remove(&repo.to_lowercase()).expect("repo exists");
            s.redirects.retain(|_, id| *id != old.id);
            (old.owner, old.name, old.private)
        };
        self.repo(&owner, &name, private)
    }

    /// Grants `login` `perm` on `owner/name` as a direct collaborator.
    pub fn collaborator(&self, repo: &str, login: &str, perm: Perm) -> &Self {
        let mut s = self.state.lock().unwrap();
        s.repos
            .get_mut(&repo.to_lowercase())
            .expect("repo exists")
            .collaborators
            .insert(login.to_lowercase(), perm);
        self
    }

    /// Grants every member of a team `perm` on `owner/name`.
    pub fn team(&self, repo: &str, members: &[&str], perm: Perm) -> &Self {
        let mut s = self.state.lock().unwrap();
        s.repos
            .get_mut(&repo.to_lowercase())
            .expect("repo exists")
            .teams
            .push((members.iter().map(|m| m.to_lowercase()).collect(), perm));
        self
    }

    /// Adds an installation access token (`ghs_...`).
    pub fn installation_token(&self, token: &str) -> &Self {
        self.state
            .lock()
            .unwrap()
            .installation_tokens
            .push(token.into());
        self
    }

    /// How many calls carried `token`.
    pub fn calls_with(&self, token: &str) -> usize {
        let s = self.state.lock().unwrap();
        s.calls_by_token.get(token).copied().unwrap_or(0)
    }

    /// Creates the fixture GitHub App ([`APP_ID`], [`CLIENT_ID`]).
    pub fn app(&self) -> &Self {
        self.state.lock().unwrap().app = true;
        self
    }

    /// Registers the App's callback URL (GitHub Apps accept only it).
    pub fn callback(&self, url: &str) -> &Self {
        self.state.lock().unwrap().callback = Some(url.into());
        self
    }

    /// Installs the App on `owner` (all repositories).
    pub fn install(&self, owner: &str) -> &Self {
        let mut s = self.state.lock().unwrap();
        let id = 7_000_000 + s.installations.len() as u64;
        s.installations.insert(owner.to_lowercase(), id);
        self
    }

    /// New installation tokens live `ttl`.
    pub fn installation_ttl(&self, ttl: Duration) -> &Self {
        self.state.lock().unwrap().installation_ttl = ttl;
        self
    }

    /// OAuth codes expire after `ttl` (GitHub: 10 minutes).
    pub fn code_ttl(&self, ttl: Duration) -> &Self {
        self.state.lock().unwrap().code_ttl = ttl;
        self
    }

    /// Signs `login` in to the fake's web pages (`None`: nobody).
    pub fn sign_in(&self, login: Option<&str>) -> &Self {
        self.state.lock().unwrap().signed_in = login.map(str::to_string);
        self
    }

    /// Makes the signed-in user decline (or approve) the App.
    pub fn declines(&self, declines: bool) -> &Self {
        self.state.lock().unwrap().declines = declines;
        self
    }

    /// Deletes the GitHub account `login`: its tokens stop working and
    /// lookups of it answer 404.
    pub fn delete_user(&self, login: &str) -> &Self {
        self.state
            .lock()
            .unwrap()
            .users
            .retain(|_, (l, _)| !l.eq_ignore_ascii_case(login));
        self
    }

    /// Takes `login`'s grants on `repo` away (collaborator and teams).
    pub fn revoke(&self, repo: &str, login: &str) -> &Self {
        let mut s = self.state.lock().unwrap();
        let repo = s.repos.get_mut(&repo.to_lowercase()).expect("repo exists");
        repo.collaborators.remove(&login.to_lowercase());
        for (members, _) in &mut repo.teams {
            members.retain(|m| m != &login.to_lowercase());
        }
        self
    }

    /// The user tokens (`ghu_…`) the OAuth flow handed out.
    pub fn user_tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().user_tokens.clone()
    }

    /// The installation tokens the App was given.
    pub fn issued_installation_tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().issued.keys().cloned().collect()
    }

    /// How many `METHOD path` calls arrived.
    pub fn calls_of(&self, method: &str, path: &str) -> usize {
        let s = self.state.lock().unwrap();
        s.calls
            .get(&format!("{method} {path}"))
            .copied()
            .unwrap_or(0)
    }

    /// How many calls arrived whose `METHOD path` starts with `prefix`.
    pub fn calls_starting(&self, prefix: &str) -> usize {
        let s = self.state.lock().unwrap();
        s.calls
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = Some(mode);
    }

    /// How many `GET path` calls arrived.
    pub fn calls(&self, path: &str) -> usize {
        let s = self.state.lock().unwrap();
        s.calls.get(&format!("GET {path}")).copied().unwrap_or(0)
    }

    /// All calls so far.
    pub fn total_calls(&self) -> usize {
        self.state.lock().unwrap().calls.values().sum()
    }
}

type Reply = http::Response<Vec<u8>>;

fn respond(status: u16, body: &Value, remaining: u32) -> Reply {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .header("x-github-media-type", "github.v3; format=json")
        .header("x-ratelimit-limit", "5000")
        .header("x-ratelimit-remaining", remaining.to_string())
        .header("x-ratelimit-reset", "1893456000")
        .header("x-ratelimit-used", (5000 - remaining).to_string())
        .header("x-ratelimit-resource", "core")
        .header("x-github-request-id", "0000:1111:2222:3333:4444")
        .body(body.to_string().into_bytes())
        .unwrap()
}

fn error(status: u16, message: &str, documentation_url: &str) -> Reply {
    respond(
        status,
        &json!({"message": message, "documentation_url": documentation_url, "status": status.to_string()}),
        4999,
    )
}

/// Outage and rate-limit modes, for every API call.
fn mode_reply(state: &State) -> Option<Reply> {
    match state.mode {
        Some(Mode::Down) => Some(
            http::Response::builder()
                .status(503)
                .header("content-type", "text/html")
                .body(b"<html><body>Unicorn! Service Unavailable</body></html>".to_vec())
                .unwrap(),
        ),
        Some(Mode::RateLimited) => Some(respond(
            403,
            &json!({
                "message": "API rate limit exceeded for user ID 1000. If you reach out to GitHub Support for help, please include the request ID 0000:1111:2222:3333:4444.",
                "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
                "status": "403"
            }),
            0,
        )),
        _ => None,
    }
}

fn answer(state: &mut State, path: &str, auth: Option<&str>) -> Reply {
    if let Some(reply) = mode_reply(state) {
        return reply;
    }
    let token = auth.and_then(|a| {
        a.strip_prefix("Bearer ")
            .or_else(|| a.strip_prefix("token "))
    });
    let Some(token) = token else {
        return error(
            401,
            "Requires authentication",
            "https://docs.github.com/rest/users/users#get-the-authenticated-user",
        );
    };
    let installation =
        state.installation_tokens.iter().any(|t| t == token) || state.issued.contains_key(token);
    if installation && path == "/user" {
        return error(
            403,
            "Resource not accessible by integration",
            "https://docs.github.com/rest/users/users#get-the-authenticated-user",
        );
    }
    let Some((login, id)) = state.users.get(token).cloned() else {
        return error(401, "Bad credentials", "https://docs.github.com/rest");
    };
    if path == "/user" {
        return respond(200, &user_json(&login, id), 4999);
    }
    let not_found = || {
        error(
            404,
            "Not Found",
            "https://docs.github.com/rest/repos/repos#get-a-repository",
        )
    };
    let repo = if let Some(id) = path.strip_prefix("/repositories/") {
        let id: u64 = id.parse().unwrap_or(0);
        state.repos.values().find(|r| r.id == id)
    } else if let Some(full) = path.strip_prefix("/repos/") {
        let full = full.to_lowercase();
        match state.repos.get(&full) {
            Some(repo) => Some(repo),
            None => {
                if let Some(id) = state.redirects.get(&full) {
                    let url = format!("{}/repositories/{id}", state.base);
                    return moved(&url);
                }
                None
            }
        }
    } else {
        return error(404, "Not Found", "https://docs.github.com/rest");
    };
    let Some(repo) = repo else {
        return not_found();
    };
    let Some(perm) = perm_of(repo, &login) else {
        return not_found();
    };
    let owner_id = owner_id(&repo.owner);
    respond(200, &repo_json(repo, owner_id, Some(perm)), 4999)
}

/// GitHub's answer for a renamed or transferred repository's old name:
/// 301 to `url` (`{api}/repositories/{id}...`), in `Location` and the body.
fn moved(url: &str) -> Reply {
    let mut reply = respond(
        301,
        &json!({
            "message": "Moved Permanently",
            "url": url,
            "documentation_url": "https://docs.github.com/rest/guides/best-practices-for-using-the-rest-api#follow-redirects"
        }),
        4999,
    );
    reply.headers_mut().insert("location", url.parse().unwrap());
    reply
}

/// What `login` may do on `repo`, every grant included.
fn perm_of(repo: &Repo, login: &str) -> Option<Perm> {
    let lower = login.to_lowercase();
    let mut perm = repo.collaborators.get(&lower).copied();
    for (members, granted) in &repo.teams {
        if members.contains(&lower) {
            perm = perm.max(Some(*granted));
        }
    }
    if repo.owner.eq_ignore_ascii_case(login) {
        perm = Some(Perm::Admin);
    }
    if !repo.private {
        perm = perm.max(Some(Perm::Pull));
    }
    perm
}

fn html(status: u16, text: &str) -> Reply {
    http::Response::builder()
        .status(status)
        .header("content-type", "text/html; charset=utf-8")
        .body(format!("<html><body>{text}</body></html>").into_bytes())
        .unwrap()
}

fn redirect(location: &str) -> Reply {
    http::Response::builder()
        .status(302)
        .header("location", location)
        .header("content-type", "text/html; charset=utf-8")
        .body(b"<html><body>You are being redirected.</body></html>".to_vec())
        .unwrap()
}

fn form(raw: &str) -> HashMap<String, String> {
    raw.split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            Some((decode(k), decode(v)))
        })
        .collect()
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl State {
    fn next(&mut self, prefix: &str) -> String {
        self.counter += 1;
        let n = self.counter;
        let digest = sha2::Sha256::digest(format!("{prefix}{n}{}", self.base));
        format!("{prefix}{}", &hex::encode(digest)[..36])
    }
}

/// GitHub's web side: the OAuth authorize page and code exchange.
fn web(
    state: &mut State,
    method: &http::Method,
    path: &str,
    query: &str,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Option<Reply> {
    match (method.as_str(), path) {
        ("GET", "/login/oauth/authorize") => Some(authorize(state, &form(query))),
        ("POST", "/login/oauth/access_token") => {
            let params = match headers.get("content-type").and_then(|v| v.to_str().ok()) {
                Some(t) if t.starts_with("application/json") => {
                    serde_json::from_slice::<HashMap<String, String>>(body).unwrap_or_default()
                }
                _ => form(&String::from_utf8_lossy(body)),
            };
            let json_wanted = headers
                .get("accept")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("application/json"));
            let answer = access_token(state, &params);
            Some(if json_wanted {
                http::Response::builder()
                    .status(200)
                    .header("content-type", "application/json; charset=utf-8")
                    .body(answer.to_string().into_bytes())
                    .unwrap()
            } else {
                let pairs: Vec<String> = answer
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| {
                        let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                        format!("{k}={}", encode(&v))
                    })
                    .collect();
                http::Response::builder()
                    .status(200)
                    .header(
                        "content-type",
                        "application/x-www-form-urlencoded; charset=utf-8",
                    )
                    .body(pairs.join("&").into_bytes())
                    .unwrap()
            })
        }
        _ => None,
    }
}

fn authorize(state: &mut State, q: &HashMap<String, String>) -> Reply {
    if !state.app || q.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return html(404, "Not Found");
    }
    let Some(redirect_uri) = q.get("redirect_uri").cloned() else {
        return html(400, "The redirect_uri is missing.");
    };
    let oauth_state = q.get("state").cloned().unwrap_or_default();
    if let Some(callback) = state.callback.clone()
        && callback != redirect_uri
    {
        return redirect(&format!(
            "{callback}?error=redirect_uri_mismatch&error_description={}&error_uri={}&state={}",
            encode("The redirect_uri MUST match the registered callback URL for this application."),
            encode(
                "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/#redirect-uri-mismatch"
            ),
            encode(&oauth_state)
        ));
    }
    let challenge = q.get("code_challenge").cloned();
    if challenge.is_some() && q.get("code_challenge_method").map(String::as_str) != Some("S256") {
        return html(400, "code_challenge_method must be S256.");
    }
    let Some(login) = state.signed_in.clone() else {
        return html(200, "Sign in to GitHub");
    };
    if state.declines {
        return redirect(&format!(
            "{redirect_uri}?error=access_denied&error_description={}&error_uri={}&state={}",
            encode("The user has denied your application access."),
            encode(
                "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/#access-denied"
            ),
            encode(&oauth_state)
        ));
    }
    let code = state.next("")[..20].to_string();
    state.codes.insert(
        code.clone(),
        Code {
            login,
            redirect_uri: redirect_uri.clone(),
            challenge,
            issued: Instant::now(),
            used: false,
        },
    );
    redirect(&format!(
        "{redirect_uri}?code={code}&state={}",
        encode(&oauth_state)
    ))
}

fn oauth_error(error: &str, description: &str, anchor: &str) -> Value {
    json!({
        "error": error,
        "error_description": description,
        "error_uri": format!("https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#{anchor}"),
    })
}

fn access_token(state: &mut State, p: &HashMap<String, String>) -> Value {
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
    if !state.app || get("client_id") != CLIENT_ID || get("client_secret") != CLIENT_SECRET {
        return oauth_error(
            "incorrect_client_credentials",
            "The client_id and/or client_secret passed are incorrect.",
            "incorrect-client-credentials",
        );
    }
    let bad_code = || {
        oauth_error(
            "bad_verification_code",
            "The code passed is incorrect or expired.",
            "bad-verification-code",
        )
    };
    let Some(code) = state.codes.get_mut(get("code")) else {
        return bad_code();
    };
    if code.used || code.issued.elapsed() >= state.code_ttl {
        return bad_code();
    }
    code.used = true;
    if !get("redirect_uri").is_empty() && get("redirect_uri") != code.redirect_uri {
        return oauth_error(
            "redirect_uri_mismatch",
            "The redirect_uri MUST match the registered callback URL for this application.",
            "redirect-uri-mismatch",
        );
    }
    if let Some(challenge) = &code.challenge {
        let verifier = get("code_verifier");
        let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()));
        if verifier.is_empty() || &computed != challenge {
            return bad_code();
        }
    }
    let login = code.login.clone();
    let Some(id) = state
        .users
        .values()
        .find(|(l, _)| l.eq_ignore_ascii_case(&login))
        .map(|(_, id)| *id)
    else {
        return bad_code();
    };
    let token = state.next("ghu_");
    state.users.insert(token.clone(), (login, id));
    state.user_tokens.push(token.clone());
    json!({
        "access_token": token,
        "expires_in": 28800,
        "refresh_token": state.next("ghr_"),
        "refresh_token_expires_in": 15897600,
        "scope": "",
        "token_type": "bearer",
    })
}

/// Verifies the App's JWT in `auth` (GitHub: RS256, `iss` the App id, `exp`
/// in the future and at most 10 minutes ahead).
fn app_jwt_ok(auth: Option<&str>) -> Result<(), &'static str> {
    let jwt = auth
        .and_then(|a| a.strip_prefix("Bearer "))
        .ok_or("A JSON web token could not be decoded")?;
    let pem = std::fs::read(format!(
        "{}/tests/fixtures/github-app-key.pub.pem",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(&pem).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    validation.leeway = 0;
    let data = jsonwebtoken::decode::<Value>(jwt, &key, &validation)
        .map_err(|_| "A JSON web token could not be decoded")?;
    let iss = match &data.claims["iss"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if iss != APP_ID.to_string() {
        return Err("Integration not found");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exp = data.claims["exp"].as_u64().unwrap_or(0);
    if exp > now + 600 {
        return Err("'Expiration time' claim ('exp') is too far in the future");
    }
    Ok(())
}

fn installation_json(id: u64, owner: &str) -> Value {
    json!({
        "id": id,
        "client_id": CLIENT_ID,
        "account": {"login": owner, "id": owner_id(owner), "type": "Organization"},
        "repository_selection": "all",
        "access_tokens_url": format!("https://api.github.com/app/installations/{id}/access_tokens"),
        "repositories_url": "https://api.github.com/installation/repositories",
        "html_url": format!("https://github.com/organizations/{owner}/settings/installations/{id}"),
        "app_id": APP_ID, "app_slug": "nmr-test",
        "target_id": owner_id(owner), "target_type": "Organization",
        "permissions": {"metadata": "read"}, "events": [],
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
        "single_file_name": null, "has_multiple_single_files": false,
        "single_file_paths": [], "suspended_by": null, "suspended_at": null
    })
}

/// The App's side of the API: JWT endpoints, and what an installation
/// token may call. `None`: not an App call.
fn app_api(
    state: &mut State,
    method: &http::Method,
    path: &str,
    auth: Option<&str>,
) -> Option<Reply> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let jwt_call = matches!(
        (method.as_str(), segments.as_slice()),
        ("GET", ["app"])
            | ("GET", ["repos", _, _, "installation"])
            | ("GET", ["repositories", _, "installation"])
            | ("POST", ["app", "installations", _, "access_tokens"])
    );
    let token = auth.and_then(|a| {
        a.strip_prefix("Bearer ")
            .or_else(|| a.strip_prefix("token "))
    });
    let installation = token.and_then(|t| state.issued.get(t).copied());
    if !jwt_call && installation.is_none() {
        return None;
    }
    if let Some(reply) = mode_reply(state) {
        return Some(reply);
    }
    if jwt_call {
        let known = if state.app {
            Ok(())
        } else {
            Err("Integration not found")
        };
        if let Err(message) = app_jwt_ok(auth).and(known) {
            return Some(error(401, message, "https://docs.github.com/rest"));
        }
        let not_found = |doc: &str| Some(error(404, "Not Found", doc));
        return match (method.as_str(), segments.as_slice()) {
            ("GET", ["app"]) => Some(respond(
                200,
                &json!({
                    "id": APP_ID, "slug": "nmr-test", "client_id": CLIENT_ID,
                    "node_id": "A_nmr", "name": "nmr test",
                    "owner": {"login": "acme", "id": owner_id("acme"), "type": "Organization"},
                    "description": "", "external_url": "https://nmr.example",
                    "html_url": "https://github.com/apps/nmr-test",
                    "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
                    "permissions": {"metadata": "read"}, "events": []
                }),
                4999,
            )),
            ("GET", ["repos", owner, name, "installation"]) => {
                let full = format!("{owner}/{name}").to_lowercase();
                if !state.repos.contains_key(&full) {
                    if let Some(id) = state.redirects.get(&full) {
                        let url = format!("{}/repositories/{id}/installation", state.base);
                        return Some(moved(&url));
                    }
                    return not_found(
                        "https://docs.github.com/rest/apps/apps#get-a-repository-installation-for-the-authenticated-app",
                    );
                }
                let owner = state.repos[&full].owner.clone();
                match state.installations.get(&owner.to_lowercase()) {
                    Some(id) => Some(respond(200, &installation_json(*id, &owner), 4999)),
                    None => not_found(
                        "https://docs.github.com/rest/apps/apps#get-a-repository-installation-for-the-authenticated-app",
                    ),
                }
            }
            ("GET", ["repositories", id, "installation"]) => {
                let id: u64 = id.parse().unwrap_or(0);
                let owner = state
                    .repos
                    .values()
                    .find(|r| r.id == id)
                    .map(|r| r.owner.clone());
                match owner
                    .and_then(|o| state.installations.get(&o.to_lowercase()).map(|i| (*i, o)))
                {
                    Some((i, owner)) => Some(respond(200, &installation_json(i, &owner), 4999)),
                    None => not_found(
                        "https://docs.github.com/rest/apps/apps#get-a-repository-installation-for-the-authenticated-app",
                    ),
                }
            }
            ("POST", ["app", "installations", id, "access_tokens"]) => {
                let id: u64 = id.parse().unwrap_or(0);
                if !state.installations.values().any(|i| *i == id) {
                    return not_found(
                        "https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app",
                    );
                }
                let token = state.next("ghs_");
                let ttl = state.installation_ttl;
                state
                    .issued
                    .insert(token.clone(), (id, Instant::now() + ttl));
                let expires_at = chrono::Utc::now() + chrono::Duration::from_std(ttl).unwrap();
                Some(respond(
                    201,
                    &json!({
                        "token": token,
                        "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        "permissions": {"metadata": "read"},
                        "repository_selection": "all"
                    }),
                    4999,
                ))
            }
            _ => None,
        };
    }
    let (installation, expires) = installation?;
    if Instant::now() >= expires {
        return Some(error(
            401,
            "Bad credentials",
            "https://docs.github.com/rest",
        ));
    }
    let covered = |state: &State, repo: &Repo| {
        state.installations.get(&repo.owner.to_lowercase()) == Some(&installation)
    };
    let repo_not_found = || {
        Some(error(
            404,
            "Not Found",
            "https://docs.github.com/rest/repos/repos#get-a-repository",
        ))
    };
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["user", id]) => {
            let id: u64 = id.parse().unwrap_or(0);
            match state.users.values().find(|(_, i)| *i == id) {
                Some((login, id)) => Some(respond(200, &user_json(login, *id), 4999)),
                None => Some(error(
                    404,
                    "Not Found",
                    "https://docs.github.com/rest/users/users#get-a-user-using-their-id",
                )),
            }
        }
        ("GET", ["repos", owner, name, "collaborators", login, "permission"]) => {
            let full = format!("{owner}/{name}").to_lowercase();
            let Some(repo) = state.repos.get(&full).filter(|r| covered(state, r)) else {
                return repo_not_found();
            };
            let Some((login, id)) = state
                .users
                .values()
                .find(|(l, _)| l.eq_ignore_ascii_case(login))
                .cloned()
            else {
                return Some(error(
                    404,
                    "Not Found",
                    "https://docs.github.com/rest/collaborators/collaborators#get-repository-permissions-for-a-user",
                ));
            };
            let perm = perm_of(repo, &login);
            let (permission, role) = match perm {
                Some(Perm::Admin) => ("admin", "admin"),
                Some(Perm::Maintain) => ("write", "maintain"),
                Some(Perm::Push) => ("write", "write"),
                Some(Perm::Triage) => ("read", "triage"),
                Some(Perm::Pull) => ("read", "read"),
                None => ("none", "none"),
            };
            let mut user = user_json(&login, id);
            user["permissions"] = json!({
                "admin": perm >= Some(Perm::Admin), "maintain": perm >= Some(Perm::Maintain),
                "push": perm >= Some(Perm::Push), "triage": perm >= Some(Perm::Triage),
                "pull": perm >= Some(Perm::Pull)
            });
            user["role_name"] = json!(role);
            Some(respond(
                200,
                &json!({"permission": permission, "role_name": role, "user": user}),
                4999,
            ))
        }
        ("GET", ["repos", owner, name]) => {
            let full = format!("{owner}/{name}").to_lowercase();
            if let Some(id) = state
                .redirects
                .get(&full)
                .filter(|_| !state.repos.contains_key(&full))
            {
                let url = format!("{}/repositories/{id}", state.base);
                return Some(moved(&url));
            }
            match state.repos.get(&full).filter(|r| covered(state, r)) {
                Some(repo) => Some(respond(
                    200,
                    &repo_json(repo, owner_id(&repo.owner), None),
                    4999,
                )),
                None => repo_not_found(),
            }
        }
        ("GET", ["repositories", id]) => {
            let id: u64 = id.parse().unwrap_or(0);
            match state
                .repos
                .values()
                .find(|r| r.id == id && covered(state, r))
            {
                Some(repo) => Some(respond(
                    200,
                    &repo_json(repo, owner_id(&repo.owner), None),
                    4999,
                )),
                None => repo_not_found(),
            }
        }
        ("GET", ["user"]) => None,
        _ => Some(error(
            403,
            "Resource not accessible by integration",
            "https://docs.github.com/rest",
        )),
    }
}

/// A stable id per owner login.
fn owner_id(owner: &str) -> u64 {
    owner
        .to_lowercase()
        .bytes()
        .fold(90_000u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64))
        % 1_000_000
}

fn user_json(login: &str, id: u64) -> Value {
    json!({
        "login": login, "id": id, "node_id": format!("U_{id}"),
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"), "gravatar_id": "",
        "url": format!("https://api.github.com/users/{login}"), "html_url": format!("https://github.com/{login}"),
        "followers_url": format!("https://api.github.com/users/{login}/followers"),
        "following_url": format!("https://api.github.com/users/{login}/following{{/other_user}}"),
        "gists_url": format!("https://api.github.com/users/{login}/gists{{/gist_id}}"),
        "starred_url": format!("https://api.github.com/users/{login}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("https://api.github.com/users/{login}/subscriptions"),
        "organizations_url": format!("https://api.github.com/users/{login}/orgs"),
        "repos_url": format!("https://api.github.com/users/{login}/repos"),
        "events_url": format!("https://api.github.com/users/{login}/events{{/privacy}}"),
        "received_events_url": format!("https://api.github.com/users/{login}/received_events"),
        "type": "User", "user_view_type": "private", "site_admin": false,
        "name": null, "company": null, "blog": "", "location": null, "email": null, "hireable": null,
        "bio": null, "twitter_username": null, "public_repos": 1, "public_gists": 0,
        "followers": 0, "following": 0,
        "created_at": "2020-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"
    })
}

/// The repository object; `perm` is the token user's (`None`: an
/// installation token, which gets no `permissions` object).
fn repo_json(repo: &Repo, owner_id: u64, perm: Option<Perm>) -> Value {
    let full = format!("{}/{}", repo.owner, repo.name);
    let id = repo.id;
    let mut value = json!({
        "id": id, "node_id": format!("R_{id}"), "name": repo.name, "full_name": full,
        "private": repo.private, "visibility": if repo.private { "private" } else { "public" },
        "owner": {
            "login": repo.owner, "id": owner_id, "node_id": format!("O_{owner_id}"),
            "avatar_url": format!("https://avatars.githubusercontent.com/u/{owner_id}?v=4"), "gravatar_id": "",
            "url": format!("https://api.github.com/users/{}", repo.owner),
            "html_url": format!("https://github.com/{}", repo.owner),
            "type": "Organization", "user_view_type": "public", "site_admin": false
        },
        "html_url": format!("https://github.com/{full}"), "description": null, "fork": false,
        "url": format!("https://api.github.com/repos/{full}"),
        "clone_url": format!("https://github.com/{full}.git"),
        "git_url": format!("git://github.com/{full}.git"),
        "ssh_url": format!("git@github.com:{full}.git"),
        "default_branch": "main", "archived": false, "disabled": false,
        "created_at": "2024-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z", "pushed_at": "2026-01-01T00:00:00Z"
    });
    if let Some(perm) = perm {
        value["permissions"] = json!({
            "admin": perm >= Perm::Admin,
            "maintain": perm >= Perm::Maintain,
            "push": perm >= Perm::Push,
            "triage": perm >= Perm::Triage,
            "pull": true
        });
    }
    value
}

/// The environment of an nmr in App mode against `gh` (which must have
/// [`FakeGithub::app`]): the fixture App's id, key and OAuth client.
pub fn app_env(gh: &FakeGithub) -> Vec<(String, String)> {
    [
        ("NMR_AUTH__TYPE", "github".to_string()),
        ("NMR_AUTH__GITHUB__API_URL", gh.url.clone()),
        ("NMR_AUTH__GITHUB__WEB_URL", gh.url.clone()),
        ("NMR_AUTH__GITHUB__APP__ID", APP_ID.to_string()),
        ("NMR_AUTH__GITHUB__APP__PRIVATE_KEY", app_key_path()),
        ("NMR_AUTH__GITHUB__APP__CLIENT_ID", CLIENT_ID.to_string()),
        (
            "NMR_AUTH__GITHUB__APP__CLIENT_SECRET",
            CLIENT_SECRET.to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// An nmr in App mode against `gh` (the App created and installed on
/// `acme`, its callback URL registered), plus `extra` settings.
pub fn app_server(gh: &FakeGithub, extra: &[(&str, &str)]) -> super::Server {
    gh.app().install("acme");
    let mut env = app_env(gh);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let borrowed: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = super::Server::start(&borrowed);
    gh.callback(&format!("{}-/v1/login/callback", server.url));
    server
}

/// What a browser ended on: the last page's status and body, and every URL
/// it visited.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub body: String,
    pub visited: Vec<String>,
}

/// A scripted browser: `GET url`, following `Location` redirects (at most
/// 5), as a user's browser does with npm's loginUrl.
pub fn browse(url: &str) -> Page {
    use std::io::Read;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let mut visited = vec![url.to_string()];
    let mut current = url.to_string();
    for _ in 0..6 {
        let response = agent.get(&current).call().expect("browser request");
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = String::new();
        response
            .into_body()
            .into_reader()
            .read_to_string(&mut body)
            .unwrap();
        match location {
            Some(next) if (300..400).contains(&status) => {
                visited.push(next.clone());
                current = next;
            }
            _ => {
                return Page {
                    status,
                    body,
                    visited,
                };
            }
        }
    }
    panic!("too many redirects: {visited:?}");
}

/// Logs in to `server` through the web flow as `login` (signed in to `gh`),
/// without npm: POST /-/v1/login, the browser, then the doneUrl. Returns
/// the registry token.
pub fn web_login(server: &super::Server, gh: &FakeGithub, login: &str) -> String {
    let http = server.http();
    let start = http.post_json("/-/v1/login", &json!({}));
    assert_eq!(start.status, 200, "{}", start.error());
    let urls = start.json();
    gh.sign_in(Some(login)).declines(false);
    let page = browse(urls["loginUrl"].as_str().unwrap());
    assert_eq!(page.status, 200, "{page:?}");
    let done = http.get(
        urls["doneUrl"]
            .as_str()
            .unwrap()
            .trim_start_matches(&server.url),
        &[],
    );
    assert_eq!(done.status, 200, "{}", done.error());
    done.json()["token"].as_str().unwrap().to_string()
}
