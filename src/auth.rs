//! Who is asking, and whether they may do what they ask.
//!
//! Every request on a package makes exactly one authorization decision,
//! [`Auth::authorize`] (or [`Auth::authorize_publish`], which also weighs the
//! repository the new version names), from the caller's [`Credentials`], the
//! package and its GitHub binding, and the [`Action`]. The handlers never
//! decide access themselves.
//!
//! Under `auth.type = "github"` the permission table is:
//!
//! | action | needs on the bound repo |
//! |---|---|
//! | install, view, tarball, dist-tag ls | `pull` |
//! | publish, dist-tag add/rm, deprecate | `push` (or `maintain`, `admin`) |
//! | unpublish (a version or the package) | `admin` |
//!
//! No token: 401 with `WWW-Authenticate: Bearer realm="nmr"`; a token
//! GitHub rejects: 401; no read access: 404 (existence is not revealed);
//! read but not enough: 403 naming the permission; GitHub unreachable: 503.
//!
//! Credentials arrive as npm sends them (PROTOCOL.md §1.4):
//! `Authorization: Bearer TOKEN` (`_authToken`) or `Authorization: Basic
//! base64(user:TOKEN)` (`_auth`, or `username` + `_password`). A token is
//! never logged, echoed or stored in clear.

use base64::Engine;
use http::HeaderMap;

use serde_json::Value;

use crate::config::{AuthConfig, AuthType};
use crate::error::ApiError;
use crate::github::{self, GitHub, Permissions, Repo};
use crate::name::PackageName;

/// What a request wants to do to a package; each maps to the permission it
/// needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Packument, version manifest, tarball, dist-tag ls.
    Read,
    /// Publish a new version.
    Publish,
    /// dist-tag add / rm.
    DistTag,
    /// deprecate / undeprecate.
    Deprecate,
    /// Unpublish one version or the whole package.
    Unpublish,
}

/// The secret a client presented. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

impl Credentials {
    /// Reads the `Authorization` header: `Bearer TOKEN`, or `Basic` whose
    /// password is the token. `None` when absent or unreadable.
    pub fn from_headers(headers: &HeaderMap) -> Option<Credentials> {
        let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, rest) = value.trim().split_once(' ')?;
        let token = if scheme.eq_ignore_ascii_case("bearer") {
            rest.trim().to_string()
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            text.split_once(':')?.1.to_string()
        } else {
            return None;
        };
        (!token.is_empty()).then_some(Credentials { token })
    }

    /// The token itself, for passing to the identity provider only.
    pub fn token(&self) -> &str {
        &self.token
    }
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user's login; `anonymous` under `auth.type = "none"`.
    pub username: String,
}

/// The configured authorization model.
pub enum Auth {
    /// `auth.type = "none"`: everyone may do everything.
    None,
    /// `auth.type = "github"`: the package's GitHub repository decides.
    Github(Box<GitHub>),
}

/// What a publish was allowed to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishGrant {
    pub identity: Identity,
    /// The repository the package is bound to after this publish (`None`
    /// under `auth.type = "none"`, which binds nothing).
    pub binding: Option<Repo>,
}

impl Auth {
    /// Builds the model `auth.type` names.
    pub fn from_config(config: &AuthConfig) -> Result<Auth, String> {
        match config.kind {
            AuthType::None => Ok(Auth::None),
            AuthType::Github => Ok(Auth::Github(Box::new(GitHub::new(&config.github)?))),
        }
    }

    /// Who the credentials belong to (`npm whoami`, login): 401 without a
    /// token or when GitHub rejects it, 503 when GitHub cannot be asked.
    pub async fn identify(&self, credentials: Option<&Credentials>) -> Result<Identity, ApiError> {
        match self {
            Auth::None => Ok(anonymous()),
            Auth::Github(github) => {
                let credentials = credentials.ok_or_else(|| {
                    ApiError::unauthorized(
                        "authentication required: put a GitHub token in your .npmrc as //HOST/:_authToken",
                    )
                })?;
                github_login(github, credentials.token()).await
            }
        }
    }

