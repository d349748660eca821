//! GitHub App mode: nmr asks GitHub for permissions as an App that an admin
//! of each owner installs once (one permission: Metadata, read-only), so it
//! keeps no user's GitHub token; and the App's OAuth client signs users in
//! for `npm login` (docs/github-app.md has the whole flow).
//!
//! The calls, as GitHub's REST docs give them ("Authenticating as a GitHub
//! App", "Apps", "Collaborators", "Users"):
//!
//! - The App authenticates with a JWT signed RS256 by its private key:
//!   `iss` = the App id, `iat` 60 s in the past against clock drift, `exp`
//!   9 minutes ahead (GitHub refuses more than 10). One JWT is reused until a
//!   minute before it expires.
//! - `GET /repos/{owner}/{repo}/installation` (JWT): the installation that
//!   covers the repository; 404 when the App is not installed there. Cached
//!   per repository for `auth.github.cache_ttl` (a miss for
//!   `denied_cache_ttl`).
//! - `POST /app/installations/{id}/access_tokens` (JWT): `201 {"token":
//!   "ghs_…", "expires_at": RFC 3339}`; cached until shortly before
//!   `expires_at` ([`token_lifetime`]).
//! - `GET /repos/{owner}/{repo}` (installation token): the repository's id,
//!   owner and visibility, following a moved repository's 301 as
//!   [`GitHub::repo_access`] does. Cached per repository name.
//! - `GET /repos/{owner}/{repo}/collaborators/{login}/permission`
//!   (installation token): `permission` (`admin`, `write`, `read`, `none`)
//!   and `role_name` (`admin`, `maintain`, `write`, `triage`, `read`, or a
//!   custom role), every source of grants (teams, org) included; mapped by
//!   [`permissions_of`]. Cached per (GitHub user id, repository id), so one
//!   user's burst of installs costs one call per repository, whatever token
//!   they use. A 404 means no user has that login: `GET /user/{id}` then
//!   tells a renamed user (asked again under the new login) from an account
//!   that is gone (404, or `suspended_at` set), whose registry tokens are
//!   revoked.
//! - `GET /app` (JWT): the App's `html_url`, for the install link of a 403.
//!
//! Every call goes through [`GitHub::call`], so the breaker, the in-flight
//! bound and rate-limit pauses of `github.rs` hold unchanged.

use std::sync::Mutex;
use std::time::Duration;

use http::Method;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;

use super::{
    AnswerCache, Bearer, GitHub, GithubUser, Lookup, Permissions, Refusal, Repo, RepoAccess,
    cached, unix_now,
};
use crate::config::GithubConfig;

/// Seconds a JWT of the App is valid (GitHub's limit is 600).
pub const JWT_LIFETIME: u64 = 540;

/// The most bytes read of an OAuth answer.
const MAX_OAUTH_ANSWER: usize = 64 * 1024;

/// The App: its identity, OAuth client, and the caches of its answers.
pub(super) struct App {
    id: String,
    key: EncodingKey,
    pub(super) accept_github_tokens: bool,
    client_id: String,
    client_secret: String,
    /// `auth.github.web_url` without a trailing `/`.
    web_url: String,
    http: reqwest::Client,
    /// The current JWT and its `exp`.
    jwt: Mutex<Option<(String, u64)>>,
    /// Repository (lowercase `owner/repo`) → its installation id.
    installations: AnswerCache<String, Option<u64>>,
    /// Installation id → an installation token.
    tokens: AnswerCache<u64, String>,
    /// Repository → how GitHub names it now, and whether it is private.
    repos: AnswerCache<String, Option<(Repo, bool)>>,
    /// (GitHub user id, repository id) → the user's permissions.
    permissions: AnswerCache<(u64, u64), Option<Permissions>>,
    /// Where the App is installed from.
    install_url: AnswerCache<(), String>,
}

