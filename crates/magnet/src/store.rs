//! The only meeting place of the parties: a create-only object store (`file://` or S3
//! through `object_store`, or in memory for in-process runs) under which every read is
//! bounded. [`Store::get_limited`] asks the backend for the object's size first and refuses
//! it before reading when it exceeds the limit its kind has in the protocol, so a hostile
//! party cannot make another one allocate without bound.
//!
//! [`Store`] is also a [`diloco::exchange::Exchange`], so diloco's coordinator and workers
//! publish model versions, steps and manifests through the same store.

use crate::error::{Error, Result};
use diloco::exchange::{Exchange, InProcess};
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::sync::Arc;
use std::time::{Duration, Instant};

enum Backend {
    Memory(InProcess),
    Remote {
        store: Arc<dyn ObjectStore>,
        prefix: String,
        rt: tokio::runtime::Runtime,
    },
}

/// A create-only object store with bounded reads.
pub struct Store {
    backend: Backend,
    url: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn diloco_err(key: &str, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> diloco::Error {
    diloco::Error::Exchange {
        key: key.into(),
        source: e.into(),
    }
}

impl Store {
    /// An in-memory store (one process; the in-process run).
    pub fn memory() -> Self {
        Self {
            backend: Backend::Memory(InProcess::new()),
            url: "memory://".into(),
        }
    }

    /// Opens `file:///abs/dir` (created if missing), `s3://bucket/prefix` (settings from the
    /// usual `AWS_*` variables; `MAGNET_S3_ENDPOINT` names an S3-compatible endpoint, plain
    /// `http://` allowed then) or `memory://`.
    pub fn open(url: &str) -> Result<Self> {
        let store_err = |source| Error::Store {
            key: url.into(),
            source,
        };
        if url == "memory://" {
            return Ok(Self::memory());
        }
        let (store, prefix): (Arc<dyn ObjectStore>, String) =
            if let Some(path) = url.strip_prefix("file://") {
                std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
                let fs = LocalFileSystem::new_with_prefix(path).map_err(store_err)?;
                (Arc::new(fs), String::new())
            } else if let Some(rest) = url.strip_prefix("s3://") {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(Error::config(
                        "store",
                        "s3 URL needs a bucket: s3://bucket/prefix",
                    ));
                }
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_conditional_put(S3ConditionalPut::ETagMatch);
                if let Ok(endpoint) = std::env::var("MAGNET_S3_ENDPOINT") {
                    b = b
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_endpoint(endpoint);
                }
                let prefix = prefix.trim_matches('/');
                (
                    Arc::new(b.build().map_err(store_err)?),
                    if prefix.is_empty() {
                        String::new()
                    } else {
                        format!("{prefix}/")
                    },
                )
            } else {
                return Err(Error::config(
                    "store",
                    format!(
                        "unsupported store URL `{url}` (file:///dir, s3://bucket/prefix, memory://)"
                    ),
                ));
            };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("tokio runtime", e))?;
        Ok(Self {
            backend: Backend::Remote { store, prefix, rt },
            url: url.into(),
        })
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(prefix: &str, key: &str) -> Path {
        Path::from(format!("{prefix}{key}"))
    }

    /// Writes `key` unless it exists; `Ok(false)` when it already holds exactly `bytes`
    /// (an idempotent retry after a crash), an error when it holds something else.
    pub fn put_idempotent(&self, key: &str, bytes: &[u8], limit: u64) -> Result<bool> {
        match self.put_new(key, bytes) {
            Ok(()) => Ok(true),
            Err(diloco::Error::AlreadyExists { .. }) => {
                let old = self.get_limited(key, limit)?;
                if old.as_deref() == Some(bytes) {
                    Ok(false)
                } else {
                    Err(Error::Protocol(format!(
                        "`{key}` already holds different bytes (another party wrote it, or the \
                         run is not deterministic)"
                    )))
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The object's bytes, or `None` if absent; refused with [`Error::TooLarge`] before it
    /// is read when the backend reports more than `limit` bytes.
    pub fn get_limited(&self, key: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        let too_large = |size: u64| Error::TooLarge {
            key: key.into(),
            size,
            limit,
        };
        match &self.backend {
            Backend::Memory(m) => {
                let b = m.get(key)?;
                match b {
                    Some(b) if b.len() as u64 > limit => Err(too_large(b.len() as u64)),
                    other => Ok(other),
                }
            }
            Backend::Remote { store, prefix, rt } => {
                let path = Self::path(prefix, key);
                rt.block_on(async {
                    let meta = match store.head(&path).await {
                        Ok(m) => m,
                        Err(object_store::Error::NotFound { .. }) => return Ok(None),
                        Err(source) => {
                            return Err(Error::Store {
                                key: key.into(),
                                source,
                            });
                        }
                    };
                    if meta.size > limit {
                        return Err(too_large(meta.size));
                    }
                    if meta.size == 0 {
                        return Ok(Some(Vec::new()));
                    }
                    // Ask for exactly the size seen: a backend cannot stream more than that.
                    let b = store
                        .get_range(&path, 0..meta.size)
                        .await
                        .map_err(|source| Error::Store {
                            key: key.into(),
                            source,
                        })?;
                    if b.len() as u64 > limit {
                        return Err(too_large(b.len() as u64));
                    }
                    Ok(Some(b.to_vec()))
                })
            }
        }
    }

    /// Polls `key` until it exists (bounded read) or `timeout` passes.
    pub fn wait_for(
        &self,
        key: &str,
        limit: u64,
        timeout: Duration,
        poll: Duration,
    ) -> Result<Vec<u8>> {
        let start = Instant::now();
        loop {
            if let Some(b) = self.get_limited(key, limit)? {
                return Ok(b);
            }
            if start.elapsed() >= timeout {
                return Err(Error::Timeout {
                    key: key.into(),
                    waited_ms: start.elapsed().as_millis(),
                });
            }
            std::thread::sleep(poll);
        }
    }
}

impl Exchange for Store {
    fn put_new(&self, key: &str, bytes: &[u8]) -> diloco::Result<()> {
        match &self.backend {
            Backend::Memory(m) => m.put_new(key, bytes),
            Backend::Remote { store, prefix, rt } => {
                let opts = PutOptions {
                    mode: PutMode::Create,
                    ..PutOptions::default()
                };
                let payload = PutPayload::from(bytes.to_vec());
                match rt.block_on(store.put_opts(&Self::path(prefix, key), payload, opts)) {
                    Ok(_) => Ok(()),
                    Err(
                        object_store::Error::AlreadyExists { .. }
                        | object_store::Error::Precondition { .. },
                    ) => Err(diloco::Error::AlreadyExists { key: key.into() }),
                    Err(e) => Err(diloco_err(key, e)),
                }
            }
        }
    }

    /// Unbounded read, used by diloco's protocol for the objects only the operator writes
    /// (model versions, steps, manifests). Everything a worker or validator wrote is read
    /// with [`Store::get_limited`].
    fn get(&self, key: &str) -> diloco::Result<Option<Vec<u8>>> {
        match &self.backend {
            Backend::Memory(m) => m.get(key),
            Backend::Remote { store, prefix, rt } => {
                let path = Self::path(prefix, key);
                rt.block_on(async {
                    match store.get(&path).await {
                        Ok(r) => r
                            .bytes()
                            .await
                            .map(|b| Some(b.to_vec()))
                            .map_err(|e| diloco_err(key, e)),
                        Err(object_store::Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(diloco_err(key, e)),
                    }
                })
            }
        }
    }

    fn list(&self, prefix: &str) -> diloco::Result<Vec<String>> {
        match &self.backend {
            Backend::Memory(m) => m.list(prefix),
            Backend::Remote {
                store,
                prefix: root,
                rt,
            } => {
                let path = Self::path(root, prefix.trim_end_matches('/'));
                let listing = rt
                    .block_on(store.list_with_delimiter(Some(&path)))
                    .map_err(|e| diloco_err(prefix, e))?;
                let mut keys: Vec<String> = listing
                    .objects
                    .into_iter()
                    .filter_map(|m| {
                        m.location
                            .as_ref()
                            .strip_prefix(root.as_str())
                            .map(str::to_string)
                    })
                    .collect();
                keys.sort();
                Ok(keys)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounded_before_reading_and_writes_are_create_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = Store::open(&format!("file://{}", dir.path().join("s").display())).unwrap();
        for s in [Store::memory(), file] {
            s.put_new("a/x.bin", &[7; 100]).unwrap();
            assert!(matches!(
                s.put_new("a/x.bin", b"other"),
                Err(diloco::Error::AlreadyExists { .. })
            ));
            assert_eq!(s.get_limited("a/x.bin", 100).unwrap().unwrap().len(), 100);
            assert!(matches!(
                s.get_limited("a/x.bin", 99),
                Err(Error::TooLarge {
                    size: 100,
                    limit: 99,
                    ..
                })
            ));
            assert_eq!(s.get_limited("a/none", 10).unwrap(), None);
            assert!(!s.put_idempotent("a/x.bin", &[7; 100], 100).unwrap());
            assert!(s.put_idempotent("a/x.bin", &[8; 100], 100).is_err());
            s.put_new("a/empty", b"").unwrap();
            assert_eq!(s.get_limited("a/empty", 0).unwrap().unwrap(), b"");
            assert_eq!(s.list("a/").unwrap(), vec!["a/empty", "a/x.bin"]);
        }
        assert!(Store::open("ftp://x").is_err());
    }
}
