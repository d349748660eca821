//! Trusted publishing: verifying a GitHub Actions OpenID Connect ID token
//! and deciding what the registry token exchanged for it may do
//! (docs/trusted-publishing.md).
//!
//! npm 11, run in a workflow with `permissions: id-token: write`, asks
//! GitHub for an ID token whose audience is `npm:<registry host>` and posts
//! it as `Authorization: Bearer <JWT>` to
//! `POST /-/npm/v1/oidc/token/exchange/package/{name}`. nmr:
//!
//! 1. verifies the JWT ([`Oidc::verify`]): `RS256` only, the key chosen by
//!    `kid` from the issuer's JWKS (cached, fetched again at most once a
//!    minute for an unknown `kid`, bounded in size and time), `iss` and
//!    `aud` as configured, `exp`/`nbf`/`iat` with 60 s leeway, each `jti`
//!    accepted once;
//! 2. decides from the claims alone, with no GitHub call ([`decide`]): the
//!    package's scope is `repository_owner`; an existing package is bound to
//!    the claims' `repository` (and `repository_id`); a new one may only be
//!    created bound to it; pull-request events are refused unless allowed;
//! 3. issues a registry token for that one package (`src/tokens.rs`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::OidcConfig;
use crate::github::Repo;
use crate::name::PackageName;

/// The claims of a GitHub Actions ID token nmr reads (GitHub's docs: "About
/// security hardening with OpenID Connect", the token's claims).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// `owner/repo` of the workflow's repository.
    pub repository: String,
    pub repository_owner: String,
    #[serde(default, deserialize_with = "number_or_string")]
    pub repository_id: Option<u64>,
    #[serde(default, deserialize_with = "number_or_string")]
    pub repository_owner_id: Option<u64>,
    /// `owner/repo/.github/workflows/FILE@REF` of the top-level workflow.
    #[serde(default)]
    pub workflow_ref: String,
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub event_name: String,
    #[serde(default)]
    pub sha: String,
    #[serde(default)]
    pub run_id: String,
    #[serde(default)]
    pub actor: String,
    #[serde(default)]
    pub jti: String,
    pub exp: u64,
    /// `public`, `private` or `internal`.
    #[serde(default)]
    pub repository_visibility: String,
}

/// GitHub sends ids as strings; accept numbers too.
fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    })
}

/// A refused exchange: status and the sentence npm logs at verbose level
/// (`message`; also sent as `error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: http::StatusCode,
    pub message: String,
}

impl Refused {
    fn new(status: u16, message: impl Into<String>) -> Refused {
        Refused {
            status: http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST),
            message: message.into(),
        }
    }

    /// The JSON body: `{"message", "error"}`.
    pub fn body(&self) -> String {
        json!({ "message": self.message, "error": self.message }).to_string()
    }
}

/// The most bytes of a JWKS document read.
const MAX_JWKS: usize = 64 * 1024;
/// An unknown `kid` refetches the JWKS at most this often.
const REFETCH: Duration = Duration::from_secs(60);
/// Accepted clock skew on `exp`, `nbf` and `iat`.
pub const LEEWAY: u64 = 60;

/// The verifier: configuration, the cached JWKS and the `jti`s seen.
pub struct Oidc {
    pub issuer: String,
    pub audience: String,
    jwks_url: String,
    pub allow_pull_requests: bool,
    pub token_ttl: u64,
    http: reqwest::Client,
    /// The last JWKS fetched, and when.
    jwks: tokio::sync::Mutex<Option<(JwkSet, Instant)>>,
    /// `jti` → its token's `exp`: replays are refused until then.
    seen: Mutex<quick_cache::sync::Cache<String, u64>>,
}

impl Oidc {
    /// The verifier for `config`; `public_host` is the host name of
    /// `server.public_url` (for the default audience).
    pub fn new(config: &OidcConfig, public_host: &str) -> Result<Oidc, String> {
        let issuer = config.issuer.trim_end_matches('/').to_string();
        let jwks_url = if config.jwks_url.is_empty() {
            format!("{issuer}/.well-known/jwks")
        } else {
            config.jwks_url.clone()
        };
        let audience = if config.audience.is_empty() {
            format!("npm:{public_host}")
        } else {
            config.audience.clone()
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("auth.github.oidc: cannot build an HTTP client: {e}"))?;
        Ok(Oidc {
            issuer,
            audience,
            jwks_url,
            allow_pull_requests: config.allow_pull_requests,
            token_ttl: config.token_ttl,
            http,
            jwks: tokio::sync::Mutex::new(None),
            seen: Mutex::new(quick_cache::sync::Cache::new(100_000)),
        })
    }

