//! Ed25519 identities: key generation, key files, strict public-key checks and verification.
//!
//! Why `verify_strict` only: dalek's plain `verify` accepts low-order public keys and low-order
//! `R` points. With the identity key `01 00…00` the signature `(R = identity, s = 0)` passes
//! `verify` for *every* message (a universal forgery), and non-canonical encodings make one
//! signature have several byte forms. `verify_strict` rejects small-order `A` and `R` and
//! compares `R` byte-exactly, so a signature verifies for one canonical meaning only. On top of
//! that, registration refuses any key that is not a canonical encoding of a point in the
//! prime-order subgroup ([`PublicKey::parse`]).
//!
//! Batch verification ([`verify_many`]) is used only for keys that passed [`PublicKey::parse`]
//! (prime-order subgroup) and signatures whose `R` is canonical and not of small order
//! ([`r_is_batchable`]); everything else, and every member of a failing batch, gets
//! `verify_strict`. Batch verification never accepts a forgery. The one residual difference
//! (docs/ledger.md): dalek's batch equation is cofactorless with random 128-bit weights, so a
//! key holder who deliberately puts a small-order *component* into their own `R` can make a
//! signature that a batch accepts with probability up to 1/2 while `verify_strict` refuses it.
//! Only the key holder can do this; `ledger verify` checks every entry with `verify_strict` and
//! names such an entry.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::codec::{hex, unhex};
use crate::error::{Error, Rejection, Result};

/// A registered identity: 32 canonical bytes of an Ed25519 point of prime order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", &hex(&self.0)[..16])
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl PublicKey {
    /// Checks that `bytes` is a canonical encoding of a point in the prime-order subgroup.
    /// Refuses weak (small-order) keys, keys with a torsion component and non-canonical
    /// encodings, each of which lets one signature mean more than one thing.
    pub fn parse(bytes: [u8; 32]) -> Result<VerifyingKey, Rejection> {
        let weak = || Rejection::WeakKey { key: hex(&bytes) };
        let vk = VerifyingKey::from_bytes(&bytes).map_err(|_| weak())?;
        if vk.is_weak() {
            return Err(weak());
        }
        let point = vk.to_edwards();
        if point.compress().to_bytes() != bytes || !point.is_torsion_free() {
            return Err(weak());
        }
        Ok(vk)
    }

    /// Short hex prefix for humans.
    pub fn short(&self) -> String {
        hex(&self.0[..6])
    }
}

/// A signing identity. The secret is zeroized on drop (dalek's `zeroize` feature).
#[derive(Clone)]
pub struct Keypair {
    sk: SigningKey,
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keypair({:?})", self.public())
    }
}

const KEY_HEADER: &str = "magnet-ledger ed25519 secret key v1";

impl Keypair {
    /// Fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        Self {
            sk: SigningKey::generate(&mut rng),
        }
    }

    /// Deterministic key from a 32-byte seed (tests and the demo: same seed, same keys).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            sk: SigningKey::from_bytes(&seed),
        }
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.sk.verifying_key().to_bytes())
    }

    /// Signs `msg` (callers pass canonical, domain-tagged bytes).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.sk.sign(msg).to_bytes()
    }

    /// Writes the secret to a new file created with mode 0600 (never overwrites), then fsyncs
    /// the file and its directory so an acknowledged key is not lost in a crash.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(|e| Error::io(path, e))?;
        let text = format!(
            "{KEY_HEADER}\n{}\npublic {}\n",
            hex(&self.sk.to_bytes()),
            self.public()
        );
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io(path, e))?;
        sync_parent(path)
    }

    /// Reads a key file written by [`Keypair::save`]; refuses files readable by group or others.
    pub fn load(path: &Path) -> Result<Self> {
        let key_err = |what: String| Error::Key {
            path: path.to_path_buf(),
            what,
        };
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(key_err(format!(
                    "mode {mode:o} lets others read the secret; expected 600"
                )));
            }
        }
        if meta.len() > 4096 {
            return Err(key_err(format!("{} bytes is too large", meta.len())));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut lines = text.lines();
        if lines.next() != Some(KEY_HEADER) {
            return Err(key_err(format!("line 1 is not `{KEY_HEADER}`")));
        }
        let secret = lines
            .next()
            .ok_or_else(|| key_err("line 2 (secret) missing".into()))?;
        let secret = unhex::<32>(secret).map_err(|e| key_err(format!("line 2: {e}")))?;
        let kp = Self::from_seed(secret);
        if let Some(line) = lines.next() {
            let want = format!("public {}", kp.public());
            if line != want {
                return Err(key_err(
                    "line 3: public key does not match the secret".into(),
                ));
            }
        }
        Ok(kp)
    }
}

