//! Tarballs as objects in an S3 bucket (AWS or any S3-compatible store),
//! through the `object_store` crate.
//!
//! Object keys are `{storage.s3.prefix}@scope/name/-/name-1.0.0.tgz`, built
//! only from a validated [`PackageName`] and [`Version`] and a prefix checked
//! at startup. A put returns once S3 acknowledged the object (S3 writes are
//! durable on acknowledgement), with `Content-Type: application/octet-stream`
//! and the npm `integrity` as `x-amz-meta-integrity`. Downloads stream the
//! object, or, with `storage.s3.redirect`, answer with a presigned GET URL
//! valid for `storage.s3.expires` seconds.

use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    Attribute, Attributes, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, RetryConfig,
};

use super::{Download, Fetched, StorageError};
use crate::config::S3Config;
use crate::name::{PackageName, Version};

/// An S3 bucket holding tarballs.
pub struct S3Storage {
    store: AmazonS3,
    prefix: String,
    redirect: bool,
    expires: Duration,
    /// `bucket X at ENDPOINT`, for error messages.
    describe: String,
}

/// Checks `storage.s3.prefix`: empty, or `/`-separated segments of letters,
/// digits, `-`, `_` and `.` (not `.` or `..`). Returns it ending in `/`.
pub fn normalise_prefix(prefix: &str) -> Result<String, String> {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    for segment in trimmed.split('/') {
        let ok = !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(format!(
                "storage.s3.prefix: {prefix:?} may hold only letters, digits, '-', '_', '.' and '/' between non-empty segments"
            ));
        }
    }
    Ok(format!("{trimmed}/"))
}

/// The object key of `name@version` under `prefix` (already normalised).
pub fn object_key(prefix: &str, name: &PackageName, version: &Version) -> String {
    format!("{prefix}{}", name.tarball_path(version))
}

impl S3Storage {
    /// Connects to the bucket `config` names and checks that it answers (a
    /// list of the prefix): an error names the bucket, the endpoint and what
    /// S3 said.
    pub async fn open(config: &S3Config) -> Result<S3Storage, StorageError> {
        let endpoint = if config.endpoint.is_empty() {
            "AWS".to_string()
        } else {
            config.endpoint.clone()
        };
        let describe = format!("s3 bucket {:?} at {endpoint}", config.bucket);
        let fail = |message: String| StorageError {
            backend: describe.clone(),
            message,
        };
        if config.bucket.is_empty() {
            return Err(fail(
                "storage.s3.bucket is empty: name the bucket that holds the tarballs".into(),
            ));
        }
        let prefix = normalise_prefix(&config.prefix).map_err(fail)?;
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(10),
                ..RetryConfig::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(300))
                    .with_allow_http(config.endpoint.starts_with("http://")),
            );
        if !config.endpoint.is_empty() {
            let endpoint = if config.force_path_style {
                config.endpoint.clone()
            } else {
                virtual_hosted_endpoint(&config.endpoint, &config.bucket)
            };
            builder = builder.with_endpoint(endpoint);
        }
        builder = builder
            .with_virtual_hosted_style_request(!config.force_path_style)
            // `If-None-Match` / `If-Match` on PUT (the shared metadata's
            // compare-and-swap, `src/shared.rs`).
            .with_conditional_put(S3ConditionalPut::ETagMatch);
        if !config.access_key_id.is_empty() {
            builder = builder.with_access_key_id(&config.access_key_id);
        }
        if !config.secret_access_key.is_empty() {
            builder = builder.with_secret_access_key(&config.secret_access_key);
        }
        let store = builder
            .build()
            .map_err(|e| fail(format!("invalid S3 settings: {e}")))?;
        let prefix_path = (!prefix.is_empty()).then(|| Path::from(prefix.trim_end_matches('/')));
        store
            .list_with_delimiter(prefix_path.as_ref())
            .await
            .map_err(|e| fail(format!("the bucket is not reachable: {e}")))?;
        Ok(S3Storage {
            store,
            prefix,
            redirect: config.redirect,
            expires: Duration::from_secs(config.expires),
            describe,
        })
    }

    fn path(&self, name: &PackageName, version: &Version) -> Path {
        // Validated parts only: no empty, `.` or `..` segment can arise.
        Path::parse(object_key(&self.prefix, name, version)).expect("validated object key")
    }

    fn error(&self, message: String) -> StorageError {
        StorageError {
            backend: self.describe.clone(),
            message,
        }
    }

    /// The client, the normalised prefix and the bucket's description, for
    /// the shared metadata in the same bucket (`src/shared.rs`).
    pub fn parts(&self) -> (AmazonS3, String, String) {
        (
            self.store.clone(),
            self.prefix.clone(),
            self.describe.clone(),
        )
    }

    pub(super) async fn put(
        &self,
        name: &PackageName,
        version: &Version,
        tarball: Bytes,
        integrity: &str,
    ) -> Result<(), StorageError> {
        self.put_mode(name, version, tarball, integrity, PutMode::Overwrite)
            .await
            .map_err(|e| match e {
                PutFailure::Taken => self.error(format!("cannot upload {name}@{version}: taken")),
                PutFailure::Other(e) => e,
            })
    }

    /// Uploads `name@version` in `mode`: `Create` (`If-None-Match: *`) and
    /// `Update` (`If-Match`) fail with [`PutFailure::Taken`] when the
    /// condition does not hold.
    pub async fn put_mode(
        &self,
        name: &PackageName,
        version: &Version,
        tarball: Bytes,
        integrity: &str,
        mode: PutMode,
    ) -> Result<(), PutFailure> {
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::ContentType, "application/octet-stream".into());
        attributes.insert(
            Attribute::Metadata("integrity".into()),
            integrity.to_string().into(),
        );
        let options = PutOptions {
            mode,
            attributes,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(
                &self.path(name, version),
                PutPayload::from(tarball),
                options,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Err(PutFailure::Taken),
            Err(e) => Err(PutFailure::Other(
                self.error(format!("cannot upload {name}@{version}: {e}")),
            )),
        }
    }

    /// The bytes and ETag of the tarball of `name@version`, if stored, read
    /// whole: only for a publish that found its key taken, bounded by the
    /// largest body nmr accepts (`limit` bytes).
    pub async fn read_whole(
        &self,
        name: &PackageName,
        version: &Version,
        limit: u64,
    ) -> Result<Option<(Bytes, String)>, StorageError> {
        match self.store.get(&self.path(name, version)).await {
            Ok(result) if result.meta.size > limit => Err(self.error(format!(
                "the stored tarball of {name}@{version} is larger than server.max_body_size"
            ))),
            Ok(result) => {
                let etag = result.meta.e_tag.clone().unwrap_or_default();
                let bytes = result
                    .bytes()
                    .await
                    .map_err(|e| self.error(format!("cannot read {name}@{version}: {e}")))?;
                Ok(Some((bytes, etag)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(format!("cannot read {name}@{version}: {e}"))),
        }
    }

    pub(super) async fn get(
        &self,
        name: &PackageName,
        version: &Version,
    ) -> Result<Option<Fetched>, StorageError> {
        let path = self.path(name, version);
        if self.redirect {
            let url = self
                .store
                .signed_url(http::Method::GET, &path, self.expires)
                .await
                .map_err(|e| self.error(format!("cannot presign {name}@{version}: {e}")))?;
            return Ok(Some(Fetched::Redirect(url.to_string())));
        }
        match self.store.get(&path).await {
            Ok(result) => {
                let length = result.meta.size;
                let body = SyncStream(Mutex::new(result.into_stream()))
                    .map(|chunk| chunk.map_err(std::io::Error::other));
                Ok(Some(Fetched::Stream(Download {
                    length,
                    body: Box::pin(body),
                })))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(format!("cannot read {name}@{version}: {e}"))),
        }
    }

    pub(super) async fn delete(
        &self,
        name: &PackageName,
        version: &Version,
    ) -> Result<(), StorageError> {
        match self.store.delete(&self.path(name, version)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(format!("cannot delete {name}@{version}: {e}"))),
        }
    }
}

