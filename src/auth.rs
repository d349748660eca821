//! Who is asking, and whether they may do what they ask: the one owner of
//! every permission decision.
//!
//! Every request on a package is authorized once, by the dispatcher in
//! `http.rs`, from the route's [`Action`] and the request's headers alone,
//! before its body is read ([`Auth::authorize`]). The async part only
//! gathers facts (who the token belongs to, the package's GitHub binding,
//! the caller's permission on the bound repo); the decision itself is the
//! plain function [`decide`]. A publish also weighs the repository its body
//! names, once the body is read ([`Auth::authorize_publish`], deciding with
//! [`decide_publish`]). No handler decides access itself.
//!
//! Under `auth.type = "github"` the permission table is:
//!
//! | action | needs on the bound repo |
//! |---|---|
//! | install, view, tarball, dist-tag ls | `pull` |
//! | publish, dist-tag add/rm, deprecate | `push` (or `maintain`, `admin`) |
//! | unpublish (a version or the package) | `admin` |
//!
//! No token, or an `Authorization` header that cannot hold a GitHub token:
//! 401 with `WWW-Authenticate: Bearer realm="nmr"` and no GitHub call; a
//! token GitHub rejects: 401; no read access, or no such package: the same
//! 404 ([`hidden`]), on every route, publish included; read but not enough:
//! 403 naming the permission; GitHub cannot be asked: 503 with
//! `Retry-After`; too many unknown tokens from one address: 429.
//!
//! Credentials arrive as npm sends them (docs/npm-protocol.md, "Credentials"):
//! `Authorization: Bearer TOKEN` (`_authToken`), `Authorization: Basic
//! base64(user:TOKEN)` (`_auth`, or `username` + `_password`), or
//! `Authorization: token TOKEN` (which GitHub accepts too). A token is never
//! logged, echoed or stored in clear: only its SHA-256 ([`TokenHash`]) is
//! kept.

use std::net::IpAddr;

use base64::Engine;
use http::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::{AuthConfig, AuthType};
use crate::error::ApiError;
use crate::github::{self, GitHub, KnownTokens, Permissions, Refusal, Repo, RepoAccess};
use crate::name::PackageName;
use crate::tokens::{self, TokenRecord};

/// What a request wants to do to a package; each maps to the permission it
/// needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Packument, version manifest, tarball, dist-tag ls.
    Read,
    /// Publish a new version (or, on an existing package, deprecate: the
    /// two share `PUT /{pkg}` and both need push).
    Publish,
    /// dist-tag add / rm.
    DistTag,
    /// Unpublish one version or the whole package.
    Unpublish,
    /// List the package's trusted-publisher configurations (`npm trust list`).
    InspectTrust,
    /// Create or revoke one (`npm trust github`, `npm trust revoke`).
    ConfigureTrust,
}

impl Action {
    /// The GitHub permission the action needs on the bound repo.
    pub fn needs(self) -> &'static str {
        match self {
            Action::Read => "pull",
            Action::Publish | Action::DistTag => "push",
            Action::Unpublish | Action::ConfigureTrust => "admin",
            Action::InspectTrust => "push",
        }
    }

    /// Whether `permissions` allow the action.
    pub fn allowed_by(self, permissions: &Permissions) -> bool {
        match self {
            Action::Read => permissions.pull,
            Action::Publish | Action::DistTag => permissions.can_push(),
            Action::Unpublish | Action::ConfigureTrust => permissions.admin,
            Action::InspectTrust => permissions.can_push(),
        }
    }

    /// A verb for error messages: "publishing", "unpublishing", ...
    pub fn verb(self) -> &'static str {
        match self {
            Action::Read => "reading",
            Action::Publish => "publishing",
            Action::DistTag => "changing dist-tags of",
            Action::Unpublish => "unpublishing",
            Action::InspectTrust => "listing the trusted publishers of",
            Action::ConfigureTrust => "configuring the trusted publishers of",
        }
    }
}

/// SHA-256 of a token: the only form in which nmr keeps one.
pub type TokenHash = [u8; 32];

/// The [`TokenHash`] of `secret`: how every token (GitHub's or nmr's) is
/// keyed in caches and records.
pub fn hash_token(secret: &str) -> TokenHash {
    Sha256::digest(secret.as_bytes()).into()
}

/// The longest token accepted (GitHub's are far shorter).
pub const MAX_TOKEN_LEN: usize = 255;

/// The secret a client presented, with its hash. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    token: String,
    hash: TokenHash,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

impl Credentials {
    /// Reads the `Authorization` header: `Bearer TOKEN`, `token TOKEN`, or
    /// `Basic` whose password is the token. `Ok(None)` when absent; `Err`
    /// (the reason, naming no secret) when present but unable to hold a
    /// token: another scheme, bad base64, or a token that is empty, longer
    /// than [`MAX_TOKEN_LEN`] bytes, or not printable ASCII.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Credentials>, &'static str> {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Ok(None);
        };
        let value = value
            .to_str()
            .map_err(|_| "the Authorization header is not ASCII")?;
        let (scheme, rest) = value
            .trim()
            .split_once(' ')
            .ok_or("the Authorization header has no scheme")?;
        let token = if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token")
        {
            rest.trim().to_string()
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .map_err(|_| "the Basic credentials are not base64")?;
            let text =
                String::from_utf8(decoded).map_err(|_| "the Basic credentials are not text")?;
            text.split_once(':')
                .ok_or("the Basic credentials have no password")?
                .1
                .to_string()
        } else {
            return Err("the Authorization scheme is not Bearer, token or Basic");
        };
        if token.is_empty() {
            return Err("the token is empty");
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err("the token is longer than 255 bytes");
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token has characters no GitHub token has");
        }
        let hash = hash_token(&token);
        Ok(Some(Credentials { token, hash }))
    }

    /// The token itself, for passing to the identity provider only.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The token's SHA-256.
    pub fn hash(&self) -> TokenHash {
        self.hash
    }
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user's login; `anonymous` under `auth.type = "none"`; `GitHub
    /// Actions` for a workflow's token.
    pub username: String,
    /// The GitHub user's immutable id (`GET /user`'s `id`); `None` for a
    /// workflow's token and under `auth.type = "none"`.
    pub github_id: Option<u64>,
}