impl App {
    /// The App of `config.app`, its private key read and tried: an
    /// unreadable file or a key that cannot sign is an error naming
    /// `auth.github.app.private_key`.
    pub(super) fn new(config: &GithubConfig) -> Result<App, String> {
        let path = &config.app.private_key;
        let pem = std::fs::read(path).map_err(|e| {
            format!(
                "auth.github.app.private_key: cannot read {}: {e}",
                path.display()
            )
        })?;
        let bad = |e: jsonwebtoken::errors::Error| {
            format!(
                "auth.github.app.private_key: {} is not an RSA private key in PEM form (the file GitHub's \"Generate a private key\" downloads): {e}",
                path.display()
            )
        };
        let key = EncodingKey::from_rsa_pem(&pem).map_err(bad)?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("auth.github.app: cannot build an HTTP client: {e}"))?;
        let size = config.cache_size;
        let app = App {
            id: config.app.id.clone(),
            key,
            accept_github_tokens: config.app.accept_github_tokens,
            client_id: config.app.client_id.clone(),
            client_secret: config.app.client_secret.clone(),
            web_url: config.web_url.trim_end_matches('/').to_string(),
            http,
            jwt: Mutex::new(None),
            installations: AnswerCache::new(size),
            tokens: AnswerCache::new(size.min(10_000)),
            repos: AnswerCache::new(size),
            permissions: AnswerCache::new(size),
            install_url: AnswerCache::new(1),
        };
        app.sign(unix_now()).map_err(bad)?;
        Ok(app)
    }

    /// A new JWT for `now` and its `exp`.
    fn sign(&self, now: u64) -> Result<(String, u64), jsonwebtoken::errors::Error> {
        let exp = now + JWT_LIFETIME;
        let claims = serde_json::json!({
            "iat": now.saturating_sub(60),
            "exp": exp,
            "iss": self.id,
        });
        let jwt = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)?;
        Ok((jwt, exp))
    }

    /// The App's JWT, reused until a minute before it expires.
    fn jwt(&self) -> Result<String, Refusal> {
        let now = unix_now();
        let mut current = self.jwt.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((jwt, exp)) = current.as_ref()
            && *exp > now + 60
        {
            return Ok(jwt.clone());
        }
        let (jwt, exp) = self.sign(now).map_err(|e| Refusal::Unavailable {
            reason: format!("the App's key cannot sign: {e}"),
            retry_after: 60,
        })?;
        *current = Some((jwt.clone(), exp));
        Ok(jwt)
    }

    /// Whether the App's OAuth client is configured (`client_id` and
    /// `client_secret`), which web login needs.
    pub(super) fn can_sign_in(&self) -> bool {
        !self.client_id.is_empty() && !self.client_secret.is_empty()
    }
}

/// GitHub's permissions of a collaborator, from `GET
/// /repos/{owner}/{repo}/collaborators/{login}/permission`: `role_name`
/// when it is a built-in role (`admin`, `maintain`, `write`, `triage`,
/// `read`), else the base role `permission` (`admin`, `write`, `read`,
/// `none`; a custom role maps to its base). `None`: no access.
pub fn permissions_of(permission: &str, role_name: &str) -> Option<Permissions> {
    let level = match role_name {
        "admin" | "maintain" | "write" | "triage" | "read" => role_name,
        _ => permission,
    };
    let (admin, maintain, push, triage) = match level {
        "admin" => (true, true, true, true),
        "maintain" => (false, true, true, true),
        "write" => (false, false, true, true),
        "triage" => (false, false, false, true),
        "read" => (false, false, false, false),
        _ => return None,
    };
    Some(Permissions {
        admin,
        maintain,
        push,
        triage,
        pull: true,
    })
}

/// How long an installation token that expires at `expires_at` (RFC 3339)
/// is used, from `now` (Unix seconds): until 5 minutes before it expires,
/// or half its remaining life when that is shorter; nothing when the date
/// cannot be read.
pub fn token_lifetime(expires_at: &str, now: u64) -> Duration {
    let Ok(at) = chrono::DateTime::parse_from_rfc3339(expires_at) else {
        return Duration::ZERO;
    };
    let left = (at.timestamp().max(0) as u64).saturating_sub(now);
    Duration::from_secs(left - (left / 2).min(300))
}

