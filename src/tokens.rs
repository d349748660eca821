//! Registry tokens: secrets nmr issues itself, as opposed to the GitHub
//! tokens it only checks with GitHub. Four kinds:
//!
//! - [`TokenKind::Oidc`], [`TokenKind::OidcRead`]: exchanged for a GitHub
//!   Actions ID token (`src/oidc.rs`); they stand for a workflow.
//! - [`TokenKind::Login`]: what `npm login` (web or legacy) stores in
//!   `.npmrc`; it stands for one GitHub user, by id.
//! - [`TokenKind::Created`]: made by `npm token create` from a login token,
//!   for the same user, optionally narrowed (read-only, packages or scopes,
//!   a CIDR allow-list).
//!
//! A user's token carries no permission of its own: every request with it
//! is still decided by what GitHub says of that user (through the GitHub
//! App), so losing access on GitHub loses it on nmr within
//! `auth.github.cache_ttl`, whatever tokens the user holds.
//!
//! A registry token is `nmr_` followed by 40 hex digits (160 random bits),
//! so secret scanners and logs can tell it from a GitHub token. nmr keeps
//! only its SHA-256, as the key of a [`TokenRecord`] in the metadata store
//! (`k/{hex}`), which says who the token stands for, what it may do, until
//! when. Revoking a token deletes its record.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::{Action, TokenHash};
use crate::name::PackageName;

/// The prefix of every registry token.
pub const PREFIX: &str = "nmr_";

/// What kind of grant a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenKind {
    /// Exchanged for a GitHub Actions ID token: read and publish new
    /// versions of its packages.
    Oidc,
    /// Exchanged for a GitHub Actions ID token to install: read only.
    OidcRead,
    /// Issued by `npm login` to a GitHub user.
    Login,
    /// Made by `npm token create` from a login token.
    Created,
}

/// A registry token as stored (by the SHA-256 of its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id of the token (shown in lists, used to revoke it).
    pub key: String,
    pub kind: TokenKind,
    /// Who the token stands for, as `_npmUser.name` shows it.
    pub owner: String,
    /// The only packages it may be used on (empty: any).
    pub packages: Vec<String>,
    /// The only scopes (without `@`) it may be used on (empty: any).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The GitHub repository (`owner/repo`) and its id a package the token
    /// creates must be bound to.
    pub repository: Option<String>,
    pub repository_id: Option<u64>,
    /// What a publish with it records in `_npmUser.trustedPublisher`.
    #[serde(default)]
    pub publisher: Option<Value>,
    /// Unix seconds.
    pub created: u64,
    pub expires: u64,
    #[serde(default)]
    pub last_used: Option<u64>,
    #[serde(default)]
    pub revoked: bool,
    /// The GitHub user a login or created token stands for (`GET /user`'s
    /// `id`); `owner` is their login when the token was issued.
    #[serde(default)]
    pub github_id: Option<u64>,
    /// `npm token create --name` and `--token-description`.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Reads only (`--packages-and-scopes-permission read-only`).
    #[serde(default)]
    pub readonly: bool,
    /// The client addresses it may be used from (IPv4 CIDRs; empty: any).
    #[serde(default)]
    pub cidr_whitelist: Vec<String>,
    /// The secret's first characters (`nmr_` and 6 hex digits), what `npm
    /// token list` shows and `npm token revoke` matches.
    #[serde(default)]
    pub prefix: String,
}

impl TokenRecord {
    /// A record of `kind` for `owner`, issued at `now` for `ttl` seconds,
    /// with a fresh key and no limits (the caller adds them).
    pub fn new(kind: TokenKind, owner: &str, now: u64, ttl: u64) -> Result<TokenRecord, String> {
        Ok(TokenRecord {
            key: new_key()?,
            kind,
            owner: owner.to_string(),
            packages: Vec::new(),
            scopes: Vec::new(),
            repository: None,
            repository_id: None,
            publisher: None,
            created: now,
            expires: now.saturating_add(ttl),
            last_used: None,
            revoked: false,
            github_id: None,
            name: None,
            description: None,
            readonly: false,
            cidr_whitelist: Vec::new(),
            prefix: String::new(),
        })
    }

