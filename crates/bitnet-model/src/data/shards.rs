//! Token shards: little-endian `u32` token ids in a flat file, read through a memory map.

use crate::error::{Error, Result};
use std::path::Path;
use std::sync::Arc;

enum Backing {
    Owned(Vec<u32>),
    Mapped(memmap2::Mmap),
}

impl Backing {
    fn tokens(&self) -> &[u32] {
        match self {
            Self::Owned(v) => v,
            // Checked at open time: length is a multiple of 4 and the map is page aligned.
            Self::Mapped(m) => bytemuck::cast_slice(&m[..]),
        }
    }
}

/// A cheap-to-clone view of a token sequence (in memory or memory-mapped).
#[derive(Clone)]
pub struct TokenStream {
    backing: Arc<Backing>,
    start: usize,
    len: usize,
}

impl std::fmt::Debug for TokenStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStream")
            .field("start", &self.start)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl TokenStream {
    /// A stream over owned tokens.
    pub fn from_vec(tokens: Vec<u32>) -> Self {
        let len = tokens.len();
        Self {
            backing: Arc::new(Backing::Owned(tokens)),
            start: 0,
            len,
        }
    }

    /// Memory-maps a shard written by [`write_tokens`].
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len_bytes = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len_bytes % 4 != 0 {
            return Err(Error::data(
                path.display().to_string(),
                format!("token shard has {len_bytes} bytes, not a multiple of 4"),
            ));
        }
        if len_bytes == 0 {
            return Ok(Self::from_vec(Vec::new()));
        }
        // SAFETY: the file is opened read-only; shards are written once and never modified
        // while mapped (a concurrent writer would be a misuse this crate never does).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        if cfg!(target_endian = "big") {
            return Err(Error::data(
                path.display().to_string(),
                "token shards are little-endian; big-endian hosts are not supported",
            ));
        }
        // The map is page-aligned and the length a multiple of 4, so this cannot fail;
        // it is checked rather than assumed.
        bytemuck::try_cast_slice::<u8, u32>(&map[..]).map_err(|_| {
            Error::data(
                path.display().to_string(),
                "token shard memory is not 4-byte aligned",
            )
        })?;
        let len = (len_bytes / 4) as usize;
        Ok(Self {
            backing: Arc::new(Backing::Mapped(map)),
            start: 0,
            len,
        })
    }

    /// The tokens.
    pub fn tokens(&self) -> &[u32] {
        &self.backing.tokens()[self.start..self.start + self.len]
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the stream is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Shard `index` of `count` contiguous, nearly equal parts (DiLoCo workers use this).
    pub fn shard(&self, index: usize, count: usize) -> Self {
        let count = count.max(1);
        let index = index.min(count - 1);
        let a = self.len * index / count;
        let b = self.len * (index + 1) / count;
        Self {
            backing: self.backing.clone(),
            start: self.start + a,
            len: b - a,
        }
    }
}

/// Writes tokens as little-endian `u32`.
pub fn write_tokens(path: &Path, tokens: &[u32]) -> Result<()> {
    let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn shard_files_round_trip(tokens in proptest::collection::vec(any::<u32>(), 0..300), parts in 1usize..5) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.bin");
            write_tokens(&path, &tokens).unwrap();
            let s = TokenStream::open(&path).unwrap();
            prop_assert_eq!(s.tokens(), &tokens[..]);
            let joined: Vec<u32> = (0..parts).flat_map(|i| s.shard(i, parts).tokens().to_vec()).collect();
            prop_assert_eq!(joined, tokens);
        }
    }

    #[test]
    fn truncated_shard_is_rejected_with_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.bin");
        std::fs::write(&path, [1u8, 2, 3, 4, 5]).unwrap();
        let err = TokenStream::open(&path).unwrap_err().to_string();
        assert!(err.contains("bad.bin") && err.contains("5 bytes"), "{err}");
    }
}