/// fsync the directory holding `path`, so a created or renamed entry is durable.
pub(crate) fn sync_parent(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// `verify_strict` of `sig` over `msg` by `key`; the only single-signature check the ledger uses.
pub fn verify_strict(key: &PublicKey, msg: &[u8], sig: &[u8; 64]) -> Result<(), Rejection> {
    let vk = PublicKey::parse(key.0)?;
    vk.verify_strict(msg, &Signature::from_bytes(sig))
        .map_err(|_| Rejection::BadSignature {
            signer: key.to_string(),
        })
}

/// True when the `R` half of a signature is a canonical encoding of a point that is not of small
/// order: the same conditions `verify_strict` puts on `R`. (A full torsion-freeness check costs a
/// scalar multiplication, as much as a verification, so it is not done here; see the module
/// docs for the residual case.)
pub fn r_is_batchable(sig: &[u8; 64]) -> bool {
    let r: [u8; 32] = sig[..32].try_into().expect("32 bytes");
    // A VerifyingKey is exactly "a decompressed point"; reuse its decoding for R.
    VerifyingKey::from_bytes(&r)
        .is_ok_and(|p| !p.is_weak() && p.to_edwards().compress().to_bytes() == r)
}

/// One item for [`verify_many`].
#[derive(Debug, Clone, Copy)]
pub struct SigItem<'a> {
    /// Signer.
    pub key: &'a PublicKey,
    /// Signed bytes.
    pub msg: &'a [u8],
    /// Signature.
    pub sig: &'a [u8; 64],
}

