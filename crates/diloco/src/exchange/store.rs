//! The exchange on object storage through the `object_store` crate: S3-compatible
//! servers (AWS, R2, MinIO, moto...), and local or shared filesystems.
//!
//! `object_store` is async; a private current-thread tokio runtime blocks on each call
//! so the [`Exchange`] trait stays synchronous (training loops are synchronous and one
//! request at a time is all DiLoCo's few large objects per round need).

use super::Exchange;
use crate::error::{Error, Result};
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::sync::Arc;

/// An [`Exchange`] on an `object_store` backend under a key prefix.
#[derive(Debug)]
pub struct ObjectStoreExchange {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    url: String,
    rt: tokio::runtime::Runtime,
}

impl ObjectStoreExchange {
    /// Opens `file:///abs/dir` (created if missing) or `s3://bucket/prefix`.
    ///
    /// S3 settings come from the usual `AWS_*` variables (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`); the
    /// endpoint may also be given as `MAGNET_S3_ENDPOINT` (plain `http://` allowed then).
    /// Create-only writes use S3 conditional puts (`If-None-Match: *`).
    pub fn open(url: &str) -> Result<Self> {
        let err = |source: Box<dyn std::error::Error + Send + Sync>| Error::Exchange {
            key: url.into(),
            source,
        };
        let (store, prefix): (Arc<dyn ObjectStore>, String) =
            if let Some(path) = url.strip_prefix("file://") {
                std::fs::create_dir_all(path).map_err(|e| err(Box::new(e)))?;
                let fs = LocalFileSystem::new_with_prefix(path).map_err(|e| err(Box::new(e)))?;
                (Arc::new(fs), String::new())
            } else if let Some(rest) = url.strip_prefix("s3://") {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(err("s3 URL needs a bucket: s3://bucket/prefix".into()));
                }
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_conditional_put(S3ConditionalPut::ETagMatch);
                if let Ok(endpoint) = std::env::var("MAGNET_S3_ENDPOINT") {
                    b = b
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_endpoint(endpoint);
                }
                let s3 = b.build().map_err(|e| err(Box::new(e)))?;
                let prefix = prefix.trim_matches('/');
                (
                    Arc::new(s3),
                    if prefix.is_empty() {
                        String::new()
                    } else {
                        format!("{prefix}/")
                    },
                )
            } else {
                return Err(err(
                    "unsupported store URL (use file:///dir or s3://bucket/prefix)".into(),
                ));
            };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| err(Box::new(e)))?;
        Ok(Self {
            store,
            prefix,
            url: url.into(),
            rt,
        })
    }

    fn path(&self, key: &str) -> Path {
        Path::from(format!("{}{key}", self.prefix))
    }

    fn err(&self, key: &str, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
        Error::Exchange {
            key: format!("{}/{key}", self.url.trim_end_matches('/')),
            source: e.into(),
        }
    }
}

impl Exchange for ObjectStoreExchange {
    fn put_new(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let payload = PutPayload::from(bytes.to_vec());
        match self
            .rt
            .block_on(self.store.put_opts(&self.path(key), payload, opts))
        {
            Ok(_) => Ok(()),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Err(Error::AlreadyExists { key: key.into() }),
            Err(e) => Err(self.err(key, e)),
        }
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(key);
        self.rt.block_on(async {
            match self.store.get(&path).await {
                Ok(r) => r
                    .bytes()
                    .await
                    .map(|b| Some(b.to_vec()))
                    .map_err(|e| self.err(key, e)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.err(key, e)),
            }
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let path = self.path(prefix.trim_end_matches('/'));
        let listing = self
            .rt
            .block_on(self.store.list_with_delimiter(Some(&path)))
            .map_err(|e| self.err(prefix, e))?;
        let mut keys: Vec<String> = listing
            .objects
            .into_iter()
            .filter_map(|m| {
                m.location
                    .as_ref()
                    .strip_prefix(&self.prefix)
                    .map(str::to_string)
            })
            .collect();
        keys.sort();
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_filesystem_is_create_only() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("run").display());
        let ex = ObjectStoreExchange::open(&url).unwrap();
        ex.put_new("rounds/1/a.bin", b"hello").unwrap();
        assert!(matches!(
            ex.put_new("rounds/1/a.bin", b"x"),
            Err(Error::AlreadyExists { .. })
        ));
        assert_eq!(ex.get("rounds/1/a.bin").unwrap().unwrap(), b"hello");
        assert_eq!(ex.get("rounds/1/zz").unwrap(), None);
        ex.put_new("rounds/1/b.bin", b"").unwrap();
        assert_eq!(
            ex.list("rounds/1/").unwrap(),
            vec!["rounds/1/a.bin", "rounds/1/b.bin"]
        );
        assert!(ex.list("rounds/2/").unwrap().is_empty());
        assert!(ObjectStoreExchange::open("ftp://x").is_err());
    }
}
