//! Configuration: built-in defaults, then an optional TOML file, then `NMR_*`
//! environment variables, each layer overriding the one before.
//!
//! The defaults are `config/nmr.toml`, compiled into the binary, so that file
//! is both the documentation of every key and the values `nmr` runs with when
//! given no arguments. Environment variables use the prefix `NMR` and `__`
//! between sections (`NMR_SERVER__PORT=4000` sets `server.port`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The built-in defaults: `config/nmr.toml`, embedded at compile time.
pub const DEFAULTS: &str = include_str!("../config/nmr.toml");

/// The whole configuration, as the layers resolve it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub db: DbConfig,
    pub storage: StorageConfig,
    pub upstream: UpstreamConfig,
    pub settings: Settings,
    pub logger: LoggerConfig,
}

/// `[server]`: where nmr listens and the URL it is reached at.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address, e.g. `0.0.0.0` or `127.0.0.1`.
    pub host: String,
    /// Listen port; 0 asks the OS for a free one.
    pub port: u16,
    /// Base URL tarball URLs are written with; empty = derived (see
    /// [`Config::public_url`]).
    pub public_url: String,
    /// Largest accepted request body, in bytes; larger ones get 413.
    pub max_body_size: u64,
    /// Seconds a client has to send a request line and its headers, from the
    /// connection's start or the request's first byte; then the connection is
    /// closed.
    pub header_timeout: u64,
    /// Seconds a request body may go without receiving a byte (then 408 and
    /// the connection is closed).
    pub body_timeout: u64,
    /// Seconds a kept-alive connection may sit idle between requests.
    pub keep_alive_timeout: u64,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Threads that serve connections, each a single-threaded runtime
    /// (`src/workers.rs`); 0: one per CPU the process may use.
    pub workers: usize,
    /// Reverse proxies (CIDRs, e.g. `10.0.0.0/8`, or single addresses) whose
    /// `X-Forwarded-For` is believed when telling the client's address.
    pub trusted_proxies: Vec<String>,
}

/// The most `server.workers` threads: beyond the cores of any machine nmr
/// runs on, more threads only add switching.
pub const MAX_WORKERS: usize = 256;

/// Which authorization model decides who may do what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthType {
    /// Every request is allowed and any token accepted.
    None,
    /// Permissions come from the package's GitHub repository.
    Github,
}

/// `[auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(rename = "type")]
    pub kind: AuthType,
    pub github: GithubConfig,
    pub tokens: TokensConfig,
}

/// `[auth.tokens]`: registry tokens issued to users (`npm login`, `npm
/// token create`; see `src/tokens.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensConfig {
    /// Seconds a login token is valid (and a created one without
    /// `--expires`).
    pub ttl: u64,
}

/// `[auth.github.app]`: the GitHub App nmr asks permissions through, and
/// whose OAuth client signs users in (`npm login`; see `src/github/app.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The App's numeric id; empty: App mode is off.
    pub id: String,
    /// Path to the App's PEM private key.
    pub private_key: PathBuf,
    /// The App's OAuth client id (`Iv1.…` or `Iv23…`).
    pub client_id: String,
    /// The App's OAuth client secret.
    pub client_secret: String,
    /// Whether a GitHub token (a PAT) sent as the bearer is still accepted.
    pub accept_github_tokens: bool,
}

impl AppConfig {
    /// Whether App mode is on (`auth.github.app.id` is set).
    pub fn enabled(&self) -> bool {
        !self.id.is_empty()
    }
}