    /// The one authorization decision of a request other than a publish: may
    /// the holder of `credentials` do `action` on `package`, which is bound
    /// to `binding` (`None`: the package does not exist)?
    ///
    /// Errors: 401 (no token, or GitHub rejects it), 404 (the package does not
    /// exist or the user cannot read its repo: the two are not told apart),
    /// 403 (can read, but `action` needs more, naming the permission), 503
    /// (GitHub cannot be asked).
    pub async fn authorize(
        &self,
        credentials: Option<&Credentials>,
        package: &PackageName,
        binding: Option<&Repo>,
        action: Action,
    ) -> Result<Identity, ApiError> {
        let Auth::Github(github) = self else {
            return Ok(anonymous());
        };
        let identity = self.identify(credentials).await?;
        let token = credentials.map(Credentials::token).unwrap_or_default();
        let not_found = || ApiError::not_found(format!("package {package} not found"));
        let repo = binding.ok_or_else(not_found)?;
        let permissions = repo_permissions(github, token, repo)
            .await?
            .ok_or_else(not_found)?;
        let (allowed, needed) = match action {
            Action::Read => (permissions.pull, "pull"),
            Action::Publish | Action::DistTag | Action::Deprecate => {
                (permissions.can_push(), "push")
            }
            Action::Unpublish => (permissions.admin, "admin"),
        };
        if !allowed {
            return Err(ApiError::forbidden(format!(
                "{} {package} needs {needed} permission on the GitHub repository {repo}; {} has {}",
                action.verb(),
                identity.username,
                permissions.highest()
            )));
        }
        Ok(identity)
    }

    /// The authorization decision of a publish of `package`, whose new
    /// version names `repository` (the manifest's field, if any) and which
    /// is currently bound to `bound`.
    ///
    /// Rules: the repository must be given and be on GitHub (400), its owner
    /// must equal the package's scope (403); a first publish needs `push` on
    /// it; a later one needs `push` on the bound repo; naming a different
    /// repo moves the binding only for an `admin` of the bound repo who can
    /// push to the new one (403 otherwise).
    pub async fn authorize_publish(
        &self,
        credentials: Option<&Credentials>,
        package: &PackageName,
        bound: Option<&Repo>,
        repository: Option<&Value>,
    ) -> Result<PublishGrant, ApiError> {
        let Auth::Github(github) = self else {
            return Ok(PublishGrant {
                identity: anonymous(),
                binding: None,
            });
        };
        let identity = self.identify(credentials).await?;
        let token = credentials.map(Credentials::token).unwrap_or_default();
        let scope = package.scope().unwrap_or_default();
        let named = repository
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "package.json has no repository: nmr takes permissions from the package's GitHub repository; add {}",
                    github::repository_hint(scope)
                ))
            })
            .and_then(|value| {
                github::parse_repository(value, github.host()).map_err(|e| {
                    ApiError::bad_request(format!(
                        "package.json repository: {e}; use a {} repository, e.g. {}",
                        github.host(),
                        github::repository_hint(scope)
                    ))
                })
            })?;
        if !named.owner.eq_ignore_ascii_case(scope) {
            return Err(ApiError::forbidden(format!(
                "the scope @{scope} must equal the repository owner, but package.json names {named}: publish as @{}/... or use {}",
                named.owner.to_ascii_lowercase(),
                github::repository_hint(scope)
            )));
        }
        let need_push = |repo: &Repo, permissions: Option<Permissions>| {
            if permissions.is_some_and(|p| p.can_push()) {
                Ok(())
            } else {
                Err(ApiError::forbidden(format!(
                    "publishing {package} needs push permission on the GitHub repository {repo}; {} has {}",
                    identity.username,
                    permissions.map_or("no access", |p| p.highest())
                )))
            }
        };
        match bound {
            None => {
                need_push(&named, repo_permissions(github, token, &named).await?)?;
            }
            Some(bound) => {
                let not_found = || ApiError::not_found(format!("package {package} not found"));
                let on_bound = repo_permissions(github, token, bound)
                    .await?
                    .ok_or_else(not_found)?;
                if *bound == named {
                    need_push(bound, Some(on_bound))?;
                } else {
                    if !on_bound.admin {
                        return Err(ApiError::forbidden(format!(
                            "{package} is bound to the GitHub repository {bound}, not {named}:                              set repository back to {bound}, or ask an admin of {bound} to publish (moving a package needs admin on {bound} and push on {named})"
                        )));
                    }
                    need_push(&named, repo_permissions(github, token, &named).await?)?;
                    log::info!(
                        "{package} moves from {bound} to {named} (by {})",
                        identity.username
                    );
                }
            }
        }
        Ok(PublishGrant {
            identity,
            binding: Some(named),
        })
    }
}