impl Identity {
    /// The GitHub user this identity is, when it is one.
    pub fn github_user(&self) -> Option<github::GithubUser> {
        self.github_id.map(|id| github::GithubUser {
            login: self.username.clone(),
            id,
        })
    }
}

/// The identity a GitHub user's answer gives.
fn identity_of(user: github::GithubUser) -> Identity {
    Identity {
        username: user.login,
        github_id: Some(user.id),
    }
}

/// The identity a registry token's record stands for.
fn identity_of_token(record: &TokenRecord) -> Identity {
    Identity {
        username: record.owner.clone(),
        github_id: record.github_id.filter(|_| record.is_user()),
    }
}

/// What [`Auth::authorize`] found: who is asking, and (under GitHub
/// authorization) the package's binding and the caller's permission on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    pub identity: Identity,
    /// The repository the package is bound to (`None`: not bound, or
    /// `auth.type = "none"`).
    pub binding: Option<Repo>,
    /// What GitHub says of `binding` to the caller: the repository as it
    /// is now and the caller's permissions (`None`: cannot see it).
    pub found: Option<RepoAccess>,
    /// The binding as it should be stored from now on: the same repository
    /// (same id) under the name GitHub now gives it, or with the ids a
    /// binding made before ids were kept lacks. `None`: unchanged.
    pub rebind: Option<Repo>,
    /// The registry token the request was made with, if it was.
    pub token: Option<TokenRecord>,
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

/// The one 404 for a package that does not exist or that the caller cannot
/// see: the two are never told apart, on any route.
pub fn hidden(package: &PackageName) -> ApiError {
    ApiError::not_found(format!(
        "package {package} not found, or your GitHub account cannot see its repository"
    ))
}

/// The decision for `action` on `package` by `login`, from facts alone:
/// `bound` is the package's repository (`None`: the package is not bound)
/// and `found` what GitHub says of it to the caller (`None`: cannot see it).
///
/// A publish of an unbound package is allowed here: it is decided by
/// [`decide_publish`] once the body names a repository. Anything else on an
/// unbound package, or on a repo the caller cannot see, is [`hidden`]; the
/// repository must still be the bound one ([`check_identity`]); too little
/// permission is 403 naming what is needed.
pub fn decide(
    package: &PackageName,
    action: Action,
    login: &str,
    bound: Option<&Repo>,
    found: Option<&RepoAccess>,
) -> Result<(), ApiError> {
    let Some(bound) = bound else {
        return match action {
            Action::Publish => Ok(()),
            _ => Err(hidden(package)),
        };
    };
    let found = found.ok_or_else(|| hidden(package))?;
    check_identity(package, action, bound, found)?;
    let permissions = &found.permissions;
    if action.allowed_by(permissions) {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "{} {package} needs {} permission on the GitHub repository {}; {login} has {}",
        action.verb(),
        action.needs(),
        found.repo,
        permissions.highest()
    )))
}

/// Whether what GitHub `found` under the bound name is still the repository
/// `package` is bound to, with its owner still the package's scope.
///
/// - Another id under the name (the repo was deleted and one of the same name
///   created): its permissions are never used. Reads get [`hidden`]; writes
///   get 403 explaining it to an admin of the new repo, [`hidden`] to others.
/// - The same repo now owned by another account (transferred): 403 for
///   every request, saying so, since the scope must equal the owner.
/// - Renamed within the owner: fine (the caller stores the new name).
pub fn check_identity(
    package: &PackageName,
    action: Action,
    bound: &Repo,
    found: &RepoAccess,
) -> Result<(), ApiError> {
    if let (Some(bound_id), Some(found_id)) = (bound.id, found.repo.id)
        && bound_id != found_id
    {
        return match action {
            Action::Read => Err(hidden(package)),
            _ if found.permissions.admin => Err(ApiError::forbidden(format!(
                "{package} is bound to the GitHub repository {bound} with id {bound_id}, but that name now belongs to another repository (id {found_id}): it was deleted and created again, so its permissions do not apply to {package}; restore the original repository, or publish under another name"
            ))),
            _ => Err(hidden(package)),
        };
    }
    let scope = package.scope().unwrap_or_default();
    if !found.repo.owner.eq_ignore_ascii_case(scope) {
        return Err(ApiError::forbidden(format!(
            "the GitHub repository of {package} moved from {bound} to {}, out of the {scope} account: a package's scope must equal its repository's owner, so nmr refuses every request on {package}; an admin of {} must move it back to {scope}, or republish it as @{}/...",
            found.repo,
            found.repo,
            found.repo.owner.to_ascii_lowercase()
        )));
    }
    Ok(())
}