/// `[auth.github]`: how nmr reaches GitHub (see `config/nmr.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubConfig {
    /// REST API base URL, e.g. `https://api.github.com` or
    /// `https://ghe.example/api/v3`.
    pub api_url: String,
    /// Web host that `repository` URLs name, e.g. `github.com`.
    pub host: String,
    /// Seconds a positive GitHub answer is cached.
    pub cache_ttl: u64,
    /// Seconds a denial is cached.
    pub denied_cache_ttl: u64,
    /// Seconds one GitHub call may take.
    pub timeout: u64,
    /// Entries each GitHub answer cache holds at most (who a token is; a
    /// token's permission on a repo).
    pub cache_size: usize,
    /// GitHub lookups of tokens GitHub has not accepted before that one
    /// client address may cause per minute (then 429).
    pub max_lookups_per_minute: u32,
    /// GitHub's web address (OAuth pages), e.g. `https://github.com` or
    /// `https://ghe.example`.
    pub web_url: String,
    pub app: AppConfig,
    pub oidc: OidcConfig,
}

/// `[auth.github.oidc]`: trusted publishing from GitHub Actions (see
/// `config/nmr.toml` and `src/oidc.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// Whether ID tokens are exchanged at all.
    pub enabled: bool,
    /// The `iss` ID tokens must carry.
    pub issuer: String,
    /// Where the issuer's keys are; empty: `{issuer}/.well-known/jwks`.
    pub jwks_url: String,
    /// The `aud` ID tokens must carry; empty: `npm:` + the public URL's host.
    pub audience: String,
    /// Seconds an exchanged registry token is valid.
    pub token_ttl: u64,
    /// Whether workflows run for pull requests may exchange.
    pub allow_pull_requests: bool,
    /// What a read-only exchange (`npm ci` in CI) may read.
    pub read: ReadPolicy,
}

/// `auth.github.oidc.read`: which packages a workflow's read token reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadPolicy {
    /// Packages bound to the workflow's own repository.
    Repo,
    /// Every package of the scope equal to the repository's owner, for
    /// workflows of private or internal repositories only.
    Owner,
    /// No read exchange.
    None,
}

/// `[db]`: the metadata store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbConfig {
    /// Where the truth is: this instance's LevelDB, or the S3 bucket of
    /// `[storage.s3]` (`src/shared.rs`).
    #[serde(rename = "type")]
    pub kind: DbType,
    /// The LevelDB directory: the truth under `local`, this instance's
    /// cache (which may be deleted while nmr is stopped) under `s3`.
    pub path: PathBuf,
    /// MiB of rendered packuments kept in memory (`src/documents.rs`).
    pub cache_size: u64,
    pub s3: DbS3Config,
}

/// Where the metadata's truth lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DbType {
    /// This instance's LevelDB (`db.path`): one instance.
    Local,
    /// The bucket of `[storage.s3]`, shared by every instance.
    S3,
}

/// `[db.s3]`: how an instance uses the shared bucket (`src/shared.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbS3Config {
    /// Milliseconds a package's cached state may be served without asking
    /// S3 whether it changed (one conditional GET then revalidates it).
    pub max_staleness: u64,
    /// Seconds a publish's claim on a version number (taken only when its
    /// tarball's key is already occupied) holds off other publishers of
    /// that number; a crashed publisher blocks it at most this long.
    pub claim_timeout: u64,
    /// Lookups per minute one client address may cause of packages this
    /// instance knows nothing of (each an S3 GET); then 429.
    pub lookups_per_minute: u32,
}

/// Which backend keeps tarballs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageType {
    /// Files under `storage.local.path`.
    Local,
    /// Objects in the S3 bucket of `[storage.s3]`.
    S3,
}

/// `[storage]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(rename = "type")]
    pub kind: StorageType,
    /// MiB of small tarballs kept in memory (`src/storage/cache.rs`).
    pub cache_size: u64,
    pub local: LocalStorageConfig,
    pub s3: S3Config,
}

/// `[storage.s3]`: the bucket tarballs live in (see `config/nmr.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
    /// Empty for AWS, else the store's base URL.
    pub endpoint: String,
    pub force_path_style: bool,
    /// Key prefix (checked by `storage::s3::normalise_prefix`).
    pub prefix: String,
    /// Empty: the AWS environment / credential chain.
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Whether downloads are 302s to presigned URLs.
    pub redirect: bool,
    /// Lifetime of a presigned URL, in seconds.
    pub expires: u64,
}