    /// Verifies `jwt` at `now` (Unix seconds) and returns its claims, or why
    /// not (401 for a token that is not a valid ID token of the issuer, 503
    /// when the issuer's keys cannot be had).
    pub async fn verify(&self, jwt: &str, now: u64) -> Result<Claims, Refused> {
        let unauthorized = |m: String| Refused::new(401, m);
        let header = jsonwebtoken::decode_header(jwt)
            .map_err(|e| unauthorized(format!("the ID token is not a JWT: {e}")))?;
        if header.alg != Algorithm::RS256 {
            return Err(unauthorized(format!(
                "the ID token is signed with {:?}; only RS256 is accepted",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| unauthorized("the ID token names no signing key (kid)".into()))?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.leeway = LEEWAY;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "iat"]);
        let data = jsonwebtoken::decode::<Value>(jwt, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            unauthorized(match e.kind() {
                ErrorKind::InvalidIssuer => format!("the ID token's iss is not {}", self.issuer),
                ErrorKind::InvalidAudience => {
                    format!("the ID token's aud is not {}", self.audience)
                }
                ErrorKind::ExpiredSignature => "the ID token has expired".into(),
                ErrorKind::ImmatureSignature => "the ID token is not valid yet (nbf)".into(),
                ErrorKind::InvalidSignature => "the ID token's signature is invalid".into(),
                _ => format!("the ID token is invalid: {e}"),
            })
        })?;
        let iat = data.claims.get("iat").and_then(Value::as_u64).unwrap_or(0);
        if iat > now + LEEWAY {
            return Err(unauthorized(
                "the ID token was issued in the future (iat)".into(),
            ));
        }
        let claims: Claims = serde_json::from_value(data.claims)
            .map_err(|e| unauthorized(format!("the ID token lacks GitHub's claims: {e}")))?;
        if claims.jti.is_empty() {
            return Err(unauthorized("the ID token has no jti".into()));
        }
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.get(&claims.jti).is_some_and(|exp| exp + LEEWAY >= now) {
            return Err(unauthorized(
                "this ID token (jti) was already exchanged: request a new one".into(),
            ));
        }
        seen.insert(claims.jti.clone(), claims.exp);
        Ok(claims)
    }

    /// The decoding key for `kid`: from the cached JWKS, else from a fresh
    /// fetch if the last one is over a minute old.
    async fn key(&self, kid: &str) -> Result<DecodingKey, Refused> {
        let mut cached = self.jwks.lock().await;
        let find = |set: &JwkSet| {
            set.find(kid)
                .and_then(|jwk| DecodingKey::from_jwk(jwk).ok())
        };
        if let Some((set, fetched)) = cached.as_ref() {
            if let Some(key) = find(set) {
                return Ok(key);
            }
            if fetched.elapsed() < REFETCH {
                return Err(Refused::new(
                    401,
                    format!("the ID token's key {kid} is not among the issuer's keys"),
                ));
            }
        }
        let set = self.fetch_jwks().await?;
        let key = find(&set);
        *cached = Some((set, Instant::now()));
        key.ok_or_else(|| {
            Refused::new(
                401,
                format!("the ID token's key {kid} is not among the issuer's keys"),
            )
        })
    }

    async fn fetch_jwks(&self) -> Result<JwkSet, Refused> {
        let unavailable =
            |m: String| Refused::new(503, format!("cannot get the issuer's keys: {m}"));
        let mut response = self
            .http
            .get(&self.jwks_url)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!(
                "{} answered {}",
                self.jwks_url,
                response.status()
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unavailable(e.to_string()))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_JWKS {
                return Err(unavailable(format!(
                    "the JWKS is larger than {MAX_JWKS} bytes"
                )));
            }
        }
        serde_json::from_slice(&body)
            .map_err(|e| unavailable(format!("the JWKS is not valid: {e}")))
    }
}

/// What a read exchange grants: reads of the packages bound to
/// `repository`, or of every package of the `scopes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadGrant {
    pub repository: Option<String>,
    pub repository_id: Option<u64>,
    pub scopes: Vec<String>,
}