/// Verifies many signatures; result `i` is exactly what [`verify_strict`] says for item `i`.
/// Chunks of well-formed items go through dalek's batch verification; a failing chunk is
/// re-checked one by one, so the answer never depends on the batching.
pub fn verify_many(items: &[SigItem<'_>]) -> Vec<Result<(), Rejection>> {
    const CHUNK: usize = 64;
    let mut out: Vec<Option<Result<(), Rejection>>> = vec![None; items.len()];
    let mut idx = Vec::with_capacity(CHUNK);
    let mut vks = Vec::with_capacity(CHUNK);
    let flush = |idx: &mut Vec<usize>,
                 vks: &mut Vec<VerifyingKey>,
                 out: &mut Vec<Option<Result<(), Rejection>>>| {
        if idx.is_empty() {
            return;
        }
        let msgs: Vec<&[u8]> = idx.iter().map(|&i| items[i].msg).collect();
        let sigs: Vec<Signature> = idx
            .iter()
            .map(|&i| Signature::from_bytes(items[i].sig))
            .collect();
        if ed25519_dalek::verify_batch(&msgs, &sigs, vks).is_ok() {
            for &i in idx.iter() {
                out[i] = Some(Ok(()));
            }
        } else {
            for &i in idx.iter() {
                let it = &items[i];
                out[i] = Some(verify_strict(it.key, it.msg, it.sig));
            }
        }
        idx.clear();
        vks.clear();
    };
    for (i, it) in items.iter().enumerate() {
        match PublicKey::parse(it.key.0) {
            Err(e) => out[i] = Some(Err(e)),
            // A non-prime-order R is only ever produced on purpose; give it the strict check.
            Ok(_) if !r_is_batchable(it.sig) => {
                out[i] = Some(verify_strict(it.key, it.msg, it.sig));
            }
            Ok(vk) => {
                idx.push(i);
                vks.push(vk);
                if idx.len() == CHUNK {
                    flush(&mut idx, &mut vks, &mut out);
                }
            }
        }
    }
    flush(&mut idx, &mut vks, &mut out);
    out.into_iter()
        .map(|r| r.expect("every item decided"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity_key() -> [u8; 32] {
        let mut k = [0u8; 32];
        k[0] = 1;
        k
    }

    #[test]
    fn weak_identity_key_forgery_is_refused() {
        let k = identity_key();
        assert!(matches!(
            PublicKey::parse(k),
            Err(Rejection::WeakKey { .. })
        ));
        // (R = identity, s = 0): the universal forgery `verify` would accept.
        let mut sig = [0u8; 64];
        sig[0] = 1;
        let vk = VerifyingKey::from_bytes(&k).unwrap();
        let s = Signature::from_bytes(&sig);
        assert!(vk.verify_strict(b"any message", &s).is_err());
        assert!(verify_strict(&PublicKey(k), b"any message", &sig).is_err());
    }

    #[test]
    fn sign_verify_and_tamper() {
        let kp = Keypair::from_seed([7; 32]);
        let sig = kp.sign(b"hello");
        verify_strict(&kp.public(), b"hello", &sig).unwrap();
        assert!(verify_strict(&kp.public(), b"hellp", &sig).is_err());
        let mut bad = sig;
        bad[40] ^= 1;
        assert!(verify_strict(&kp.public(), b"hello", &bad).is_err());
    }

    #[test]
    fn key_with_torsion_component_is_refused() {
        // Honest key plus a point of order 2 (0, -1): on the curve, not weak, but mixed order.
        let kp = Keypair::from_seed([3; 32]);
        let p = VerifyingKey::from_bytes(&kp.public().0)
            .unwrap()
            .to_edwards();
        let mut t = [0u8; 32];
        t[0] = 0xec;
        t[1..31].fill(0xff);
        t[31] = 0x7f; // y = p - 1 = -1
        let t = VerifyingKey::from_bytes(&t).unwrap().to_edwards();
        let mixed = (p + t).compress().to_bytes();
        assert!(!VerifyingKey::from_bytes(&mixed).unwrap().is_weak());
        assert!(matches!(
            PublicKey::parse(mixed),
            Err(Rejection::WeakKey { .. })
        ));
    }

    #[test]
    fn verify_many_matches_strict_per_item() {
        let kps: Vec<Keypair> = (0..150u8).map(|i| Keypair::from_seed([i; 32])).collect();
        let pubs: Vec<PublicKey> = kps.iter().map(Keypair::public).collect();
        let msgs: Vec<Vec<u8>> = (0..150u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let mut sigs: Vec<[u8; 64]> = kps.iter().zip(&msgs).map(|(k, m)| k.sign(m)).collect();
        sigs[5][10] ^= 0x40; // forged
        sigs[100][63] |= 0x80; // s out of range (malleated)
        let items: Vec<SigItem<'_>> = (0..150)
            .map(|i| SigItem {
                key: &pubs[i],
                msg: &msgs[i],
                sig: &sigs[i],
            })
            .collect();
        let res = verify_many(&items);
        for (i, r) in res.iter().enumerate() {
            assert_eq!(r.is_ok(), i != 5 && i != 100, "item {i}");
            assert_eq!(
                r.is_ok(),
                verify_strict(&pubs[i], &msgs[i], &sigs[i]).is_ok()
            );
        }
    }

    #[test]
    fn key_file_is_0600_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        let kp = Keypair::from_seed([9; 32]);
        kp.save(&p).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            // never overwrite an existing key
            assert!(kp.save(&p).is_err());
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(Keypair::load(&p).unwrap_err().to_string().contains("644"));
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert_eq!(Keypair::load(&p).unwrap().public(), kp.public());
    }
}
