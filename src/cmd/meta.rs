//! Registry tokens and `npm trust` configurations where they are kept:
//! LevelDB under `db.type = "local"`, the bucket's `-/` objects under `s3`
//! (`src/shared.rs` lists the keys), so every instance honours a token
//! another issued and, within `db.s3.max_staleness`, its revocation.
//! Each function runs LevelDB work on the blocking pool.
//!
//! Kept per instance under `s3` (docs in README, "Running several
//! instances"): when a token was last used (`npm token list`'s column is
//! this instance's view) and the tokens GitHub accepted (`g/`).

use object_store::{PutMode, UpdateVersion};

use crate::cmd::sync::to_api;
use crate::error::ApiError;
use crate::name::PackageName;
use crate::oidc::TrustConfig;
use crate::registry::Registry;
use crate::shared::{Created, token_key, trust_key, user_dir, user_token_key};
use crate::store::{Store, StoreError};
use crate::tokens::TokenRecord;

/// A token's hash: the SHA-256 of its secret.
pub type Hash = [u8; 32];

/// Runs `f` on the store on the blocking pool.
async fn blocking<T: Send + 'static>(
    registry: &Registry,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = registry.store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| ApiError::internal(format!("the metadata store did not answer: {e}")))?
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn corrupt(e: serde_json::Error) -> ApiError {
    ApiError::internal(format!("a stored token record is corrupt: {e}"))
}

/// The registry token whose secret hashes to `hash`, if any.
pub async fn token(registry: &Registry, hash: &Hash) -> Result<Option<TokenRecord>, ApiError> {
    match &registry.shared {
        Some(shared) => match shared.token(hash).await.map_err(to_api)? {
            Some(raw) => serde_json::from_slice(&raw).map(Some).map_err(corrupt),
            None => Ok(None),
        },
        None => {
            let hash = *hash;
            blocking(registry, move |store| store.token(&hash)).await
        }
    }
}

/// Stores a token's record (durably: it is handed out only after this),
/// indexed under its GitHub user when it has one.
pub async fn put_token(
    registry: &Registry,
    hash: &Hash,
    record: &TokenRecord,
) -> Result<(), ApiError> {
    match &registry.shared {
        Some(shared) => {
            let json = serde_json::to_vec(record).map_err(corrupt)?;
            if let Some(id) = record.github_id {
                let index = user_token_key(id, hash);
                shared
                    .put_meta(&index, Vec::new(), PutMode::Overwrite)
                    .await
                    .map_err(to_api)?;
            }
            shared
                .put_meta(&token_key(hash), json, PutMode::Overwrite)
                .await
                .map_err(to_api)?;
            shared.forget_token(hash);
            Ok(())
        }
        None => {
            let (hash, record) = (*hash, record.clone());
            blocking(registry, move |store| store.put_token(&hash, &record)).await
        }
    }
}

/// Deletes a token (absent is fine): it stops working at once on this
/// instance, within `db.s3.max_staleness` on the others.
pub async fn delete_token(registry: &Registry, hash: &Hash) -> Result<(), ApiError> {
    match &registry.shared {
        Some(shared) => {
            let record = token(registry, hash).await?;
            shared.delete_meta(&token_key(hash)).await.map_err(to_api)?;
            if let Some(id) = record.and_then(|r| r.github_id) {
                let index = user_token_key(id, hash);
                shared.delete_meta(&index).await.map_err(to_api)?;
            }
            shared.forget_token(hash);
            Ok(())
        }
        None => {
            let hash = *hash;
            blocking(registry, move |store| store.delete_token(&hash)).await
        }
    }
}

/// The tokens of the GitHub user `github_id`, with their hashes.
pub async fn user_tokens(
    registry: &Registry,
    github_id: u64,
) -> Result<Vec<(Hash, TokenRecord)>, ApiError> {
    let Some(shared) = &registry.shared else {
        return blocking(registry, move |store| store.user_tokens(github_id)).await;
    };
    let mut found = Vec::new();
    for name in shared
        .list_meta(&user_dir(github_id))
        .await
        .map_err(to_api)?
    {
        let Some(hash) = hex::decode(&name).ok().and_then(|h| Hash::try_from(h).ok()) else {
            continue;
        };
        if let Some(record) = token(registry, &hash).await? {
            found.push((hash, record));
        }
    }
    Ok(found)
}

/// The package's trusted-publisher configurations, with the version to
/// replace ([`set_trust`]).
pub async fn trust(
    registry: &Registry,
    name: &PackageName,
) -> Result<(Vec<TrustConfig>, Option<String>), ApiError> {
    let Some(shared) = &registry.shared else {
        let owned = name.clone();
        return blocking(registry, move |store| store.trust(&owned))
            .await
            .map(|configs| (configs, None));
    };
    match shared.get_meta(&trust_key(name)).await.map_err(to_api)? {
        Some((bytes, etag)) => serde_json::from_slice(&bytes)
            .map(|configs| (configs, Some(etag)))
            .map_err(|e| {
                ApiError::internal(format!("the trust configuration of {name} is corrupt: {e}"))
            }),
        None => Ok((Vec::new(), None)),
    }
}

/// Replaces the package's configurations with `configs`, if they are
/// still the version `read` ([`trust`]'s); 409 when another instance
/// changed them in between.
pub async fn set_trust(
    registry: &Registry,
    name: &PackageName,
    configs: Vec<TrustConfig>,
    read: Option<String>,
) -> Result<(), ApiError> {
    let Some(shared) = &registry.shared else {
        let owned = name.clone();
        return blocking(registry, move |store| store.set_trust(&owned, &configs)).await;
    };
    let json = serde_json::to_vec(&configs)
        .map_err(|e| ApiError::internal(format!("cannot serialise the trust of {name}: {e}")))?;
    let mode = match read {
        Some(etag) => PutMode::Update(UpdateVersion {
            e_tag: Some(etag),
            version: None,
        }),
        None => PutMode::Create,
    };
    let changed = || {
        ApiError::conflict(format!(
            "the trust configuration of {name} was changed at the same moment: run the command again"
        ))
    };
    match shared.put_meta(&trust_key(name), json, mode).await {
        Ok(Created::Created) => Ok(()),
        Ok(Created::Exists) | Err(crate::shared::SharedError::Conflict) => Err(changed()),
        Err(e) => Err(to_api(e)),
    }
}

/// Records an OIDC ID token's `jti` as exchanged, once: `false` when it
/// was already (a replay, through any instance). Under `local` the
/// verifier's own memory decides (`src/oidc.rs`), so this is `true`.
pub async fn first_use_of_jti(registry: &Registry, jti: &str) -> Result<bool, ApiError> {
    let Some(shared) = &registry.shared else {
        return Ok(true);
    };
    use sha2::{Digest, Sha256};
    let key = format!("jti/{}", hex::encode(Sha256::digest(jti.as_bytes())));
    match shared
        .put_meta(&key, Vec::new(), PutMode::Create)
        .await
        .map_err(to_api)?
    {
        Created::Created => Ok(true),
        Created::Exists => Ok(false),
    }
}