/// The read-exchange decision from the verified `claims` under `policy`
/// (`auth.github.oidc.read`): `repo` reads the packages bound to the
/// workflow's repository; `owner` every package of the scope equal to
/// `repository_owner`, for private and internal repositories only (a public
/// repository's workflows run code anyone can propose).
pub fn decide_read(
    claims: &Claims,
    policy: crate::config::ReadPolicy,
) -> Result<ReadGrant, Refused> {
    use crate::config::ReadPolicy;
    if matches!(
        claims.event_name.as_str(),
        "pull_request" | "pull_request_target"
    ) {
        return Err(Refused::new(
            403,
            format!("workflows run for {} get no read token", claims.event_name),
        ));
    }
    match policy {
        ReadPolicy::Repo => Ok(ReadGrant {
            repository: Some(claims.repository.clone()),
            repository_id: claims.repository_id,
            scopes: vec![claims.repository_owner.to_ascii_lowercase()],
        }),
        ReadPolicy::Owner
            if matches!(
                claims.repository_visibility.as_str(),
                "private" | "internal"
            ) =>
        {
            Ok(ReadGrant {
                repository: None,
                repository_id: None,
                scopes: vec![claims.repository_owner.to_ascii_lowercase()],
            })
        }
        ReadPolicy::Owner => Err(Refused::new(
            403,
            format!(
                "{} is {}: only workflows of private or internal repositories may read every @{} package (auth.github.oidc.read = \"owner\")",
                claims.repository,
                if claims.repository_visibility.is_empty() {
                    "of unknown visibility"
                } else {
                    claims.repository_visibility.as_str()
                },
                claims.repository_owner.to_ascii_lowercase()
            ),
        )),
        ReadPolicy::None => Err(Refused::new(404, "read tokens are off on this registry")),
    }
}

/// A trusted-publisher configuration made with `npm trust github`: the
/// workflow file (and, when set, the environment) a package's ID tokens
/// must come from. Stored and served in npm's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustConfig {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub claims: TrustClaims,
    #[serde(default)]
    pub permissions: Vec<String>,
}

/// The claims a [`TrustConfig`] pins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustClaims {
    pub repository: String,
    pub workflow_ref: WorkflowFile,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

/// `{"file": "release.yml"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowFile {
    pub file: String,
}

/// The workflow file name of a `workflow_ref` claim
/// (`owner/repo/.github/workflows/FILE@REF` → `FILE`), as the public
/// registry compares it (docs/trusted-publishing.md).
pub fn workflow_file(workflow_ref: &str) -> &str {
    let path = workflow_ref.split('@').next().unwrap_or(workflow_ref);
    path.rsplit_once(".github/workflows/")
        .map_or(path, |(_, file)| file)
}

/// What an exchange grants: a registry token for `package`, which a first
/// publish must bind to `repository`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub repository: String,
    pub repository_id: Option<u64>,
    /// `_npmUser.trustedPublisher` of versions published with the token.
    pub publisher: Value,
}

