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
//! Renames and transfers behave as GitHub documents: the old name answers
//! `301 Moved Permanently` with `Location: {api}/repositories/{id}` and the
//! body `{"message": "Moved Permanently", "url": ..., "documentation_url":
//! ...}` until a repository with that name exists again, and
//! `GET /repositories/{id}` answers like `GET /repos/...` for the repository
//! as it is now. A deleted and recreated repository gets a new `id`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use warp::Filter;

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
        let routes = warp::get()
            .and(warp::path::full())
            .and(warp::header::optional::<String>("authorization"))
            .map(move |path: warp::path::FullPath, auth: Option<String>| {
                answer(&mut shared.lock().unwrap(), path.as_str(), auth.as_deref())
            });
        let (port, shutdown) = super::serve_in_background(routes, 0);
        state.lock().unwrap().base = format!("http://127.0.0.1:{port}");
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

fn answer(state: &mut State, path: &str, auth: Option<&str>) -> Reply {
    *state.calls.entry(format!("GET {path}")).or_default() += 1;
    if let Some(token) = auth
        .and_then(|a| a.split_once(' '))
        .map(|(_, t)| t.to_string())
    {
        *state.calls_by_token.entry(token).or_default() += 1;
    }
    match state.mode {
        Some(Mode::Down) => {
            return http::Response::builder()
                .status(503)
                .header("content-type", "text/html")
                .body(b"<html><body>Unicorn! Service Unavailable</body></html>".to_vec())
                .unwrap();
        }
        Some(Mode::RateLimited) => {
            return respond(
                403,
                &json!({
                    "message": "API rate limit exceeded for user ID 1000. If you reach out to GitHub Support for help, please include the request ID 0000:1111:2222:3333:4444.",
                    "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
                    "status": "403"
                }),
                0,
            );
        }
        _ => {}
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
    if state.installation_tokens.iter().any(|t| t == token) && path == "/user" {
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
                    let mut moved = respond(
                        301,
                        &json!({
                            "message": "Moved Permanently",
                            "url": url,
                            "documentation_url": "https://docs.github.com/rest/guides/best-practices-for-using-the-rest-api#follow-redirects"
                        }),
                        4999,
                    );
                    moved.headers_mut().insert("location", url.parse().unwrap());
                    return moved;
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
    let lower = login.to_lowercase();
    let mut perm = repo.collaborators.get(&lower).copied();
    for (members, granted) in &repo.teams {
        if members.contains(&lower) {
            perm = perm.max(Some(*granted));
        }
    }
    if repo.owner.eq_ignore_ascii_case(&login) {
        perm = Some(Perm::Admin);
    }
    if !repo.private {
        perm = perm.max(Some(Perm::Pull));
    }
    let Some(perm) = perm else {
        return not_found();
    };
    let owner_id = owner_id(&repo.owner);
    respond(200, &repo_json(repo, owner_id, perm), 4999)
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

fn repo_json(repo: &Repo, owner_id: u64, perm: Perm) -> Value {
    let full = format!("{}/{}", repo.owner, repo.name);
    let id = repo.id;
    json!({
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
        "created_at": "2024-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z", "pushed_at": "2026-01-01T00:00:00Z",
        "permissions": {
            "admin": perm >= Perm::Admin,
            "maintain": perm >= Perm::Maintain,
            "push": perm >= Perm::Push,
            "triage": perm >= Perm::Triage,
            "pull": true
        }
    })
}
