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
//! Batch verification ([`verify_many`]) must give exactly `verify_strict`'s answers, because
//! `ledger verify` re-checks every entry strictly. A plain batch equation cannot: it is
//! cofactorless, so a signer who deliberately adds a small-order component to their own `R`
//! gets a signature that `verify_strict` always refuses but a batch accepts whenever the random
//! weight is divisible by the component's order (probability 1/2 for order 2; dalek's
//! `verify_batch` even derives the weights from the inputs, so the signer can grind until it
//! passes). One such entry would make the whole log fail `ledger verify`. Our batch equation
//! therefore takes `R` as `8·W`, from a hint `W` sent with the signature ([`r_hint`]): `8·W`
//! has no torsion component, all terms lie in the prime-order subgroup, and the equation plus
//! the check `compress(8·W) == R` proves exactly what `verify_strict` proves (up to 2⁻¹²⁸).
//! Keys must pass [`PublicKey::parse`] (memoised in [`KeyCache`]); items without a hint, and
//! every member of a failing chunk, get `verify_strict`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use curve25519_dalek::constants;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha512};

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

/// Largest batch chunk. Bigger chunks make Pippenger's multiscalar multiplication cheaper per
/// point; a failing chunk is bisected ([`bisect`]), so one bad signature costs about
/// `2·log₂(chunk)` smaller batches, not `chunk` strict verifications.
pub const BATCH_CHUNK: usize = 512;

/// Below this many items a failing (sub)batch is settled with `verify_strict` item by item.
const STRICT_BELOW: usize = 8;

/// `8⁻¹ mod ℓ`.
fn inv8() -> Scalar {
    static INV8: std::sync::LazyLock<Scalar> =
        std::sync::LazyLock::new(|| Scalar::from(8u8).invert());
    *INV8
}

/// The batch hint for a signature: `W = 8⁻¹·R`, so that `8·W = R`. Because `8·W` lies in the
/// prime-order subgroup whatever `W` is, a hint that checks out proves `R` has no torsion
/// component, which a batch equation cannot see by itself. Anyone can compute it from a valid
/// signature (the signer does, in [`Keypair::sign_with_hint`]); it is never stored and a wrong
/// hint only sends the item to [`verify_strict`]. `None` if `R` is not a point.
pub fn r_hint(sig: &[u8; 64]) -> Option<[u8; 32]> {
    let r = CompressedEdwardsY(sig[..32].try_into().expect("32 bytes")).decompress()?;
    Some(
        EdwardsPoint::vartime_multiscalar_mul([inv8()], [r])
            .compress()
            .to_bytes(),
    )
}

impl Keypair {
    /// Signs `msg` and returns the signature with its batch hint ([`r_hint`]).
    pub fn sign_with_hint(&self, msg: &[u8]) -> ([u8; 64], [u8; 32]) {
        let sig = self.sign(msg);
        let hint = r_hint(&sig).expect("dalek signatures have a valid R");
        (sig, hint)
    }
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
    /// Batch hint ([`r_hint`]); items without one get [`verify_strict`].
    pub hint: Option<&'a [u8; 32]>,
}

/// Parsed public keys, so a key's subgroup check (a full scalar multiplication) is paid once, not
/// once per signature. Bounded: cleared when it reaches [`KeyCache::MAX`] keys.
#[derive(Debug, Default)]
pub struct KeyCache {
    keys: std::collections::HashMap<[u8; 32], Result<VerifyingKey, Rejection>>,
}

impl KeyCache {
    /// Most keys kept.
    pub const MAX: usize = 1 << 16;

    /// [`PublicKey::parse`], memoised.
    pub fn parse(&mut self, key: &PublicKey) -> Result<VerifyingKey, Rejection> {
        if let Some(r) = self.keys.get(&key.0) {
            return r.clone();
        }
        if self.keys.len() >= Self::MAX {
            self.keys.clear();
        }
        let r = PublicKey::parse(key.0);
        self.keys.insert(key.0, r.clone());
        r
    }
}