/// `[storage.local]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalStorageConfig {
    pub path: PathBuf,
}

/// `[upstream]`: where unscoped requests are redirected.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL of the upstream registry; empty = unscoped requests get 404.
    pub url: String,
}

/// `[settings]`: registry policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Whether a version number that was unpublished may be published again.
    pub allow_previous_version: bool,
    /// Bytes a tarball may inflate to (the sum of its entries' sizes).
    pub max_unpacked_size: u64,
    /// Entries a tarball may hold.
    pub max_file_count: u64,
    /// Bytes of the top-level `readme` kept (cut at a character boundary).
    pub max_readme_size: usize,
    /// Bytes a version manifest may take, its `readme` excluded.
    pub max_manifest_size: usize,
}

/// `[logger]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggerConfig {
    /// An env_logger filter (`info`, `warn`, `nmr=debug`, ...).
    pub level: String,
}

/// A configuration that cannot be used; `Display` is the one line printed at
/// startup before exiting with status 2.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Resolves the layers: embedded defaults, then `file` (if given), then
    /// `NMR_*` environment variables.
    ///
    /// Errors name the offending key, e.g. `unknown variant `ldap`, expected
    /// `none` or `github` for key `auth.type``.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// [`Config::load`] with an explicit environment, so tests need not touch
    /// the process's own.
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        use config::{Environment, File, FileFormat};
        let mut builder =
            config::Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "--config {}: no such file",
                    path.display()
                )));
            }
            builder = builder.add_source(File::from(path).format(FileFormat::Toml));
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("NMR_"))
            .collect();
        builder = builder.add_source(
            Environment::with_prefix("NMR")
                .prefix_separator("_")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("server.trusted_proxies")
                .try_parsing(true)
                .source(Some(env)),
        );
        let resolved = builder.build().map_err(|e| ConfigError(e.to_string()))?;
        let config: Config = resolved
            .try_deserialize()
            .map_err(|e| ConfigError(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.server.public_url.is_empty() {
            parse_base_url(&self.server.public_url)
                .map_err(|e| ConfigError(format!("server.public_url: {e}")))?;
        }
        if !self.upstream.url.is_empty() {
            parse_base_url(&self.upstream.url)
                .map_err(|e| ConfigError(format!("upstream.url: {e}")))?;
        }
        parse_base_url(&self.auth.github.api_url)
            .map_err(|e| ConfigError(format!("auth.github.api_url: {e}")))?;
        let host = &self.auth.github.host;
        if host.is_empty() || host.contains('/') || host.contains(':') {
            return Err(ConfigError(format!(
                "auth.github.host: {host:?} must be a bare host name such as github.com"
            )));
        }
        if !self.storage.s3.endpoint.is_empty() {
            parse_base_url(&self.storage.s3.endpoint)
                .map_err(|e| ConfigError(format!("storage.s3.endpoint: {e}")))?;
        }
        if self.db.kind == DbType::S3 && self.storage.kind != StorageType::S3 {
            return Err(ConfigError(
                "db.type = \"s3\" keeps the metadata in the bucket of [storage.s3]: set storage.type = \"s3\" too".into(),
            ));
        }
        if self.db.s3.max_staleness > 3_600_000 {
            return Err(ConfigError(
                "db.s3.max_staleness: must be at most 3600000 milliseconds (an hour)".into(),
            ));
        }
        if self.db.s3.claim_timeout == 0 {
            return Err(ConfigError("db.s3.claim_timeout: must be above 0".into()));
        }
        if self.db.s3.lookups_per_minute == 0 {
            return Err(ConfigError(
                "db.s3.lookups_per_minute: must be above 0".into(),
            ));
        }
        if self.storage.s3.expires == 0 || self.storage.s3.expires > 7 * 24 * 3600 {
            return Err(ConfigError(
                "storage.s3.expires: must be 1 to 604800 seconds (S3's limit for presigned URLs)"
                    .into(),
            ));
        }
        if self.auth.github.timeout == 0 {
            return Err(ConfigError("auth.github.timeout: must be above 0".into()));
        }
        for (key, value) in [
            ("server.header_timeout", self.server.header_timeout),
            ("server.body_timeout", self.server.body_timeout),
            ("server.keep_alive_timeout", self.server.keep_alive_timeout),
            (
                "auth.github.max_lookups_per_minute",
                self.auth.github.max_lookups_per_minute.into(),
            ),
        ] {
            if value == 0 {
                return Err(ConfigError(format!("{key}: must be above 0")));
            }
        }
        let oidc = &self.auth.github.oidc;
        parse_base_url(&oidc.issuer)
            .map_err(|e| ConfigError(format!("auth.github.oidc.issuer: {e}")))?;
        if !oidc.jwks_url.is_empty() {
            parse_base_url(&oidc.jwks_url)
                .map_err(|e| ConfigError(format!("auth.github.oidc.jwks_url: {e}")))?;
        }
        if oidc.token_ttl == 0 || oidc.token_ttl > 24 * 3600 {
            return Err(ConfigError(
                "auth.github.oidc.token_ttl: must be 1 to 86400 seconds".into(),
            ));
        }
        parse_base_url(&self.auth.github.web_url)
            .map_err(|e| ConfigError(format!("auth.github.web_url: {e}")))?;
        let app = &self.auth.github.app;
        if app.enabled() {
            if !app.id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ConfigError(format!(
                    "auth.github.app.id: {:?} must be the App's numeric id (its settings page shows it as \"App ID\")",
                    app.id
                )));
            }
            if app.private_key.as_os_str().is_empty() {
                return Err(ConfigError(
                    "auth.github.app.private_key: App mode (auth.github.app.id) needs the path to the App's PEM private key".into(),
                ));
            }
        }
        if self.auth.tokens.ttl == 0 || self.auth.tokens.ttl > 365 * 24 * 3600 {
            return Err(ConfigError(
                "auth.tokens.ttl: must be 1 to 31536000 seconds (a year)".into(),
            ));
        }
        if self.server.max_connections == 0 || self.auth.github.cache_size == 0 {
            return Err(ConfigError(
                "server.max_connections and auth.github.cache_size: must be above 0".into(),
            ));
        }
        if self.server.workers > MAX_WORKERS {
            return Err(ConfigError(format!(
                "server.workers: at most {MAX_WORKERS} threads (0: one per CPU core)"
            )));
        }
        self.trusted_proxies()?;
        if self.server.max_body_size == 0 {
            return Err(ConfigError("server.max_body_size: must be above 0".into()));
        }
        Ok(())
    }

    /// `server.trusted_proxies` parsed: each entry a CIDR (`10.0.0.0/8`,
    /// `::1/128`) or a bare address (one host).
    pub fn trusted_proxies(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.server
            .trusted_proxies
            .iter()
            .map(|entry| {
                let entry = entry.trim();
                entry
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        ConfigError(format!(
                            "server.trusted_proxies: {entry:?} is not an address or CIDR such as 10.0.0.0/8"
                        ))
                    })
            })
            .collect()
    }

    /// The public base URL, always ending in `/`: `server.public_url` when
    /// set, else `http://HOST:PORT/` for the address actually bound (a
    /// wildcard host becomes `127.0.0.1`).
    pub fn public_url(&self, bound: std::net::SocketAddr) -> String {
        if !self.server.public_url.is_empty() {
            return with_trailing_slash(&self.server.public_url);
        }
        let ip = bound.ip();
        let host = if ip.is_unspecified() {
            "127.0.0.1".to_string()
        } else if ip.is_ipv6() {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        format!("http://{host}:{}/", bound.port())
    }
}

