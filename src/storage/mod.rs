//! Tarball storage: where the bytes of each published version live, behind
//! one interface with two backends, local disk ([`local`]) and S3 ([`s3`]).
//!
//! Tarballs are addressed by validated name and version only, in npm's own
//! layout (`@scope/name/-/name-1.0.0.tgz`, [`PackageName::tarball_path`]).
//! The contract every backend keeps:
//! - [`Storage::put`] returns only once the bytes are durable; the caller
//!   commits the metadata naming them afterwards.
//! - [`Storage::get`] streams (never buffers a whole tarball) or hands the
//!   client a short-lived presigned URL.
//! - [`Storage::delete`] of an absent tarball succeeds.

pub mod cache;
pub mod local;
pub mod s3;

use std::io;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;

use crate::config::{StorageConfig, StorageType};
use crate::name::{PackageName, Version};

pub use local::LocalStorage;
pub use s3::S3Storage;

/// Chunk size of streamed reads from local disk.
const READ_CHUNK: usize = 64 * 1024;

/// A tarball body being streamed to a client.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + Sync>>;

/// A tarball ready to send: its length in bytes and its bytes as a stream.
pub struct Download {
    pub length: u64,
    pub body: ByteStream,
}

/// How a stored tarball reaches the client.
pub enum Fetched {
    /// nmr streams the bytes itself.
    Stream(Download),
    /// The client is redirected to this presigned URL (S3 with
    /// `storage.s3.redirect`), which carries no user credentials.
    Redirect(String),
}

/// A storage failure; the message names the backend and the operation.
#[derive(Debug, thiserror::Error)]
#[error("tarball storage ({backend}): {message}")]
pub struct StorageError {
    pub backend: String,
    pub message: String,
}

/// The configured tarball backend.
pub enum Storage {
    /// Files under a root directory.
    Local(LocalStorage),
    /// Objects in an S3 bucket.
    S3(Box<S3Storage>),
}

impl Storage {
    /// Builds the backend `config` names and checks it is usable: the local
    /// root must be writable, the S3 bucket reachable.
    pub async fn from_config(config: &StorageConfig) -> Result<Storage, StorageError> {
        match config.kind {
            StorageType::Local => Ok(Storage::Local(LocalStorage::open(&config.local.path)?)),
            StorageType::S3 => Ok(Storage::S3(Box::new(S3Storage::open(&config.s3).await?))),
        }
    }

    /// Stores `tarball` as `name@version`, durably. `integrity` (npm's
    /// `sha512-…`) is recorded beside the object where the backend can.
    /// Callers only write versions the packument does not hold live.
    pub async fn put(
        &self,
        name: &PackageName,
        version: &Version,
        tarball: Bytes,
        integrity: &str,
    ) -> Result<(), StorageError> {
        match self {
            Storage::Local(local) => local.put(name, version, tarball).await,
            Storage::S3(s3) => s3.put(name, version, tarball, integrity).await,
        }
    }

    /// Fetches `name@version` for a client; `None` when it is not stored.
    pub async fn get(
        &self,
        name: &PackageName,
        version: &Version,
    ) -> Result<Option<Fetched>, StorageError> {
        match self {
            Storage::Local(local) => local.get(name, version).await,
            Storage::S3(s3) => s3.get(name, version).await,
        }
    }

    /// Deletes `name@version`; deleting an absent tarball succeeds.
    pub async fn delete(&self, name: &PackageName, version: &Version) -> Result<(), StorageError> {
        match self {
            Storage::Local(local) => local.delete(name, version).await,
            Storage::S3(s3) => s3.delete(name, version).await,
        }
    }
}
