//! Tarballs as files on local disk, in npm's layout under a root directory:
//! `{root}/@scope/name/-/name-1.0.0.tgz`. A write goes to a temporary file in
//! the same directory, is fsynced, renamed into place, and the directory is
//! fsynced. Reads stream the file in 64 KiB chunks.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::{Download, Fetched, READ_CHUNK, StorageError};
use crate::name::{PackageName, Version};

/// Tarballs as files under `root`.
pub struct LocalStorage {
    root: PathBuf,
}

/// Distinguishes concurrent temporary files of one process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl LocalStorage {
    /// Creates `root` if needed and checks that it is writable.
    pub fn open(root: &Path) -> Result<LocalStorage, StorageError> {
        let err = |message: String| StorageError {
            backend: "local".into(),
            message,
        };
        std::fs::create_dir_all(root).map_err(|e| {
            err(format!(
                "storage.local.path: cannot create {}: {e}",
                root.display()
            ))
        })?;
        let probe = root.join(".nmr-write-probe");
        std::fs::write(&probe, b"ok")
            .and_then(|_| std::fs::remove_file(&probe))
            .map_err(|e| {
                err(format!(
                    "storage.local.path: {} is not writable: {e}",
                    root.display()
                ))
            })?;
        Ok(LocalStorage {
            root: root.to_path_buf(),
        })
    }

    /// The file of `name@version`: built from validated parts only.
    fn path(&self, name: &PackageName, version: &Version) -> PathBuf {
        let mut path = self.root.clone();
        if let Some(scope) = name.scope() {
            path.push(format!("@{scope}"));
        }
        path.push(name.basename());
        path.push("-");
        path.push(name.tarball_file(version));
        path
    }

    fn error(&self, message: String) -> StorageError {
        StorageError {
            backend: format!("local {}", self.root.display()),
            message,
        }
    }

    pub(super) async fn put(
        &self,
        name: &PackageName,
        version: &Version,
        tarball: Bytes,
    ) -> Result<(), StorageError> {
        let path = self.path(name, version);
        let result = tokio::task::spawn_blocking(move || write_durably(&path, &tarball)).await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.error(format!("cannot write {name}@{version}: {e}"))),
            Err(e) => Err(self.error(format!("write task failed: {e}"))),
        }
    }

    pub(super) async fn get(
        &self,
        name: &PackageName,
        version: &Version,
    ) -> Result<Option<Fetched>, StorageError> {
        let path = self.path(name, version);
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error(format!("cannot open {name}@{version}: {e}"))),
        };
        let length = file
            .metadata()
            .await
            .map_err(|e| self.error(format!("cannot stat {name}@{version}: {e}")))?
            .len();
        let body = tokio_util::io::ReaderStream::with_capacity(file, READ_CHUNK);
        Ok(Some(Fetched::Stream(Download {
            length,
            body: Box::pin(body),
        })))
    }

    pub(super) async fn delete(
        &self,
        name: &PackageName,
        version: &Version,
    ) -> Result<(), StorageError> {
        match tokio::fs::remove_file(self.path(name, version)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.error(format!("cannot delete {name}@{version}: {e}"))),
        }
    }
}

/// Writes `data` to `path` atomically: temporary file, fsync, rename,
/// fsync of the directory.
fn write_durably(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().expect("tarball paths have a directory");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn put_get_delete_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        let name = PackageName::parse("@acme/widget").unwrap();
        let v = Version::parse("1.0.0").unwrap();
        assert!(storage.get(&name, &v).await.unwrap().is_none());
        let data = Bytes::from(vec![7u8; 600 * 1024]);
        storage.put(&name, &v, data.clone()).await.unwrap();
        assert!(dir.path().join("@acme/widget/-/widget-1.0.0.tgz").is_file());
        let Some(Fetched::Stream(download)) = storage.get(&name, &v).await.unwrap() else {
            panic!("a local tarball is streamed")
        };
        assert_eq!(download.length, data.len() as u64);
        let chunks: Vec<Bytes> = download.body.map(|c| c.unwrap()).collect().await;
        assert!(chunks.len() > 1, "streamed in chunks");
        assert_eq!(chunks.concat(), data.to_vec());
        storage.delete(&name, &v).await.unwrap();
        storage.delete(&name, &v).await.unwrap();
        assert!(storage.get(&name, &v).await.unwrap().is_none());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("@acme/widget/-"))
            .unwrap()
            .collect();
        assert!(leftovers.is_empty(), "no temporary files left");
    }

    #[test]
    fn unwritable_root_is_reported() {
        let err = LocalStorage::open(Path::new("/proc/nmr-cannot-exist"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("storage.local.path"), "{err}");
    }
}