/// The decision of a publish of `package` by `login` whose version names
/// `named` (already checked to be a GitHub repo owned by the scope), with
/// `on_named` what GitHub says of it to the caller; `bound` and `on_bound`
/// as for [`decide`] (which already required push on `bound`). Returns the
/// binding after the publish, as GitHub names it, with its ids.
///
/// Rules: a first publish needs `push` on `named` (a repo the caller cannot
/// see is [`hidden`], as an existing package would be); naming the bound repo
/// (by id, whatever name the body uses) needs nothing more; naming another
/// repo moves the binding only for an `admin` of the bound repo who can push
/// to the new one (403 otherwise).
///
/// `adopting` is `Some` when the package exists but is bound to no repo (it
/// was published under `auth.type = "none"`), holding the repo its latest
/// stored version names. Such a package is bound only by an `admin` of
/// `named`, and only when `named` is that repo: nobody claims another
/// team's package by naming a repo of their own.
pub fn decide_publish(
    package: &PackageName,
    login: &str,
    bound: Option<&Repo>,
    on_bound: Option<&RepoAccess>,
    named: &Repo,
    on_named: Option<&RepoAccess>,
    adopting: Option<Option<&Repo>>,
) -> Result<Repo, ApiError> {
    let need_push = |repo: &Repo, found: Option<&RepoAccess>| match found {
        None => Err(hidden(package)),
        Some(f) if f.permissions.can_push() => Ok(f.repo.clone()),
        Some(f) => Err(ApiError::forbidden(format!(
            "publishing {package} needs push permission on the GitHub repository {repo}; {login} has {}",
            f.permissions.highest()
        ))),
    };
    if let Some(found) = on_named {
        let scope = package.scope().unwrap_or_default();
        if !found.repo.owner.eq_ignore_ascii_case(scope) {
            return Err(ApiError::forbidden(format!(
                "package.json names {named}, which GitHub now calls {}, outside the {scope} account: the scope must equal the repository owner",
                found.repo
            )));
        }
    }
    match (bound, on_bound) {
        (None, _) if adopting.is_some() => {
            let on_named = on_named.ok_or_else(|| hidden(package))?;
            let last = adopting.flatten();
            if !on_named.permissions.admin || !last.is_some_and(|l| l == named) {
                let how = match last {
                    Some(last) => format!(
                        "an admin of the GitHub repository {last}, which its latest version names, must publish it naming {last}"
                    ),
                    None => {
                        "its latest version names no GitHub repository, so an operator must bind it"
                            .into()
                    }
                };
                return Err(ApiError::forbidden(format!(
                    "{package} exists but is bound to no GitHub repository (it was published without GitHub authorization): to adopt it, {how}; {login} has {} on {named}",
                    on_named.permissions.highest()
                )));
            }
            Ok(on_named.repo.clone())
        }
        (None, _) => need_push(named, on_named),
        (Some(bound), Some(current)) if on_named.is_some_and(|n| n.repo.is(&current.repo)) => {
            need_push(bound, Some(current))
        }
        (Some(bound), current) => {
            if !current.is_some_and(|c| c.permissions.admin) {
                return Err(ApiError::forbidden(format!(
                    "{package} is bound to the GitHub repository {bound}, not {named}: set repository back to {bound}, or ask an admin of {bound} to publish (moving a package needs admin on {bound} and push on {named})"
                )));
            }
            need_push(named, on_named).map_err(|e| {
                if e.status == http::StatusCode::NOT_FOUND {
                    ApiError::forbidden(format!(
                        "moving {package} to {named} needs push permission there, and {login} cannot see {named}"
                    ))
                } else {
                    e
                }
            })
        }
    }
}

/// A registry token's record, or the 401 of an unknown (or revoked) one.
pub fn known_token(record: Option<TokenRecord>) -> Result<TokenRecord, ApiError> {
    record.ok_or_else(|| {
        ApiError::unauthorized(
            "the registry token is unknown or was revoked: run npm login (or exchange a new one in GitHub Actions)",
        )
    })
}

/// Whether `record` may be used at `now` from `client` at all
/// ([`TokenRecord::usable`]): 401 when revoked or expired, 403 from an
/// address outside its CIDR allow-list.
pub fn usable_token(record: &TokenRecord, now: u64, client: IpAddr) -> Result<(), ApiError> {
    record.usable(now, client).map_err(|why| {
        if record.revoked || now >= record.expires {
            ApiError::unauthorized(why)
        } else {
            ApiError::forbidden(why)
        }
    })
}

/// The decision for a request made with a registry token: `record` is the
/// stored record (`None`: no such token), checked at `now` from `client` by
/// [`usable_token`] and [`TokenRecord::permits`]; a package bound elsewhere than the repository
/// the token was issued for is refused too. Returns the record. A user's
/// token is then decided by GitHub like any user ([`decide`]).
pub fn decide_token(
    package: &PackageName,
    action: Action,
    bound: Option<&Repo>,
    record: Option<TokenRecord>,
    now: u64,
    client: IpAddr,
) -> Result<TokenRecord, ApiError> {
    let record = known_token(record)?;
    usable_token(&record, now, client)?;
    record
        .permits(package, action)
        .map_err(ApiError::forbidden)?;
    if bound.is_none() && action != Action::Publish {
        return Err(hidden(package));
    }
    if let (Some(bound), Some(repository)) = (bound, &record.repository) {
        let same_id = match (bound.id, record.repository_id) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        if !bound.has_name(repository) || !same_id {
            return Err(match action {
                Action::Read => hidden(package),
                _ => ApiError::forbidden(format!(
                    "{package} is bound to the GitHub repository {bound}, not {repository} the token was issued for"
                )),
            });
        }
    }
    Ok(record)
}