/// `url` with exactly one trailing `/`.
pub fn with_trailing_slash(url: &str) -> String {
    format!("{}/", url.trim_end_matches('/'))
}

/// Checks that `url` is an absolute `http://` or `https://` URL with a host
/// and no query or fragment. Returns the path part (starting with `/`).
pub fn parse_base_url(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{url:?} must start with http:// or https://"))?;
    if rest.contains('?') || rest.contains('#') {
        return Err(format!("{url:?} must not have a query or fragment"));
    }
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    Ok(path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn embedded_defaults_load() {
        let c = Config::load_with_env(None, env(&[])).unwrap();
        assert_eq!(c.server.port, 3000);
        assert_eq!(c.server.host, "0.0.0.0");
        assert_eq!(c.server.max_body_size, 100 * 1024 * 1024);
        assert_eq!(c.db.path, PathBuf::from("./data/db"));
        assert_eq!((c.db.cache_size, c.storage.cache_size), (64, 64));
        assert_eq!(c.storage.local.path, PathBuf::from("./data/storage"));
        assert_eq!(c.upstream.url, "");
        assert!(!c.settings.allow_previous_version);
        assert_eq!(c.settings.max_unpacked_size, 512 << 20);
        assert_eq!(c.settings.max_file_count, 100_000);
        assert_eq!(c.settings.max_readme_size, 256 << 10);
        assert_eq!(c.settings.max_manifest_size, 1 << 20);
        assert_eq!(c.logger.level, "info");
        assert_eq!(c.auth.kind, AuthType::Github);
        assert_eq!(c.auth.github.api_url, "https://api.github.com");
        assert_eq!(c.auth.github.host, "github.com");
        assert_eq!(c.auth.github.cache_ttl, 300);
        assert_eq!(c.auth.github.timeout, 10);
        assert_eq!(c.storage.kind, StorageType::Local);
        assert!(!c.storage.s3.redirect);
        assert_eq!(c.storage.s3.expires, 60);
        assert_eq!(c.server.header_timeout, 10);
        assert_eq!(c.server.body_timeout, 30);
        assert_eq!(c.server.keep_alive_timeout, 75);
        assert_eq!(c.server.max_connections, 4096);
        assert_eq!(c.server.workers, 0);
        assert!(c.server.trusted_proxies.is_empty());
        assert_eq!(c.auth.github.cache_size, 100_000);
        assert_eq!(c.auth.github.max_lookups_per_minute, 120);
        let oidc = &c.auth.github.oidc;
        assert!(oidc.enabled && !oidc.allow_pull_requests);
        assert_eq!(oidc.issuer, "https://token.actions.githubusercontent.com");
        assert_eq!((oidc.jwks_url.as_str(), oidc.audience.as_str()), ("", ""));
        assert_eq!(oidc.token_ttl, 900);
        assert_eq!(oidc.read, ReadPolicy::Repo);
        assert_eq!(c.auth.github.web_url, "https://github.com");
        let app = &c.auth.github.app;
        assert!(!app.enabled() && app.accept_github_tokens);
        assert_eq!(c.auth.tokens.ttl, 30 * 24 * 3600);
    }

    #[test]
    fn app_mode_needs_a_numeric_id_and_a_key() {
        let c = Config::load_with_env(
            None,
            env(&[
                ("NMR_AUTH__GITHUB__APP__ID", "123456"),
                ("NMR_AUTH__GITHUB__APP__PRIVATE_KEY", "/k.pem"),
            ]),
        )
        .unwrap();
        assert_eq!(c.auth.github.app.id, "123456");
        assert!(c.auth.github.app.enabled());
        let e = Config::load_with_env(None, env(&[("NMR_AUTH__GITHUB__APP__ID", "123456")]))
            .unwrap_err();
        assert!(e.0.contains("auth.github.app.private_key"), "{e}");
        let e = Config::load_with_env(None, env(&[("NMR_AUTH__TOKENS__TTL", "0")])).unwrap_err();
        assert!(e.0.contains("auth.tokens.ttl"), "{e}");
    }

    #[test]
    fn trusted_proxies_from_the_environment() {
        let c = Config::load_with_env(
            None,
            env(&[("NMR_SERVER__TRUSTED_PROXIES", "10.0.0.0/8,127.0.0.1")]),
        )
        .unwrap();
        let nets = c.trusted_proxies().unwrap();
        assert_eq!(nets.len(), 2);
        assert!(nets[1].contains(&"127.0.0.1".parse::<std::net::IpAddr>().unwrap()));
        let e = Config::load_with_env(None, env(&[("NMR_SERVER__TRUSTED_PROXIES", "nope")]))
            .unwrap_err();
        assert!(e.to_string().contains("server.trusted_proxies"), "{e}");
    }

    #[test]
    fn environment_overrides_defaults() {
        let c = Config::load_with_env(
            None,
            env(&[
                ("NMR_SERVER__PORT", "4000"),
                ("NMR_DB__PATH", "/tmp/x"),
                ("NMR_UPSTREAM__URL", "http://upstream.test/"),
                ("NMR_SETTINGS__ALLOW_PREVIOUS_VERSION", "true"),
                ("NMR_STORAGE__LOCAL__PATH", "/tmp/s"),
                ("NMR_STORAGE__TYPE", "s3"),
                ("NMR_STORAGE__S3__BUCKET", "tarballs"),
                ("NMR_STORAGE__S3__FORCE_PATH_STYLE", "true"),
                ("OTHER", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.port, 4000);
        assert_eq!(c.db.path, PathBuf::from("/tmp/x"));
        assert_eq!(c.upstream.url, "http://upstream.test/");
        assert!(c.settings.allow_previous_version);
        assert_eq!(c.storage.local.path, PathBuf::from("/tmp/s"));
        assert_eq!(c.storage.kind, StorageType::S3);
        assert_eq!(c.storage.s3.bucket, "tarballs");
        assert!(c.storage.s3.force_path_style);
    }

    #[test]
    fn file_layers_between_defaults_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nmr.toml");
        std::fs::write(&file, "[server]\nport = 5000\nhost = \"127.0.0.1\"\n").unwrap();
        let c = Config::load_with_env(Some(&file), env(&[])).unwrap();
        assert_eq!((c.server.port, c.server.host.as_str()), (5000, "127.0.0.1"));
        let c = Config::load_with_env(Some(&file), env(&[("NMR_SERVER__PORT", "6000")])).unwrap();
        assert_eq!(c.server.port, 6000);
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = Config::load_with_env(None, env(&[("NMR_AUTH__TYPE", "ldap")])).unwrap_err();
        assert!(e.to_string().contains("auth.type"), "{e}");
        let e = Config::load_with_env(None, env(&[("NMR_SERVER__PORT", "http")])).unwrap_err();
        assert!(e.to_string().contains("server.port"), "{e}");
        let e =
            Config::load_with_env(None, env(&[("NMR_AUTH__GITHUB__API_URL", "x")])).unwrap_err();
        assert!(e.to_string().contains("auth.github.api_url"), "{e}");
        let e = Config::load_with_env(None, env(&[("NMR_UPSTREAM__URL", "ftp://x")])).unwrap_err();
        assert!(e.to_string().contains("upstream.url"), "{e}");
        let e = Config::load_with_env(None, env(&[("NMR_SERVER__WORKERS", "100000")])).unwrap_err();
        assert!(e.to_string().contains("server.workers"), "{e}");
    }

    #[test]
    fn public_url_is_derived_or_normalised() {
        let mut c = Config::load_with_env(None, env(&[])).unwrap();
        let addr = "0.0.0.0:3000".parse().unwrap();
        assert_eq!(c.public_url(addr), "http://127.0.0.1:3000/");
        c.server.public_url = "https://nmr.example/npm".into();
        assert_eq!(c.public_url(addr), "https://nmr.example/npm/");
        assert_eq!(parse_base_url("https://nmr.example/npm/").unwrap(), "/npm/");
    }
}