#[derive(Deserialize)]
struct Installation {
    id: u64,
}

#[derive(Deserialize)]
struct AccessToken {
    token: String,
    expires_at: String,
}

#[derive(Deserialize)]
struct CollaboratorPermission {
    permission: String,
    #[serde(default)]
    role_name: String,
}

#[derive(Deserialize)]
struct Account {
    login: String,
    /// GitHub Enterprise Server: when the account was suspended.
    #[serde(default)]
    suspended_at: Option<String>,
}

#[derive(Deserialize)]
struct AppInfo {
    html_url: String,
}

#[derive(Deserialize)]
struct OAuthAnswer {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// Whether `login` can be a GitHub login (so it may go into a path).
fn is_login(login: &str) -> bool {
    !login.is_empty()
        && login.len() <= 39
        && login
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn unavailable(reason: &str) -> Refusal {
    Refusal::Unavailable {
        reason: reason.into(),
        retry_after: 5,
    }
}

impl GitHub {
    /// What `user` may do on `repo`, asked through the App (see the module
    /// docs); `Ok(None)`: no access. A public repository is readable by
    /// everyone. [`Refusal::NotInstalled`] when the App does not cover the
    /// repository.
    pub(super) async fn app_access(
        &self,
        app: &App,
        user: &GithubUser,
        repo: &Repo,
    ) -> Result<Option<RepoAccess>, Refusal> {
        let Some(installation) = self.installation(app, repo).await? else {
            return Err(Refusal::NotInstalled {
                owner: repo.owner.clone(),
                install_url: self.install_url(app).await,
            });
        };
        let token = self.installation_token(app, installation).await?;
        let found = cached(&app.repos, repo.cache_key(), || async {
            let path = format!("/repos/{}/{}", repo.owner, repo.name);
            let found = self
                .repository(Bearer::new(&token), &path)
                .await?
                .map(|r| (r.repo(), r.private));
            let ttl = self.ttl_for(found.is_some());
            Ok((found, ttl))
        })
        .await?;
        let Some((current, private)) = found else {
            return Ok(None);
        };
        let repo_id = current.id.unwrap_or_default();
        let granted = cached(&app.permissions, (user.id, repo_id), || async {
            let granted = self.collaborator(&token, &current, user).await?;
            let ttl = self.ttl_for(granted.is_some());
            Ok((granted, ttl))
        })
        .await?;
        let permissions = match granted {
            Some(p) => p,
            None if !private => Permissions {
                pull: true,
                ..Permissions::default()
            },
            None => return Ok(None),
        };
        Ok(Some(RepoAccess {
            repo: current,
            permissions,
        }))
    }

    /// The installation covering `repo`, if the App is installed there.
    async fn installation(&self, app: &App, repo: &Repo) -> Result<Option<u64>, Refusal> {
        cached(&app.installations, repo.cache_key(), || async {
            let jwt = app.jwt()?;
            let path = format!("/repos/{}/{}/installation", repo.owner, repo.name);
            let found = match self
                .call::<Installation>(Bearer::new(&jwt), Method::GET, &path, None)
                .await?
            {
                Lookup::Found(i) => Some(i.id),
                Lookup::Moved(id) => {
                    let path = format!("/repositories/{id}/installation");
                    match self
                        .call::<Installation>(Bearer::new(&jwt), Method::GET, &path, None)
                        .await?
                    {
                        Lookup::Found(i) => Some(i.id),
                        _ => None,
                    }
                }
                Lookup::Denied(status) if status == http::StatusCode::UNAUTHORIZED => {
                    return Err(self.jwt_refused());
                }
                Lookup::Denied(_) => None,
            };
            let ttl = self.ttl_for(found.is_some());
            Ok((found, ttl))
        })
        .await
    }

    /// An installation token of `installation`, cached until shortly
    /// before it expires.
    async fn installation_token(&self, app: &App, installation: u64) -> Result<String, Refusal> {
        cached(&app.tokens, installation, || async {
            let jwt = app.jwt()?;
            let path = format!("/app/installations/{installation}/access_tokens");
            match self
                .call::<AccessToken>(Bearer::new(&jwt), Method::POST, &path, None)
                .await?
            {
                Lookup::Found(t) => {
                    let lifetime = token_lifetime(&t.expires_at, unix_now());
                    Ok((t.token, lifetime))
                }
                Lookup::Denied(status) if status == http::StatusCode::UNAUTHORIZED => {
                    Err(self.jwt_refused())
                }
                _ => Err(unavailable("it refused the App an installation token")),
            }
        })
        .await
    }

    /// A 401 to the App's JWT: a wrong key or App id, or a clock far off.
    fn jwt_refused(&self) -> Refusal {
        crate::limits::log_limited(
            log::Level::Error,
            "github-app-jwt",
            "GitHub refused the App's JWT: check auth.github.app.id and auth.github.app.private_key, and this machine's clock",
        );
        unavailable("it refused nmr's App credentials")
    }

    /// `user`'s permissions on `repo` (as GitHub names it now), with an
    /// installation token; `None`: none. A login GitHub does not know is
    /// looked up by id: a renamed user is asked again under the new login,
    /// a gone account is reported through `on_gone`.
    async fn collaborator(
        &self,
        token: &str,
        repo: &Repo,
        user: &GithubUser,
    ) -> Result<Option<Permissions>, Refusal> {
        let ask = |login: String| async move {
            if !is_login(&login) {
                return Ok(None);
            }
            let path = format!(
                "/repos/{}/{}/collaborators/{login}/permission",
                repo.owner, repo.name
            );
            match self
                .call::<CollaboratorPermission>(Bearer::new(token), Method::GET, &path, None)
                .await?
            {
                Lookup::Found(p) => Ok(Some(permissions_of(&p.permission, &p.role_name))),
                _ => Ok(None),
            }
        };
        if let Some(granted) = ask(user.login.clone()).await? {
            return Ok(granted);
        }
        let path = format!("/user/{}", user.id);
        match self
            .call::<Account>(Bearer::new(token), Method::GET, &path, None)
            .await?
        {
            Lookup::Found(account) if account.suspended_at.is_none() => {
                if account.login.eq_ignore_ascii_case(&user.login) {
                    return Ok(None);
                }
                Ok(ask(account.login).await?.flatten())
            }
            Lookup::Moved(_) => Ok(None),
            _ => {
                log::info!(
                    "GitHub user {} no longer exists or is suspended: revoking their registry tokens",
                    user.id
                );
                (self.on_gone)(user.id);
                Ok(None)
            }
        }
    }

    /// Where an admin installs the App (`{html_url}/installations/new`
    /// from `GET /app`), or GitHub's web address when it cannot be asked.
    async fn install_url(&self, app: &App) -> String {
        let url = cached(&app.install_url, (), || async {
            let jwt = app.jwt()?;
            match self
                .call::<AppInfo>(Bearer::new(&jwt), Method::GET, "/app", None)
                .await?
            {
                Lookup::Found(info) => Ok((
                    format!("{}/installations/new", info.html_url.trim_end_matches('/')),
                    Duration::from_secs(3600),
                )),
                _ => Err(unavailable("no App")),
            }
        })
        .await;
        url.unwrap_or_else(|_| format!("{}/apps", app.web_url))
    }

    /// Whether `npm login` can sign users in: App mode with its OAuth
    /// client configured.
    pub fn can_sign_in(&self) -> bool {
        self.app.as_ref().is_some_and(App::can_sign_in)
    }

    /// GitHub's authorize URL for the web flow (`{web_url}/login/oauth/authorize`
    /// with the App's `client_id`, `redirect_uri`, `state` and the PKCE
    /// `code_challenge`, method S256); `None` unless [`GitHub::can_sign_in`].
    pub fn authorize_url(
        &self,
        redirect_uri: &str,
        state: &str,
        challenge: &str,
    ) -> Option<String> {
        let app = self.app.as_ref().filter(|a| a.can_sign_in())?;
        let query = [
            ("client_id", app.client_id.as_str()),
            ("redirect_uri", redirect_uri),
            ("state", state),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ];
        Some(format!(
            "{}/login/oauth/authorize?{}",
            app.web_url,
            form_encode(&query)
        ))
    }

    /// The user who approved the web flow: exchanges `code` (with the PKCE
    /// `verifier` and the same `redirect_uri`) at `POST
    /// {web_url}/login/oauth/access_token`, reads `GET /user` with the user
    /// token, and drops that token. The error is the sentence for the page
    /// the user sees.
    pub async fn sign_in(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<GithubUser, String> {
        let app = self
            .app
            .as_ref()
            .filter(|a| a.can_sign_in())
            .ok_or("web login is not configured on this registry")?;
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| "nmr is shutting down")?;
        let body = form_encode(&[
            ("client_id", app.client_id.as_str()),
            ("client_secret", app.client_secret.as_str()),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ]);
        let unreachable = |detail: String| {
            log_oauth(&detail);
            "GitHub could not be asked to finish the login: try npm login again in a minute"
                .to_string()
        };
        let mut response = app
            .http
            .post(format!("{}/login/oauth/access_token", app.web_url))
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| unreachable(format!("no answer: {e}")))?;
        let status = response.status();
        let mut raw = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unreachable(format!("a broken answer: {e}")))?
        {
            raw.extend_from_slice(&chunk);
            if raw.len() > MAX_OAUTH_ANSWER {
                return Err(unreachable("an answer too large".into()));
            }
        }
        if !status.is_success() {
            return Err(unreachable(format!("answered {status}")));
        }
        let answer: OAuthAnswer = serde_json::from_slice(&raw)
            .map_err(|e| unreachable(format!("an unexpected answer: {e}")))?;
        let token = match (answer.access_token, answer.error) {
            (Some(token), None) => token,
            (_, error) => {
                return Err(format!(
                    "GitHub did not accept the login ({}): run npm login again",
                    answer
                        .error_description
                        .or(error)
                        .unwrap_or_else(|| "no token".into())
                ));
            }
        };
        drop(_permit);
        let user = self
            .call::<GithubUser>(Bearer::new(&token), Method::GET, "/user", None)
            .await
            .map_err(|refusal| refusal.to_string())?;
        match user {
            Lookup::Found(user) => Ok(user),
            _ => Err("GitHub did not say who signed in: run npm login again".into()),
        }
    }
}

