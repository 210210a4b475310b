//! Where workers and the coordinator meet: a narrow key/value interface with
//! create-only writes, which both an in-process map and object storage provide.
//!
//! The round protocol ([`crate::protocol`]) is written once against this trait.

#[cfg(feature = "store")]
pub mod store;

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A flat namespace of immutable objects.
pub trait Exchange: Send + Sync {
    /// Writes `key` only if it does not exist yet ([`Error::AlreadyExists`] otherwise), so
    /// a round's objects can never be overwritten.
    fn put_new(&self, key: &str, bytes: &[u8]) -> Result<()>;
    /// The object's bytes, or `None` if absent.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Keys directly under `prefix` (which ends with `/`), sorted.
    fn list(&self, prefix: &str) -> Result<Vec<String>>;
}

/// Polls `key` until it exists or `timeout` passes.
pub fn wait_for(
    ex: &dyn Exchange,
    key: &str,
    timeout: Duration,
    poll: Duration,
) -> Result<Vec<u8>> {
    let start = Instant::now();
    loop {
        if let Some(b) = ex.get(key)? {
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

/// An in-memory exchange shared by threads of one process; deterministic because the
/// protocol sorts everything it lists.
#[derive(Debug, Default)]
pub struct InProcess {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl InProcess {
    /// An empty exchange.
    pub fn new() -> Self {
        Self::default()
    }

    /// Total bytes stored (for tests and reports).
    pub fn stored_bytes(&self) -> usize {
        self.objects
            .lock()
            .expect("lock")
            .values()
            .map(Vec::len)
            .sum()
    }
}

impl Exchange for InProcess {
    fn put_new(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let mut m = self.objects.lock().expect("exchange lock poisoned");
        if m.contains_key(key) {
            return Err(Error::AlreadyExists { key: key.into() });
        }
        m.insert(key.into(), bytes.to_vec());
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .objects
            .lock()
            .expect("exchange lock poisoned")
            .get(key)
            .cloned())
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let m = self.objects.lock().expect("exchange lock poisoned");
        Ok(m.range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| !k[prefix.len()..].contains('/'))
            .map(|(k, _)| k.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_process_is_create_only_and_lists_one_level() {
        let ex = InProcess::new();
        ex.put_new("r/1/a", b"x").unwrap();
        ex.put_new("r/1/b", b"y").unwrap();
        ex.put_new("r/1/sub/c", b"z").unwrap();
        assert!(matches!(
            ex.put_new("r/1/a", b"q"),
            Err(Error::AlreadyExists { .. })
        ));
        assert_eq!(ex.get("r/1/a").unwrap().unwrap(), b"x");
        assert_eq!(ex.list("r/1/").unwrap(), vec!["r/1/a", "r/1/b"]);
        let err = wait_for(
            &ex,
            "nope",
            Duration::from_millis(5),
            Duration::from_millis(1),
        );
        assert!(matches!(err, Err(Error::Timeout { .. })));
    }
}