/// A batch candidate: parsed key, `s` as a scalar and the point used for `R` in the equation.
struct Prepared {
    item: usize,
    a: EdwardsPoint,
    s: Scalar,
    /// `W` for hinted items (the equation uses `8·W` for `R`), `R` itself otherwise.
    point: EdwardsPoint,
}

/// Checks `Σ zᵢ·(Rᵢ + kᵢ·Aᵢ − sᵢ·B) = 0` with fresh random 128-bit `zᵢ` (OS-seeded CSPRNG, so
/// an attacker cannot grind inputs against known weights), `kᵢ = SHA-512(Rᵢ‖Aᵢ‖Mᵢ)`. With
/// `hinted`, `Rᵢ` enters as `8·Wᵢ`: every term is then in the prime-order subgroup and a wrong
/// item survives with probability about 2⁻¹²⁸.
fn batch_equation(items: &[SigItem<'_>], chunk: &[Prepared], hinted: bool) -> bool {
    use rand::RngExt;
    let mut rng = rand::rng();
    let n = chunk.len();
    let mut scalars = Vec::with_capacity(2 * n + 1);
    let mut points = Vec::with_capacity(2 * n + 1);
    let mut b_coeff = Scalar::ZERO;
    let eight = Scalar::from(8u8);
    for p in chunk {
        let it = &items[p.item];
        let z = Scalar::from(rng.random::<u128>());
        let h = Sha512::new()
            .chain_update(&it.sig[..32])
            .chain_update(it.key.0)
            .chain_update(it.msg)
            .finalize();
        let k = Scalar::from_bytes_mod_order_wide(&h.into());
        b_coeff += z * p.s;
        scalars.push(if hinted { z * eight } else { z });
        points.push(p.point);
        scalars.push(z * k);
        points.push(p.a);
    }
    scalars.push(-b_coeff);
    points.push(constants::ED25519_BASEPOINT_POINT);
    EdwardsPoint::vartime_multiscalar_mul(scalars, points).is_identity()
}

/// Verifies one chunk; `out[i]` is set for every item of the chunk.
fn verify_chunk(
    items: &[SigItem<'_>],
    chunk: &[Prepared],
    hinted: bool,
) -> Vec<(usize, Result<(), Rejection>)> {
    let strict = |i: usize| {
        let it = &items[i];
        (i, verify_strict(it.key, it.msg, it.sig))
    };
    let mut ready: Vec<Prepared> = Vec::with_capacity(chunk.len());
    let mut out = Vec::with_capacity(chunk.len());
    if hinted {
        // 8·W must encode to exactly the R bytes that were hashed and signed, and must not be
        // the identity (the only small-order point in the prime-order subgroup); this is what
        // verify_strict demands of R. One batched inversion covers all compressions.
        let eights: Vec<EdwardsPoint> = chunk.iter().map(|p| p.point.mul_by_cofactor()).collect();
        let enc = EdwardsPoint::compress_batch_alloc(&eights);
        for ((p, e8), c) in chunk.iter().zip(&eights).zip(enc) {
            if c.0[..] == items[p.item].sig[..32] && !e8.is_identity() {
                ready.push(Prepared { ..*p });
            } else {
                out.push(strict(p.item));
            }
        }
    } else {
        ready.extend(chunk.iter().map(|p| Prepared { ..*p }));
    }
    if ready.is_empty() {
        return out;
    }
    bisect(items, &ready, hinted, &mut out);
    out
}

/// Accepts `chunk` if its batch equation holds; otherwise splits it in halves (fresh weights
/// each time) down to [`STRICT_BELOW`] items, which get `verify_strict`. Every item ends with
/// exactly one answer.
fn bisect(
    items: &[SigItem<'_>],
    chunk: &[Prepared],
    hinted: bool,
    out: &mut Vec<(usize, Result<(), Rejection>)>,
) {
    if chunk.is_empty() {
        return;
    }
    if chunk.len() < STRICT_BELOW {
        for p in chunk {
            let it = &items[p.item];
            out.push((p.item, verify_strict(it.key, it.msg, it.sig)));
        }
        return;
    }
    if batch_equation(items, chunk, hinted) {
        out.extend(chunk.iter().map(|p| (p.item, Ok(()))));
        return;
    }
    let (a, b) = chunk.split_at(chunk.len() / 2);
    bisect(items, a, hinted, out);
    bisect(items, b, hinted, out);
}

fn verify_many_inner(
    items: &[SigItem<'_>],
    keys: &mut KeyCache,
    use_hints: bool,
) -> Vec<Result<(), Rejection>> {
    use rayon::prelude::*;
    let mut out: Vec<Option<Result<(), Rejection>>> = vec![None; items.len()];
    let mut prepared = Vec::with_capacity(items.len());
    for (i, it) in items.iter().enumerate() {
        let vk = match keys.parse(it.key) {
            Ok(vk) => vk,
            Err(e) => {
                out[i] = Some(Err(e));
                continue;
            }
        };
        let s: Option<Scalar> =
            Scalar::from_canonical_bytes(it.sig[32..].try_into().expect("32 bytes")).into();
        let point = if use_hints {
            it.hint.and_then(|w| CompressedEdwardsY(*w).decompress())
        } else {
            CompressedEdwardsY(it.sig[..32].try_into().expect("32 bytes")).decompress()
        };
        match (s, point) {
            (Some(s), Some(point)) => prepared.push(Prepared {
                item: i,
                a: vk.to_edwards(),
                s,
                point,
            }),
            // Malformed or unhinted: the strict check gives the exact answer.
            _ => out[i] = Some(verify_strict(it.key, it.msg, it.sig)),
        }
    }
    // At least two chunks when there is enough work, so both cores of a 2-core machine get one.
    let chunk = prepared.len().div_ceil(2).clamp(STRICT_BELOW, BATCH_CHUNK);
    let decided: Vec<Vec<(usize, Result<(), Rejection>)>> = prepared
        .par_chunks(chunk)
        .map(|c| verify_chunk(items, c, use_hints))
        .collect();
    for (i, r) in decided.into_iter().flatten() {
        out[i] = Some(r);
    }
    out.into_iter()
        .map(|r| r.expect("every item decided"))
        .collect()
}

/// Verifies many signatures; result `i` is exactly what [`verify_strict`] says for item `i`
/// (up to the batch equation's 2⁻¹²⁸ error). Hinted items go through batch verification in
/// chunks spread over rayon's threads; items without a valid hint, and every member of a failing
/// chunk, get [`verify_strict`], so a bad item never costs anyone else their answer.
pub fn verify_many(items: &[SigItem<'_>], keys: &mut KeyCache) -> Vec<Result<(), Rejection>> {
    verify_many_inner(items, keys, true)
}

/// Fast re-check of entries that are already in a log covered by the operator's signed
/// checkpoint (used when opening a ledger). It ignores hints and puts `R` itself into the batch
/// equation, so it cannot see a torsion component of `R`: a signer who deliberately builds such
/// an `R` passes it with probability 1/2, where [`verify_strict`] always refuses. That is why
/// ingest uses [`verify_many`] and `ledger verify` checks every entry with [`verify_strict`].
pub fn recheck_many(items: &[SigItem<'_>], keys: &mut KeyCache) -> Vec<Result<(), Rejection>> {
    verify_many_inner(items, keys, false)
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
        let hints: Vec<Option<[u8; 32]>> = sigs.iter().map(r_hint).collect();
        let mut bad_hint = hints[7].unwrap();
        bad_hint[0] ^= 1;
        let items: Vec<SigItem<'_>> = (0..150)
            .map(|i| SigItem {
                key: &pubs[i],
                msg: &msgs[i],
                sig: &sigs[i],
                // Item 7 has a wrong hint, items 9 and 11 none: all still get strict answers.
                hint: match i {
                    7 => Some(&bad_hint),
                    9 | 11 => None,
                    _ => hints[i].as_ref(),
                },
            })
            .collect();
        let mut keys = KeyCache::default();
        let res = verify_many(&items, &mut keys);
        assert_eq!(res, recheck_many(&items, &mut keys));
        for (i, r) in res.iter().enumerate() {
            assert_eq!(r.is_ok(), i != 5 && i != 100, "item {i}");
            assert_eq!(
                r.is_ok(),
                verify_strict(&pubs[i], &msgs[i], &sigs[i]).is_ok()
            );
        }
    }

    /// A signature by key `a` whose `R` carries the order-2 point `(0, -1)`: valid in the
    /// cofactorless batch equation whenever the weight is even, refused by `verify_strict`.
    fn torsioned_signature(a: Scalar, nonce: u64, msg: &[u8]) -> (PublicKey, [u8; 64]) {
        let mut t = [0xffu8; 32];
        t[0] = 0xec;
        t[31] = 0x7f;
        let t2 = CompressedEdwardsY(t).decompress().unwrap();
        assert!(!t2.is_identity() && t2.mul_by_cofactor().is_identity());
        let pk = EdwardsPoint::mul_base(&a).compress().to_bytes();
        let r = Scalar::from(nonce);
        let big_r = (EdwardsPoint::mul_base(&r) + t2).compress().to_bytes();
        let h = Sha512::new()
            .chain_update(big_r)
            .chain_update(pk)
            .chain_update(msg)
            .finalize();
        let s = r + Scalar::from_bytes_mod_order_wide(&h.into()) * a;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&big_r);
        sig[32..].copy_from_slice(s.as_bytes());
        (PublicKey(pk), sig)
    }

    #[test]
    fn torsion_in_r_is_refused_by_the_hinted_batch_but_not_by_a_plain_one() {
        let a = Scalar::from(0x1234_5678_9abc_u64);
        let good = Keypair::from_seed([3; 32]);
        let mut keys = KeyCache::default();
        let mut plain_accepted = 0;
        for nonce in 1..=40u64 {
            let msg = nonce.to_be_bytes();
            let (pk, sig) = torsioned_signature(a, nonce, &msg);
            assert!(verify_strict(&pk, &msg, &sig).is_err());
            // The best hints an attacker has: 8⁻¹·R, and the same shifted by the torsion point.
            let w = r_hint(&sig).unwrap();
            let gm = [nonce as u8; 9];
            let (gs, gh) = good.sign_with_hint(&gm);
            let gp = good.public();
            let items = [
                SigItem {
                    key: &pk,
                    msg: &msg,
                    sig: &sig,
                    hint: Some(&w),
                },
                SigItem {
                    key: &gp,
                    msg: &gm,
                    sig: &gs,
                    hint: Some(&gh),
                },
            ];
            let res = verify_many(&items, &mut keys);
            assert!(res[0].is_err(), "nonce {nonce}: torsioned R accepted");
            assert!(res[1].is_ok());
            // The plain batch equation sees only the weight's parity: it lets some through.
            let plain = [SigItem {
                hint: None,
                ..items[0]
            }];
            let p = prepared_plain(&plain);
            if batch_equation(&plain, &p, false) {
                plain_accepted += 1;
            }
        }
        // 40 independent weights: all odd has probability 2⁻⁴⁰.
        assert!(
            plain_accepted > 0,
            "plain batch never accepted the torsioned R"
        );
    }

    fn prepared_plain(items: &[SigItem<'_>]) -> Vec<Prepared> {
        items
            .iter()
            .enumerate()
            .map(|(i, it)| Prepared {
                item: i,
                a: CompressedEdwardsY(it.key.0).decompress().unwrap(),
                s: Scalar::from_canonical_bytes(it.sig[32..].try_into().unwrap()).unwrap(),
                point: CompressedEdwardsY(it.sig[..32].try_into().unwrap())
                    .decompress()
                    .unwrap(),
            })
            .collect()
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