/// Why a conditional upload did not happen.
#[derive(Debug)]
pub enum PutFailure {
    /// The condition failed: the key is taken (or changed).
    Taken,
    Other(StorageError),
}

/// `https://host` → `https://BUCKET.host`, the virtual-hosted form of a
/// custom endpoint (object_store expects the bucket in such an endpoint).
fn virtual_hosted_endpoint(endpoint: &str, bucket: &str) -> String {
    match endpoint.split_once("://") {
        Some((scheme, host)) if !host.starts_with(&format!("{bucket}.")) => {
            format!("{scheme}://{bucket}.{host}")
        }
        _ => endpoint.to_string(),
    }
}

/// Makes object_store's `Send` body stream `Sync`, as warp's streamed replies
/// require: the stream is only ever polled through `&mut`, so the mutex is
/// never contended.
struct SyncStream(Mutex<BoxStream<'static, object_store::Result<Bytes>>>);

impl Stream for SyncStream {
    type Item = object_store::Result<Bytes>;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let inner = self
            .get_mut()
            .0
            .get_mut()
            .unwrap_or_else(|p| p.into_inner());
        inner.poll_next_unpin(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_validated_parts_only() {
        let name = PackageName::parse("@acme/widget").unwrap();
        let version = Version::parse("1.0.0-beta.1").unwrap();
        assert_eq!(
            object_key("", &name, &version),
            "@acme/widget/-/widget-1.0.0-beta.1.tgz"
        );
        assert_eq!(
            object_key("npm/", &name, &version),
            "npm/@acme/widget/-/widget-1.0.0-beta.1.tgz"
        );
        // Whatever a request tries, the parts it could inject are refused first.
        assert!(PackageName::parse("@acme/../../x").is_err());
        assert!(Version::parse("1.0.0/../../x").is_err());
        let path = Path::parse(object_key("npm/", &name, &version)).unwrap();
        assert_eq!(path.parts().count(), 5);
    }

    #[test]
    fn prefixes_are_checked() {
        assert_eq!(normalise_prefix("").unwrap(), "");
        assert_eq!(normalise_prefix("npm").unwrap(), "npm/");
        assert_eq!(normalise_prefix("/team/npm/").unwrap(), "team/npm/");
        for bad in ["../x", "a//b", "a/./b", "a b", "a%2f"] {
            assert!(normalise_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn virtual_hosted_endpoints_carry_the_bucket() {
        assert_eq!(
            virtual_hosted_endpoint("https://s3.example", "b"),
            "https://b.s3.example"
        );
        assert_eq!(
            virtual_hosted_endpoint("https://b.s3.example", "b"),
            "https://b.s3.example"
        );
    }
}