/// The exchange decision for `package`, bound to `binding` (`None`: not
/// bound, so the token may only create it), from the verified `claims`.
///
/// When `trust` holds configurations (`npm trust`), one must match the
/// top-level workflow's file and, when it names one, the environment.
pub fn decide(
    package: &PackageName,
    binding: Option<&Repo>,
    claims: &Claims,
    allow_pull_requests: bool,
    trust: &[TrustConfig],
) -> Result<Grant, Refused> {
    let forbidden = |m: String| Refused::new(403, m);
    if matches!(
        claims.event_name.as_str(),
        "pull_request" | "pull_request_target"
    ) && !allow_pull_requests
    {
        return Err(forbidden(format!(
            "workflows run for {} cannot publish (auth.github.oidc.allow_pull_requests is false)",
            claims.event_name
        )));
    }
    let scope = package.scope().unwrap_or_default();
    if !claims.repository_owner.eq_ignore_ascii_case(scope) {
        return Err(forbidden(format!(
            "the workflow runs in {} (owner {}), but {package}'s scope is @{scope}: only workflows of {scope}'s repositories can publish it",
            claims.repository, claims.repository_owner
        )));
    }
    if let Some(bound) = binding {
        if !bound.has_name(&claims.repository) {
            return Err(forbidden(format!(
                "{package} is bound to the GitHub repository {bound}, but the workflow runs in {}: publish it from a workflow of {bound}",
                claims.repository
            )));
        }
        if let (Some(bound_id), Some(claimed)) = (bound.id, claims.repository_id)
            && bound_id != claimed
        {
            return Err(forbidden(format!(
                "{package} is bound to the GitHub repository {bound} with id {bound_id}, but the workflow's repository of that name has id {claimed}: it was deleted and created again"
            )));
        }
    }
    if !trust.is_empty() {
        let file = workflow_file(&claims.workflow_ref);
        let matches = trust.iter().any(|t| {
            t.claims.workflow_ref.file == file
                && t.claims
                    .environment
                    .as_ref()
                    .is_none_or(|env| claims.environment.as_ref() == Some(env))
        });
        if !matches {
            let allowed: Vec<String> = trust
                .iter()
                .map(|t| match &t.claims.environment {
                    Some(env) => format!("{} in environment {env}", t.claims.workflow_ref.file),
                    None => t.claims.workflow_ref.file.clone(),
                })
                .collect();
            return Err(forbidden(format!(
                "npm trust allows {package} to be published only by the workflow {}, not {file}{}",
                allowed.join(" or "),
                claims
                    .environment
                    .as_ref()
                    .map_or(String::new(), |e| format!(" in environment {e}"))
            )));
        }
    }
    Ok(Grant {
        repository: claims.repository.clone(),
        repository_id: claims.repository_id,
        publisher: json!({
            "id": "github",
            "repository": claims.repository,
            "workflow_ref": claims.workflow_ref,
            "sha": claims.sha,
            "run_id": claims.run_id,
            "actor": claims.actor,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(repository: &str, event: &str) -> Claims {
        let owner = repository.split('/').next().unwrap();
        Claims {
            repository: repository.into(),
            repository_owner: owner.into(),
            repository_id: Some(7),
            repository_owner_id: Some(1),
            workflow_ref: format!("{repository}/.github/workflows/release.yml@refs/heads/main"),
            environment: None,
            event_name: event.into(),
            sha: "abc".into(),
            run_id: "42".into(),
            actor: "alice".into(),
            jti: "j".into(),
            exp: 0,
            repository_visibility: "private".into(),
        }
    }

    fn bound(id: u64) -> Repo {
        Repo {
            id: Some(id),
            ..Repo::new("acme", "widget").unwrap()
        }
    }

    #[test]
    fn the_claims_must_name_the_packages_repository() {
        let widget = PackageName::parse("@acme/widget").unwrap();
        let grant = decide(
            &widget,
            Some(&bound(7)),
            &claims("acme/widget", "push"),
            false,
            &[],
        )
        .unwrap();
        assert_eq!(grant.repository, "acme/widget");
        assert_eq!(
            grant.publisher["workflow_ref"],
            "acme/widget/.github/workflows/release.yml@refs/heads/main"
        );
        // A new package: the token may create it bound to the workflow's repo.
        assert!(decide(&widget, None, &claims("acme/other", "push"), false, &[]).is_ok());
        let e = decide(
            &widget,
            Some(&bound(7)),
            &claims("acme/other", "push"),
            false,
            &[],
        )
        .unwrap_err();
        assert_eq!(e.status, 403);
        assert!(
            e.message.contains(
                "bound to the GitHub repository acme/widget, but the workflow runs in acme/other"
            ),
            "{e:?}"
        );
        let e = decide(&widget, None, &claims("evil/widget", "push"), false, &[]).unwrap_err();
        assert!(e.message.contains("scope is @acme"), "{e:?}");
        let e = decide(
            &widget,
            Some(&bound(8)),
            &claims("acme/widget", "push"),
            false,
            &[],
        )
        .unwrap_err();
        assert!(e.message.contains("deleted and created again"), "{e:?}");
        for event in ["pull_request", "pull_request_target"] {
            let e = decide(
                &widget,
                Some(&bound(7)),
                &claims("acme/widget", event),
                false,
                &[],
            )
            .unwrap_err();
            assert!(e.message.contains(event), "{e:?}");
            assert!(
                decide(
                    &widget,
                    Some(&bound(7)),
                    &claims("acme/widget", event),
                    true,
                    &[]
                )
                .is_ok()
            );
        }
    }
}