fn log_oauth(detail: &str) {
    crate::limits::log_limited(
        log::Level::Warn,
        "github-oauth",
        format!("GitHub: POST /login/oauth/access_token: {detail}"),
    );
}

/// `application/x-www-form-urlencoded` of `pairs`.
fn form_encode(pairs: &[(&str, &str)]) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_map_to_permissions() {
        let p = |perm, role| permissions_of(perm, role).map(|p| p.highest());
        assert_eq!(p("admin", "admin"), Some("admin"));
        assert_eq!(p("write", "maintain"), Some("maintain"));
        assert_eq!(p("write", "write"), Some("push"));
        assert_eq!(p("read", "triage"), Some("triage"));
        assert_eq!(p("read", "read"), Some("pull"));
        assert_eq!(p("write", "release-manager"), Some("push"), "custom role");
        assert_eq!(p("none", "none"), None);
        assert_eq!(p("none", ""), None);
        assert!(permissions_of("write", "maintain").unwrap().can_push());
        assert!(!permissions_of("read", "triage").unwrap().can_push());
    }

    #[test]
    fn installation_tokens_are_dropped_before_they_expire() {
        let now = 1_800_000_000;
        let at = |secs: i64| {
            chrono::DateTime::from_timestamp(now as i64 + secs, 0)
                .unwrap()
                .to_rfc3339()
        };
        assert_eq!(token_lifetime(&at(3600), now), Duration::from_secs(3300));
        assert_eq!(token_lifetime(&at(4), now), Duration::from_secs(2));
        assert_eq!(token_lifetime(&at(-10), now), Duration::ZERO);
        assert_eq!(token_lifetime("soon", now), Duration::ZERO);
    }
}