/// The binding a publish with registry token `record` leaves: the
/// repository the token was issued for, which the publish must name (a
/// token never moves a package).
pub fn decide_token_publish(
    package: &PackageName,
    bound: Option<&Repo>,
    record: &TokenRecord,
    named: &Repo,
) -> Result<Repo, ApiError> {
    let Some(repository) = &record.repository else {
        return Err(ApiError::forbidden(format!(
            "the registry token cannot publish {package}"
        )));
    };
    if !named.has_name(repository) {
        return Err(ApiError::forbidden(format!(
            "package.json names {named}, but this token was issued to a workflow of {repository}: set \"repository\" to {repository}"
        )));
    }
    Ok(match bound {
        Some(bound) => bound.clone(),
        None => Repo {
            id: record.repository_id,
            ..named.clone()
        },
    })
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> ApiError {
        let status = match refusal {
            Refusal::Throttled { .. } => http::StatusCode::TOO_MANY_REQUESTS,
            Refusal::NotInstalled { .. } => {
                return ApiError::forbidden(refusal.to_string());
            }
            _ => http::StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, refusal.to_string()).retry_after(refusal.retry_after())
    }
}

impl Auth {
    /// Builds the model `auth.type` names; `known` are the tokens GitHub
    /// accepted before (see [`KnownTokens`]).
    ///
    /// `on_gone` is called with the id of a GitHub user whose account no
    /// longer exists (see [`GitHub::new`]).
    pub fn from_config(
        config: &AuthConfig,
        known: KnownTokens,
        on_gone: Box<dyn Fn(u64) + Send + Sync>,
    ) -> Result<Auth, String> {
        match config.kind {
            AuthType::None => Ok(Auth::None),
            AuthType::Github => Ok(Auth::Github(Box::new(GitHub::new(
                &config.github,
                known,
                on_gone,
            )?))),
        }
    }

    /// The GitHub client, under `auth.type = "github"`.
    pub fn github(&self) -> Option<&GitHub> {
        match self {
            Auth::Github(github) => Some(github),
            Auth::None => None,
        }
    }

    /// Who the credentials belong to (`npm whoami`, and the first step of
    /// every authorization): 401 without a usable token or when GitHub
    /// rejects it, 503 when GitHub cannot be asked, 429 when `client` spent
    /// its budget of unknown tokens.
    ///
    /// `registry_token` is `Some` when the credentials are a registry token,
    /// with its stored record if there is one: the record says who it is
    /// ([`usable_token`] first), with no GitHub call. In App mode with
    /// `auth.github.app.accept_github_tokens = false` a GitHub token is 401.
    pub async fn identify(
        &self,
        credentials: &Result<Option<Credentials>, &'static str>,
        client: IpAddr,
        registry_token: Option<Option<TokenRecord>>,
    ) -> Result<(Identity, Option<TokenRecord>), ApiError> {
        let Auth::Github(github) = self else {
            return Ok((anonymous(), None));
        };
        if let Some(record) = registry_token {
            let record = known_token(record)?;
            usable_token(&record, github::unix_now(), client)?;
            return Ok((identity_of_token(&record), Some(record)));
        }
        let credentials = github_credentials(credentials)?;
        if tokens::is_registry_token(credentials.token()) {
            return Err(known_token(None).unwrap_err());
        }
        if !github.accepts_github_tokens() {
            return Err(ApiError::unauthorized(
                "this registry does not accept GitHub tokens: run npm login --registry=<this registry> to sign in with GitHub, and remove the GitHub token from .npmrc",
            ));
        }
        match github.login(credentials, client).await? {
            Some(user) => Ok((identity_of(user), None)),
            None if credentials.token().starts_with("ghs_") => Err(ApiError::unauthorized(
                "GitHub does not tell who an installation token (ghs_..., such as GitHub Actions' GITHUB_TOKEN) belongs to: use a personal access token of a user",
            )),
            None => Err(ApiError::unauthorized(
                "GitHub rejected the token: run npm login, or use a valid GitHub token (classic or fine-grained PAT, or OAuth token) as _authToken",
            )),
        }
    }