    /// Whether the token is a GitHub user's (login or created), whose
    /// permissions GitHub decides.
    pub fn is_user(&self) -> bool {
        matches!(self.kind, TokenKind::Login | TokenKind::Created)
    }

    /// Whether the token is narrowed in any way (read-only, packages,
    /// scopes, addresses): such a token cannot make others.
    pub fn is_restricted(&self) -> bool {
        self.readonly
            || !self.packages.is_empty()
            || !self.scopes.is_empty()
            || !self.cidr_whitelist.is_empty()
    }

    /// Whether the token may be used at `now` (Unix seconds) from `client`:
    /// not revoked, not expired, and `client` within its CIDR allow-list.
    /// The error says why not.
    pub fn usable(&self, now: u64, client: IpAddr) -> Result<(), String> {
        if self.revoked {
            return Err("the registry token was revoked".into());
        }
        if now >= self.expires {
            return Err("the registry token has expired: run npm login again".into());
        }
        if !self.cidr_whitelist.is_empty()
            && !self.cidr_whitelist.iter().any(|c| {
                c.parse::<ipnet::IpNet>()
                    .is_ok_and(|net| net.contains(&client))
            })
        {
            return Err(format!(
                "the registry token may be used only from {}, not from {client}",
                self.cidr_whitelist.join(", ")
            ));
        }
        Ok(())
    }

    /// Whether the token may do `action` on `package` at `now` (Unix
    /// seconds) from `client`: [`TokenRecord::usable`], then
    /// [`TokenRecord::permits`]. The error says why not. (The dispatcher
    /// calls the two apart, to answer 401 or 403.)
    #[cfg(test)]
    pub fn allows(
        &self,
        package: &PackageName,
        action: Action,
        now: u64,
        client: IpAddr,
    ) -> Result<(), String> {
        self.usable(now, client)?;
        self.permits(package, action)
    }

    /// Whether the token's limits let it do `action` on `package`: limited
    /// to the package or its scope, read-only tokens reading only, and an
    /// OIDC token reading or publishing only. The error says why not.
    pub fn permits(&self, package: &PackageName, action: Action) -> Result<(), String> {
        if !self.packages.is_empty() && !self.packages.iter().any(|p| p == package.as_str()) {
            return Err(format!(
                "the registry token is limited to {} and cannot be used on {package}",
                self.packages.join(", ")
            ));
        }
        let scope = package.scope().unwrap_or_default();
        if !self.scopes.is_empty() && !self.scopes.iter().any(|s| s.eq_ignore_ascii_case(scope)) {
            return Err(format!(
                "the registry token is limited to @{} and cannot be used on {package}",
                self.scopes.join(", @")
            ));
        }
        match (self.kind, action) {
            (TokenKind::Login | TokenKind::Created, Action::Read) => Ok(()),
            (TokenKind::Login | TokenKind::Created, _) if self.readonly => Err(format!(
                "the registry token is read-only and cannot be used for {} {package}",
                action.verb()
            )),
            (TokenKind::Login | TokenKind::Created, _) => Ok(()),
            (TokenKind::Oidc, Action::Read | Action::Publish) => Ok(()),
            (TokenKind::OidcRead, Action::Read) => Ok(()),
            (TokenKind::OidcRead, _) => Err(format!(
                "a read token exchanged in GitHub Actions can only read {package}"
            )),
            (TokenKind::Oidc, _) => Err(format!(
                "a token exchanged in GitHub Actions may read and publish {package}, nothing else: {} needs a user's token",
                match action {
                    Action::DistTag => "changing dist-tags",
                    Action::InspectTrust | Action::ConfigureTrust => "npm trust",
                    _ => "unpublishing",
                }
            )),
        }
    }
}

/// Whether `token` has the registry token form.
pub fn is_registry_token(token: &str) -> bool {
    token.starts_with(PREFIX)
}

/// The part of a secret kept in clear for lists: `nmr_` and 6 hex digits
/// (24 of its 160 bits).
pub fn mask(secret: &str) -> String {
    secret.chars().take(PREFIX.len() + 6).collect()
}