impl Action {
    /// A verb for error messages: "publishing", "unpublishing", ...
    fn verb(self) -> &'static str {
        match self {
            Action::Read => "reading",
            Action::Publish => "publishing",
            Action::DistTag => "changing dist-tags of",
            Action::Deprecate => "deprecating",
            Action::Unpublish => "unpublishing",
        }
    }
}

async fn github_login(github: &GitHub, token: &str) -> Result<Identity, ApiError> {
    match github.login(token).await {
        Ok(Some(username)) => Ok(Identity { username }),
        Ok(None) => Err(ApiError::unauthorized(
            "GitHub rejected the token: use a valid GitHub token (classic or fine-grained PAT, or OAuth token) as _authToken",
        )),
        Err(e) => Err(ApiError::unavailable(e.to_string())),
    }
}

async fn repo_permissions(
    github: &GitHub,
    token: &str,
    repo: &Repo,
) -> Result<Option<Permissions>, ApiError> {
    github
        .permissions(token, repo)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))
}

/// Checks a `npm login` password (a GitHub token) for `username`: the token
/// must belong to that login (case-insensitively). Under `auth.type =
/// "none"` any password is accepted.
pub async fn check_login(
    auth: &Auth,
    username: &str,
    password: &str,
) -> Result<Identity, ApiError> {
    let Auth::Github(github) = auth else {
        return Ok(Identity {
            username: username.to_string(),
        });
    };
    let wrong = || {
        ApiError::new(
            http::StatusCode::UNAUTHORIZED,
            format!(
                "login failed: use your GitHub username and a GitHub token (classic or fine-grained PAT) of {username} as the password"
            ),
        )
    };
    match github.login(password).await {
        Ok(Some(login)) if login.eq_ignore_ascii_case(username) => Ok(Identity { username: login }),
        Ok(_) => Err(wrong()),
        Err(e) => Err(ApiError::unavailable(e.to_string())),
    }
}

fn anonymous() -> Identity {
    Identity {
        username: "anonymous".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn reads_bearer_and_basic_tokens() {
        let c = Credentials::from_headers(&headers("Bearer ghp_abc")).unwrap();
        assert_eq!(c.token(), "ghp_abc");
        let basic = base64::engine::general_purpose::STANDARD.encode("alice:ghp_xyz");
        let c = Credentials::from_headers(&headers(&format!("Basic {basic}"))).unwrap();
        assert_eq!(c.token(), "ghp_xyz");
        assert!(Credentials::from_headers(&headers("Bearer ")).is_none());
        assert!(Credentials::from_headers(&headers("Digest x")).is_none());
        assert!(Credentials::from_headers(&HeaderMap::new()).is_none());
    }

    #[test]
    fn debug_never_shows_the_token() {
        let c = Credentials::from_headers(&headers("Bearer ghp_secret")).unwrap();
        assert!(!format!("{c:?}").contains("ghp_secret"));
    }
}