    /// The authorization of a request for `action` on `package` (bound to
    /// `binding`), from the request's headers alone. Gathers the facts and
    /// applies [`decide`].
    ///
    /// `registry_token` is `Some` when the credentials are a registry token
    /// (`nmr_...`), with its stored record if there is one: such a request is
    /// decided by the record ([`decide_token`]): a workflow's token with no
    /// GitHub call, a user's token then by GitHub as that user.
    pub async fn authorize(
        &self,
        credentials: &Result<Option<Credentials>, &'static str>,
        client: IpAddr,
        package: &PackageName,
        binding: Option<Repo>,
        action: Action,
        registry_token: Option<Option<TokenRecord>>,
    ) -> Result<Access, ApiError> {
        let Auth::Github(github) = self else {
            return Ok(Access {
                identity: anonymous(),
                binding: None,
                found: None,
                rebind: None,
                token: None,
            });
        };
        let (identity, token) = match registry_token {
            Some(record) => {
                let record = decide_token(
                    package,
                    action,
                    binding.as_ref(),
                    record,
                    github::unix_now(),
                    client,
                )?;
                if !record.is_user() {
                    return Ok(Access {
                        identity: identity_of_token(&record),
                        binding,
                        found: None,
                        rebind: None,
                        token: Some(record),
                    });
                }
                (identity_of_token(&record), Some(record))
            }
            None => self.identify(credentials, client, None).await?,
        };
        let bearer = match (&token, credentials) {
            (None, Ok(Some(credentials))) => Some(credentials),
            _ => None,
        };
        let found = match &binding {
            Some(repo) => repo_access(github, &identity, bearer, repo).await?,
            None => None,
        };
        decide(
            package,
            action,
            &identity.username,
            binding.as_ref(),
            found.as_ref(),
        )?;
        let rebind = match (&binding, &found) {
            (Some(bound), Some(found))
                if bound.id.is_none()
                    || bound.owner != found.repo.owner
                    || bound.name != found.repo.name =>
            {
                Some(found.repo.clone())
            }
            _ => None,
        };
        Ok(Access {
            identity,
            binding,
            found,
            rebind,
            token,
        })
    }

    /// The second half of a publish's authorization, once its body is read:
    /// `access` is what [`Auth::authorize`] found, `repository` the new
    /// version's `repository` field. Applies [`decide_publish`].
    ///
    /// `stored_repository` is `Some` when the package exists unbound, with
    /// the `repository` field of its latest stored version (see
    /// [`decide_publish`]).
    ///
    /// Errors: 400 when `repository` is missing or not on GitHub, 403 when its
    /// owner is not the package's scope, and those of [`decide_publish`].
    pub async fn authorize_publish(
        &self,
        access: Access,
        credentials: &Result<Option<Credentials>, &'static str>,
        package: &PackageName,
        repository: Option<&Value>,
        stored_repository: Option<Option<&Value>>,
    ) -> Result<PublishGrant, ApiError> {
        let Auth::Github(github) = self else {
            return Ok(PublishGrant {
                identity: access.identity,
                binding: None,
            });
        };
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
        if let Some(record) = access.token.as_ref().filter(|r| !r.is_user()) {
            let binding = decide_token_publish(package, access.binding.as_ref(), record, &named)?;
            return Ok(PublishGrant {
                identity: access.identity,
                binding: Some(binding),
            });
        }
        let bearer = match access.token {
            Some(_) => None,
            None => Some(github_credentials(credentials)?),
        };
        let on_named = if access.binding.as_ref() == Some(&named) {
            access.found.clone()
        } else {
            repo_access(github, &access.identity, bearer, &named).await?
        };
        let adopting = stored_repository
            .map(|value| value.and_then(|v| github::parse_repository(v, github.host()).ok()));
        let binding = decide_publish(
            package,
            &access.identity.username,
            access.binding.as_ref(),
            access.found.as_ref(),
            &named,
            on_named.as_ref(),
            adopting.as_ref().map(Option::as_ref),
        )?;
        if let Some(bound) = access.binding.as_ref().filter(|b| !b.is(&binding)) {
            log::info!(
                "{package} moves from {bound} to {binding} (by {})",
                access.identity.username
            );
        }
        Ok(PublishGrant {
            identity: access.identity,
            binding: Some(binding),
        })
    }

    /// 404 ([`hidden`]) unless the package is bound (under GitHub
    /// authorization): for writes other than a publish, which
    /// [`decide`] lets through on unbound packages.
    pub fn require_binding(&self, access: &Access, package: &PackageName) -> Result<(), ApiError> {
        match self {
            Auth::Github(_) if access.binding.is_none() => Err(hidden(package)),
            _ => Ok(()),
        }
    }
}

/// The usable credentials of a request, or the 401 that says why not.
fn github_credentials<'a>(
    credentials: &'a Result<Option<Credentials>, &'static str>,
) -> Result<&'a Credentials, ApiError> {
    match credentials {
        Ok(Some(credentials)) => Ok(credentials),
        Ok(None) => Err(ApiError::unauthorized(
            "authentication required: put a GitHub token in your .npmrc as //HOST/:_authToken",
        )),
        Err(why) => Err(ApiError::unauthorized(format!(
            "the Authorization header holds no usable token ({why}): put a GitHub token in your .npmrc as //HOST/:_authToken"
        ))),
    }
}