/// A new registry token: its secret (shown once) and its SHA-256.
pub fn generate() -> Result<(String, TokenHash), String> {
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a token: {e}"))?;
    let secret = format!("{PREFIX}{}", hex::encode(bytes));
    let hash = crate::auth::hash_token(&secret);
    Ok((secret, hash))
}

/// A new public token id (16 hex digits).
pub fn new_key() -> Result<String, String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a token id: {e}"))?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: TokenKind) -> TokenRecord {
        TokenRecord {
            key: "k".into(),
            kind,
            owner: "GitHub Actions".into(),
            packages: vec!["@acme/widget".into()],
            scopes: Vec::new(),
            repository: Some("acme/widget".into()),
            repository_id: Some(7),
            publisher: None,
            created: 100,
            expires: 200,
            last_used: None,
            revoked: false,
            github_id: None,
            name: None,
            description: None,
            readonly: false,
            cidr_whitelist: Vec::new(),
            prefix: String::new(),
        }
    }

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3));

    #[test]
    fn a_user_token_is_narrowed_by_its_record() {
        let widget = PackageName::parse("@acme/widget").unwrap();
        let gadget = PackageName::parse("@acme/gadget").unwrap();
        let login = TokenRecord {
            kind: TokenKind::Login,
            packages: Vec::new(),
            ..record(TokenKind::Login)
        };
        for action in [Action::Read, Action::Publish, Action::Unpublish] {
            assert!(login.allows(&widget, action, 150, HOME).is_ok());
        }
        assert!(!login.is_restricted());
        let readonly = TokenRecord {
            readonly: true,
            ..login.clone()
        };
        assert!(readonly.allows(&widget, Action::Read, 150, HOME).is_ok());
        let e = readonly
            .allows(&widget, Action::Publish, 150, HOME)
            .unwrap_err();
        assert!(e.contains("read-only"), "{e}");
        let limited = TokenRecord {
            packages: vec!["@acme/widget".into()],
            ..login.clone()
        };
        assert!(limited.allows(&gadget, Action::Read, 150, HOME).is_err());
        let office = TokenRecord {
            cidr_whitelist: vec!["10.1.0.0/16".into()],
            ..login.clone()
        };
        assert!(office.allows(&widget, Action::Read, 150, HOME).is_ok());
        let elsewhere: IpAddr = "192.168.1.1".parse().unwrap();
        let e = office
            .allows(&widget, Action::Read, 150, elsewhere)
            .unwrap_err();
        assert!(e.contains("only from 10.1.0.0/16"), "{e}");
        assert!(readonly.is_restricted() && limited.is_restricted() && office.is_restricted());
        assert!(login.allows(&widget, Action::Read, 200, HOME).is_err());
    }

    #[test]
    fn tokens_look_like_registry_tokens_and_differ() {
        let (a, ha) = generate().unwrap();
        let (b, _) = generate().unwrap();
        assert!(is_registry_token(&a) && a.len() == 44 && a != b);
        use sha2::Digest;
        assert_eq!(ha, <[u8; 32]>::from(sha2::Sha256::digest(a.as_bytes())));
        assert!(!is_registry_token("ghp_abc"));
    }

    #[test]
    fn an_oidc_token_reads_and_publishes_its_package_only() {
        let widget = PackageName::parse("@acme/widget").unwrap();
        let other = PackageName::parse("@acme/other").unwrap();
        let r = record(TokenKind::Oidc);
        assert!(r.allows(&widget, Action::Read, 150, HOME).is_ok());
        assert!(r.allows(&widget, Action::Publish, 150, HOME).is_ok());
        assert!(r.allows(&widget, Action::Unpublish, 150, HOME).is_err());
        assert!(r.allows(&widget, Action::DistTag, 150, HOME).is_err());
        assert!(
            r.allows(&other, Action::Read, 150, HOME)
                .unwrap_err()
                .contains("limited to @acme/widget")
        );
        assert!(
            r.allows(&widget, Action::Read, 200, HOME)
                .unwrap_err()
                .contains("expired")
        );
        let revoked = TokenRecord { revoked: true, ..r };
        assert!(revoked.allows(&widget, Action::Read, 150, HOME).is_err());
    }
}
