//! Signed checkpoints (tree heads): `origin, size, root, time`, signed by the log operator.
//!
//! The body mirrors C2SP `tlog-checkpoint` (origin, size, root) plus a time, encoded canonically
//! with its own domain tag, so a checkpoint signature can never be confused with a message
//! signature made by the same operator key.

use std::io::Write;
use std::path::Path;

use crate::codec::{Reader, Writer, hex};
use crate::error::{Error, Result};
use crate::identity::{Keypair, PublicKey, sync_parent, verify_strict};
use crate::merkle::Hash;

const TAG: &str = "magnet-ledger/v1/checkpoint";

/// A signed tree head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Ledger name.
    pub origin: String,
    /// Number of leaves covered.
    pub size: u64,
    /// RFC 6962 root of the first `size` leaves.
    pub root: Hash,
    /// Unix seconds when signed (informational; not used in consensus).
    pub time: u64,
    /// Operator key that signed it.
    pub signer: PublicKey,
    /// Signature over [`Checkpoint::body`].
    pub sig: [u8; 64],
}

impl Checkpoint {
    fn body_of(origin: &str, size: u64, root: &Hash, time: u64, signer: &PublicKey) -> Vec<u8> {
        let mut w = Writer::new();
        w.str(TAG)
            .str(origin)
            .u64(size)
            .fixed(root)
            .u64(time)
            .fixed(&signer.0);
        w.finish()
    }

    /// Signs a new checkpoint.
    pub fn sign(origin: &str, size: u64, root: Hash, time: u64, key: &Keypair) -> Self {
        let signer = key.public();
        let sig = key.sign(&Self::body_of(origin, size, &root, time, &signer));
        Self {
            origin: origin.to_string(),
            size,
            root,
            time,
            signer,
            sig,
        }
    }

    /// The signed bytes.
    pub fn body(&self) -> Vec<u8> {
        Self::body_of(&self.origin, self.size, &self.root, self.time, &self.signer)
    }

    /// Stored form: body then signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.body();
        b.extend_from_slice(&self.sig);
        b
    }

    /// Parses and verifies (strictly) the signature; `expected` pins the operator key.
    pub fn from_bytes(bytes: &[u8], expected: Option<&PublicKey>) -> Result<Self> {
        if bytes.len() < 64 || bytes.len() > 4096 {
            return Err(Error::decode(
                0,
                format!("checkpoint of {} bytes", bytes.len()),
            ));
        }
        let (body, sig) = bytes.split_at(bytes.len() - 64);
        let mut r = Reader::new(body);
        let at = r.offset();
        if r.str(64, "checkpoint tag")? != TAG {
            return Err(Error::decode(at, "not a checkpoint"));
        }
        let cp = Self {
            origin: r.str(64, "origin")?,
            size: r.u64("size")?,
            root: r.array("root")?,
            time: r.u64("time")?,
            signer: PublicKey(r.array("signer")?),
            sig: sig.try_into().expect("64 bytes"),
        };
        r.finish("checkpoint")?;
        if let Some(k) = expected
            && *k != cp.signer
        {
            return Err(Error::Integrity(format!(
                "checkpoint signed by {}, expected operator {}",
                cp.signer, k
            )));
        }
        verify_strict(&cp.signer, body, &cp.sig)
            .map_err(|e| Error::Integrity(format!("checkpoint signature: {e}")))?;
        Ok(cp)
    }

    /// Human-readable note in the spirit of C2SP signed notes.
    pub fn to_note(&self) -> String {
        format!(
            "{}\n{}\n{}\ntime {}\n\n— {} {}\n",
            self.origin,
            self.size,
            hex(&self.root),
            self.time,
            self.signer,
            hex(&self.sig)
        )
    }

    /// Writes `path` atomically and durably: temp file, fsync, rename, fsync directory.
    pub fn write_atomic(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(&self.to_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        sync_parent(path)
    }

    /// Reads and verifies a checkpoint file.
    pub fn read(path: &Path, expected: Option<&PublicKey>) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.len() > 4096 {
            return Err(Error::Integrity(format!(
                "{}: {} bytes is not a checkpoint",
                path.display(),
                meta.len()
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, expected).map_err(|e| match e {
            Error::Integrity(s) => Error::Integrity(format!("{}: {s}", path.display())),
            Error::Decode { offset, what } => {
                Error::Integrity(format!("{}: byte {offset}: {what}", path.display()))
            }
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_flip_is_detected() {
        let k = Keypair::from_seed([5; 32]);
        let cp = Checkpoint::sign("test-origin", 42, [7; 32], 1_700_000_000, &k);
        let bytes = cp.to_bytes();
        assert_eq!(
            Checkpoint::from_bytes(&bytes, Some(&k.public())).unwrap(),
            cp
        );
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut b = bytes.clone();
                b[i] ^= bit;
                assert!(
                    Checkpoint::from_bytes(&b, Some(&k.public())).is_err(),
                    "flip at byte {i} accepted"
                );
            }
        }
        let other = Keypair::from_seed([6; 32]);
        assert!(Checkpoint::from_bytes(&bytes, Some(&other.public())).is_err());
        assert!(cp.to_note().contains("test-origin\n42\n"));
    }
}