/// Checks a `npm login` password (a GitHub token) for `username`: the token
/// must belong to that login (case-insensitively). Under `auth.type =
/// "none"` any password is accepted. The password is judged as a token
/// would be (no GitHub call for one that cannot be a token).
pub async fn check_login(
    auth: &Auth,
    username: &str,
    password: &str,
    client: IpAddr,
) -> Result<Identity, ApiError> {
    let Auth::Github(github) = auth else {
        return Ok(Identity {
            username: username.to_string(),
            github_id: None,
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
    let mut headers = HeaderMap::new();
    let value = http::HeaderValue::from_str(&format!("Bearer {password}")).map_err(|_| wrong())?;
    headers.insert(http::header::AUTHORIZATION, value);
    let credentials = Credentials::from_headers(&headers)
        .ok()
        .flatten()
        .ok_or_else(wrong)?;
    match github.login(&credentials, client).await? {
        Some(user) if user.login.eq_ignore_ascii_case(username) => Ok(identity_of(user)),
        _ => Err(wrong()),
    }
}

fn anonymous() -> Identity {
    Identity {
        username: "anonymous".into(),
        github_id: None,
    }
}

/// What GitHub says of `repo` to `identity`: [`GitHub::access`], through
/// the App or with `bearer` (the user's GitHub token, outside App mode).
/// A user's registry token outside App mode has no source of permissions:
/// 401.
async fn repo_access(
    github: &GitHub,
    identity: &Identity,
    bearer: Option<&Credentials>,
    repo: &Repo,
) -> Result<Option<RepoAccess>, ApiError> {
    let user = identity
        .github_user()
        .ok_or_else(|| ApiError::unauthorized("the token names no GitHub user: run npm login"))?;
    if bearer.is_none() && !github.app_mode() {
        return Err(ApiError::unauthorized(
            "registry tokens of users work only while nmr runs as a GitHub App (auth.github.app.id): put a GitHub token in .npmrc",
        ));
    }
    Ok(github.access(&user, bearer, repo).await?)
}

/// How long a read decision is reused ([`ReadGrants`]).
pub const READ_GRANT_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Read decisions just made: (SHA-256 of a GitHub token, package) → until
/// when, and at which [`crate::documents::Documents::generation`] of the
/// package, [`Auth::authorize`] allowed reading it. A client installing
/// asks for the same packuments and tarballs many times a second; each
/// such request after the first is decided by one lookup here instead of
/// the binding, the login and the permission lookups and their copies.
///
/// What it may reuse, and so what it changes: only a *granted* read of a
/// packument, version manifest or tarball (the caller checks the route),
/// with a GitHub token (a registry token's record is read every time, so
/// revoking one holds at once), at most [`READ_GRANT_TTL`] after the
/// decision, and only while the package's generation is the one read
/// before its facts were: a commit to the package (a binding changed, a
/// version published or removed) ends every grant on it. A refusal is
/// never kept. So a grant outlives the GitHub answers it rests on by at
/// most [`READ_GRANT_TTL`], which bounds how much later a lost permission
/// takes effect (`auth.github.cache_ttl` + 1 s).
pub struct ReadGrants {
    grants: quick_cache::sync::Cache<GrantKey, Grant>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct GrantKey {
    token: TokenHash,
    package: PackageName,
}

/// A [`GrantKey`] looked up without copying the name.
#[derive(Hash)]
struct GrantRef<'a> {
    token: &'a TokenHash,
    package: &'a PackageName,
}

impl quick_cache::Equivalent<GrantKey> for GrantRef<'_> {
    fn equivalent(&self, key: &GrantKey) -> bool {
        *self.token == key.token && *self.package == key.package
    }
}

#[derive(Clone, Copy)]
struct Grant {
    until: std::time::Instant,
    generation: u64,
}

impl ReadGrants {
    /// Room for `capacity` grants (the least recently used go first).
    pub fn new(capacity: usize) -> ReadGrants {
        ReadGrants {
            grants: quick_cache::sync::Cache::new(capacity.max(1)),
        }
    }

    /// Whether reading `package` with `token` was granted before `now`
    /// minus [`READ_GRANT_TTL`] at `generation` (the package's current one).
    pub fn holds(
        &self,
        token: &TokenHash,
        package: &PackageName,
        generation: u64,
        now: std::time::Instant,
    ) -> bool {
        self.grants
            .get(&GrantRef { token, package })
            .is_some_and(|g| g.generation == generation && now < g.until)
    }

    /// Records that reading `package` with `token` was granted at `now`
    /// from facts read at `generation`.
    pub fn record(
        &self,
        token: TokenHash,
        package: &PackageName,
        generation: u64,
        now: std::time::Instant,
    ) {
        self.grants.insert(
            GrantKey {
                token,
                package: package.clone(),
            },
            Grant {
                until: now + READ_GRANT_TTL,
                generation,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_grant_lasts_a_second_and_ends_with_its_generation() {
        let grants = ReadGrants::new(10);
        let name = PackageName::parse("@acme/widget").unwrap();
        let other = PackageName::parse("@acme/other").unwrap();
        let token = hash_token("ghp_a");
        let now = std::time::Instant::now();
        assert!(!grants.holds(&token, &name, 3, now));
        grants.record(token, &name, 3, now);
        assert!(grants.holds(&token, &name, 3, now));
        assert!(grants.holds(&token, &name, 3, now + READ_GRANT_TTL / 2));
        assert!(!grants.holds(&token, &name, 3, now + READ_GRANT_TTL));
        assert!(!grants.holds(&token, &name, 4, now), "a commit since");
        assert!(!grants.holds(&hash_token("ghp_b"), &name, 3, now));
        assert!(!grants.holds(&token, &other, 3, now));
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    fn token(value: &str) -> Option<String> {
        Credentials::from_headers(&headers(value))
            .unwrap()
            .map(|c| c.token().to_string())
    }

    #[test]
    fn reads_bearer_token_and_basic_tokens() {
        assert_eq!(token("Bearer ghp_abc").as_deref(), Some("ghp_abc"));
        assert_eq!(token("token ghp_abc").as_deref(), Some("ghp_abc"));
        let basic = base64::engine::general_purpose::STANDARD.encode("alice:ghp_xyz");
        assert_eq!(token(&format!("Basic {basic}")).as_deref(), Some("ghp_xyz"));
        assert!(
            Credentials::from_headers(&HeaderMap::new())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn refuses_what_cannot_be_a_token() {
        let basic = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        for bad in [
            "Bearer ".to_string(),
            "Digest x".to_string(),
            format!("Bearer {}", "a".repeat(256)),
            basic("alice:tab\tinside"),
            basic("alice:caf\u{e9}"),
            basic("alice:"),
            basic("no-colon"),
            "Basic ***".to_string(),
        ] {
            assert!(
                Credentials::from_headers(&headers(&bad)).is_err(),
                "{bad:?} was accepted"
            );
        }
        assert!(
            Credentials::from_headers(&headers(&format!("Bearer {}", "a".repeat(255)))).is_ok()
        );
    }

    #[test]
    fn debug_never_shows_the_token() {
        let c = Credentials::from_headers(&headers("Bearer ghp_secret"))
            .unwrap()
            .unwrap();
        assert!(!format!("{c:?}").contains("ghp_secret"));
    }

    fn name() -> PackageName {
        PackageName::parse("@acme/widget").unwrap()
    }

    /// `owner/name` with id `id` (owner id 1).
    fn repo(r: &str, id: u64) -> Repo {
        let (o, n) = r.split_once('/').unwrap();
        Repo {
            id: Some(id),
            owner_id: Some(1),
            ..Repo::new(o, n).unwrap()
        }
    }

    /// What GitHub says of `repo` to a user with permission `level`.
    fn seen(repo: &Repo, level: &str) -> RepoAccess {
        let mut p = Permissions {
            pull: true,
            ..Default::default()
        };
        match level {
            "admin" => (p.admin, p.maintain, p.push) = (true, true, true),
            "maintain" => (p.maintain, p.push) = (true, true),
            "push" => p.push = true,
            _ => {}
        }
        RepoAccess {
            repo: repo.clone(),
            permissions: p,
        }
    }

    #[test]
    fn the_permission_table() {
        let bound = repo("acme/widget", 7);
        let ok = |action, level: &str| {
            decide(
                &name(),
                action,
                "u",
                Some(&bound),
                Some(&seen(&bound, level)),
            )
            .is_ok()
        };
        assert!(ok(Action::Read, "pull"));
        assert!(!ok(Action::Publish, "pull"));
        assert!(ok(Action::Publish, "push"));
        assert!(ok(Action::DistTag, "maintain"));
        assert!(!ok(Action::Unpublish, "maintain"));
        assert!(ok(Action::Unpublish, "admin"));
        let e = decide(
            &name(),
            Action::DistTag,
            "carol",
            Some(&bound),
            Some(&seen(&bound, "pull")),
        )
        .unwrap_err();
        assert_eq!(e.status, 403);
        assert!(
            e.message.contains(
                "needs push permission on the GitHub repository acme/widget; carol has pull"
            ),
            "{e}"
        );
    }

    #[test]
    fn one_404_for_missing_and_invisible_packages() {
        let bound = repo("acme/secret-repo", 7);
        let invisible = decide(&name(), Action::Read, "dave", Some(&bound), None).unwrap_err();
        let missing = decide(&name(), Action::Read, "dave", None, None).unwrap_err();
        assert_eq!(invisible, missing);
        assert_eq!(invisible.status, 404);
        // A publish: the same answer for an existing package whose repo the
        // caller cannot see and for a free name naming such a repo.
        let existing = decide(&name(), Action::Publish, "dave", Some(&bound), None).unwrap_err();
        let free = decide_publish(&name(), "dave", None, None, &bound, None, None).unwrap_err();
        assert_eq!(existing, free);
        assert_eq!(existing, missing);
        assert!(!existing.message.contains("secret-repo"));
    }

    #[test]
    fn a_renamed_repo_is_the_same_a_recreated_or_transferred_one_is_not() {
        let bound = repo("acme/widget", 7);
        // Renamed: same id, new name; allowed (the caller stores the name).
        let renamed = seen(&repo("acme/gadget-core", 7), "push");
        assert!(decide(&name(), Action::Publish, "b", Some(&bound), Some(&renamed)).is_ok());
        // Deleted and created again: another id under the bound name.
        let recreated = seen(&repo("acme/widget", 8), "admin");
        assert_eq!(
            decide(&name(), Action::Read, "m", Some(&bound), Some(&recreated)).unwrap_err(),
            hidden(&name())
        );
        let e = decide(
            &name(),
            Action::Unpublish,
            "m",
            Some(&bound),
            Some(&recreated),
        )
        .unwrap_err();
        assert_eq!(e.status, 403);
        assert!(e.message.contains("deleted and created again"), "{e}");
        let reader = seen(&repo("acme/widget", 8), "push");
        assert_eq!(
            decide(&name(), Action::Publish, "m", Some(&bound), Some(&reader)).unwrap_err(),
            hidden(&name())
        );
        // Transferred to another owner: refused for everyone, saying why.
        let moved = seen(&repo("other/widget", 7), "admin");
        for action in [Action::Read, Action::Publish, Action::Unpublish] {
            let e = decide(&name(), action, "a", Some(&bound), Some(&moved)).unwrap_err();
            assert_eq!(e.status, 403);
            assert!(
                e.message.contains("moved from acme/widget to other/widget"),
                "{e}"
            );
        }
        // A binding without an id takes whatever the name is now.
        let legacy = Repo::new("acme", "widget").unwrap();
        assert!(decide(&name(), Action::Read, "c", Some(&legacy), Some(&recreated)).is_ok());
    }

    #[test]
    fn publish_binds_and_moves_by_the_rules() {
        let widget = repo("acme/widget", 7);
        let gadget = repo("acme/gadget", 9);
        let w = |level| seen(&widget, level);
        let g = |level| seen(&gadget, level);
        let publish =
            |login, bound, on_bound: Option<&RepoAccess>, named, on_named: Option<&RepoAccess>| {
                decide_publish(&name(), login, bound, on_bound, named, on_named, None)
            };
        assert_eq!(
            publish("a", None, None, &widget, Some(&w("push"))).unwrap(),
            widget
        );
        assert_eq!(
            publish("c", None, None, &widget, Some(&w("pull")))
                .unwrap_err()
                .status,
            403
        );
        // Same repo: push on it (checked by decide) suffices, and the old
        // name of a renamed repo is the same repo.
        assert!(
            publish(
                "b",
                Some(&widget),
                Some(&w("push")),
                &widget,
                Some(&w("push"))
            )
            .is_ok()
        );
        let old_name = Repo::new("acme", "old-widget").unwrap();
        let kept = publish(
            "b",
            Some(&widget),
            Some(&w("push")),
            &old_name,
            Some(&w("push")),
        );
        assert_eq!(kept.unwrap().id, Some(7));
        // A move needs admin on the bound repo and push on the new one.
        let e = publish(
            "b",
            Some(&widget),
            Some(&w("push")),
            &gadget,
            Some(&g("admin")),
        )
        .unwrap_err();
        assert_eq!(e.status, 403);
        assert!(
            e.message
                .contains("bound to the GitHub repository acme/widget"),
            "{e}"
        );
        let e = publish("a", Some(&widget), Some(&w("admin")), &gadget, None).unwrap_err();
        assert_eq!(e.status, 403);
        let moved = publish(
            "a",
            Some(&widget),
            Some(&w("admin")),
            &gadget,
            Some(&g("push")),
        );
        assert_eq!(moved.unwrap(), gadget);
        // A named repo GitHub says lives in another account is refused.
        let elsewhere = seen(&repo("other/widget", 11), "admin");
        let e = publish("a", None, None, &widget, Some(&elsewhere)).unwrap_err();
        assert!(e.message.contains("outside the acme account"), "{e}");
    }

    #[test]
    fn unbound_packages_are_adopted_only_by_an_admin_of_their_repo() {
        let widget = repo("acme/widget", 7);
        let gadget = repo("acme/gadget", 9);
        let adopt = |named, on_named: Option<&RepoAccess>, last: Option<&Repo>| {
            decide_publish(&name(), "u", None, None, named, on_named, Some(last))
        };
        let adopted = adopt(&widget, Some(&seen(&widget, "admin")), Some(&widget)).unwrap();
        assert_eq!(adopted.id, Some(7));
        // push is not enough, nor admin of a repo of one's own.
        let e = adopt(&widget, Some(&seen(&widget, "push")), Some(&widget)).unwrap_err();
        assert_eq!(e.status, 403);
        assert!(
            e.message
                .contains("to adopt it, an admin of the GitHub repository acme/widget"),
            "{e}"
        );
        assert_eq!(
            adopt(&gadget, Some(&seen(&gadget, "admin")), Some(&widget))
                .unwrap_err()
                .status,
            403
        );
        let e = adopt(&widget, Some(&seen(&widget, "admin")), None).unwrap_err();
        assert!(e.message.contains("names no GitHub repository"), "{e}");
        assert_eq!(adopt(&widget, None, Some(&widget)).unwrap_err().status, 404);
    }

    #[test]
    fn a_users_token_is_checked_before_github_is_asked() {
        let client: IpAddr = "127.0.0.1".parse().unwrap();
        let bound = repo("acme/widget", 7);
        let login = TokenRecord {
            github_id: Some(1000),
            ..TokenRecord::new(tokens::TokenKind::Login, "alice", 100, 100).unwrap()
        };
        let decide = |record: &TokenRecord, action, now| {
            decide_token(
                &name(),
                action,
                Some(&bound),
                Some(record.clone()),
                now,
                client,
            )
        };
        assert!(
            decide(&login, Action::Unpublish, 150).is_ok(),
            "GitHub decides next"
        );
        assert_eq!(decide(&login, Action::Read, 200).unwrap_err().status, 401);
        let read_only = TokenRecord {
            readonly: true,
            ..login.clone()
        };
        assert_eq!(
            decide(&read_only, Action::Publish, 150).unwrap_err().status,
            403
        );
        let office = TokenRecord {
            cidr_whitelist: vec!["10.0.0.0/8".into()],
            ..login.clone()
        };
        let e = decide(&office, Action::Read, 150).unwrap_err();
        assert_eq!(e.status, 403);
        assert!(e.message.contains("only from 10.0.0.0/8"), "{e}");
        assert_eq!(
            decide_token(&name(), Action::Read, Some(&bound), None, 150, client)
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(identity_of_token(&login).github_id, Some(1000));
        let workflow = TokenRecord {
            github_id: Some(1000),
            ..TokenRecord::new(tokens::TokenKind::Oidc, "GitHub Actions", 100, 100).unwrap()
        };
        assert_eq!(identity_of_token(&workflow).github_id, None, "never a user");
    }
}
