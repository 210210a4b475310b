//! Artifacts: the encoded update a contribution commits to (diloco's update object: header
//! with worker, round, base version and declared weight, then the codec payload), and the
//! checks every validator recomputes from its bytes before anything else looks at it.

use diloco::params::{self, ParamMap};
use diloco::protocol::{decode_update, encode_update};
use incentive_ledger::merkle::Hash;
use incentive_ledger::record::Verdict;
use sha2::{Digest, Sha256};
use std::fmt;

/// SHA-256 of an artifact (what a contribution record signs).
pub fn artifact_hash(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

/// Why an artifact is refused (recorded in the validator's report; the ledger records the
/// verdict: [`Verdict::NonFinite`] for non-finite values, [`Verdict::Invalid`] otherwise).
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Not revealed by the deadline.
    Missing,
    /// Larger than the protocol's artifact limit.
    TooLarge {
        /// Its size.
        size: u64,
    },
    /// The bytes do not hash to the committed artifact hash, or differ in size.
    HashMismatch,
    /// The payload does not decode.
    Malformed(String),
    /// The header names another worker, round or base version.
    Header(String),
    /// The declared aggregation weight is not the protocol's.
    Weight {
        /// Declared.
        declared: f32,
        /// The protocol's.
        expected: f32,
    },
    /// Names or shapes differ from the model's.
    Layout(String),
    /// A NaN or infinite value.
    NonFinite {
        /// Tensor.
        tensor: String,
        /// Flat index.
        index: usize,
    },
}

impl Refusal {
    /// The ledger verdict for this refusal.
    pub fn verdict(&self) -> Verdict {
        match self {
            Refusal::NonFinite { .. } => Verdict::NonFinite,
            _ => Verdict::Invalid,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Missing => f.write_str("artifact not revealed"),
            Refusal::TooLarge { size } => write!(f, "artifact of {size} bytes over the limit"),
            Refusal::HashMismatch => f.write_str("artifact bytes do not match the committed hash"),
            Refusal::Malformed(m) => write!(f, "malformed artifact: {m}"),
            Refusal::Header(m) => write!(f, "header: {m}"),
            Refusal::Weight { declared, expected } => write!(
                f,
                "declared weight {declared} outside the protocol's (every update weighs {expected})"
            ),
            Refusal::Layout(m) => write!(f, "layout: {m}"),
            Refusal::NonFinite { tensor, index } => {
                write!(f, "non-finite value in `{tensor}` at {index}")
            }
        }
    }
}

/// What a contribution must match: the committed hash and size, the worker id, the round and
/// the model's layout.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// Committed SHA-256.
    pub hash: &'a Hash,
    /// Committed size.
    pub size: u64,
    /// diloco worker id the header must name.
    pub worker_id: u32,
    /// Round.
    pub round: u64,
    /// The protocol's update weight.
    pub weight: f32,
    /// The model (names and shapes).
    pub reference: &'a ParamMap,
}

/// Builds an artifact (what an honest worker uploads).
pub fn build(
    worker_id: u32,
    round: u64,
    weight: f32,
    delta: &ParamMap,
    codec: diloco::codec::Codec,
) -> diloco::Result<Vec<u8>> {
    let payload = diloco::codec::encode(delta, codec)?;
    Ok(encode_update(worker_id, round, round - 1, weight, &payload))
}

/// Checks an artifact's bytes against what was committed and returns the decoded
/// pseudo-gradient. Recomputed by every validator (and the operator before merging).
pub fn check(bytes: Option<&[u8]>, e: &Expected<'_>) -> Result<ParamMap, Refusal> {
    let bytes = bytes.ok_or(Refusal::Missing)?;
    if bytes.len() as u64 != e.size || artifact_hash(bytes) != *e.hash {
        return Err(Refusal::HashMismatch);
    }
    let (worker, round, base, weight, delta) =
        decode_update(bytes, "artifact").map_err(|err| match err {
            diloco::Error::NonFinite { tensor, index, .. } => Refusal::NonFinite { tensor, index },
            other => Refusal::Malformed(other.to_string()),
        })?;
    if worker != e.worker_id || round != e.round || base.checked_add(1) != Some(e.round) {
        return Err(Refusal::Header(format!(
            "says worker {worker}, round {round}, base {base}; expected worker {}, round {}, base {}",
            e.worker_id,
            e.round,
            e.round - 1
        )));
    }
    if weight.to_bits() != e.weight.to_bits() {
        return Err(Refusal::Weight {
            declared: weight,
            expected: e.weight,
        });
    }
    params::check_same_layout(e.reference, &delta)
        .map_err(|err| Refusal::Layout(err.to_string()))?;
    for (name, t) in &delta {
        if let Some(index) = t.data.iter().position(|v| !v.is_finite()) {
            return Err(Refusal::NonFinite {
                tensor: name.clone(),
                index,
            });
        }
    }
    Ok(delta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use diloco::codec::Codec;
    use diloco::params::NamedTensor as Tensor;

    fn model() -> ParamMap {
        let mut m = ParamMap::new();
        m.insert("w".into(), Tensor::new(vec![2, 3], vec![0.5; 6]).unwrap());
        m
    }

    #[test]
    fn every_tampering_is_refused_with_its_reason() {
        let reference = model();
        let delta = model();
        let bytes = build(3, 2, 1.0, &delta, Codec::F32).unwrap();
        let hash = artifact_hash(&bytes);
        let e = Expected {
            hash: &hash,
            size: bytes.len() as u64,
            worker_id: 3,
            round: 2,
            weight: 1.0,
            reference: &reference,
        };
        assert_eq!(check(Some(&bytes), &e).unwrap(), delta);
        assert_eq!(check(None, &e), Err(Refusal::Missing));
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(check(Some(&flipped), &e), Err(Refusal::HashMismatch));
        // A weight inflator: same update, header weight 1e30.
        let inflated = build(3, 2, 1e30, &delta, Codec::F32).unwrap();
        let h = artifact_hash(&inflated);
        let e2 = Expected {
            hash: &h,
            size: inflated.len() as u64,
            ..e
        };
        assert!(matches!(
            check(Some(&inflated), &e2),
            Err(Refusal::Weight { .. })
        ));
        assert_eq!(
            check(Some(&inflated), &e2).unwrap_err().verdict(),
            Verdict::Invalid
        );
        // Another worker's id, another round.
        for (w, r) in [(4, 2), (3, 3)] {
            let b = build(w, r, 1.0, &delta, Codec::F32).unwrap();
            let h = artifact_hash(&b);
            let e3 = Expected {
                hash: &h,
                size: b.len() as u64,
                ..e
            };
            assert!(matches!(check(Some(&b), &e3), Err(Refusal::Header(_))));
        }
        // A NaN written into the payload bytes (encoders refuse to write one).
        let mut marked = delta.clone();
        marked.get_mut("w").unwrap().data[4] = 1234.5;
        let mut b = build(3, 2, 1.0, &marked, Codec::F32).unwrap();
        let at = b
            .windows(4)
            .position(|w| w == 1234.5f32.to_le_bytes())
            .unwrap();
        b[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        let h = artifact_hash(&b);
        let e4 = Expected {
            hash: &h,
            size: b.len() as u64,
            ..e
        };
        let r = check(Some(&b), &e4).unwrap_err();
        assert_eq!(r.verdict(), Verdict::NonFinite, "{r}");
        // Garbage and a wrong layout.
        let g = vec![1u8; 40];
        let h = artifact_hash(&g);
        let e5 = Expected {
            hash: &h,
            size: 40,
            ..e
        };
        assert!(matches!(check(Some(&g), &e5), Err(Refusal::Malformed(_))));
        let mut other = ParamMap::new();
        other.insert("v".into(), Tensor::zeros(vec![6]));
        let b = build(3, 2, 1.0, &other, Codec::F32).unwrap();
        let h = artifact_hash(&b);
        let e6 = Expected {
            hash: &h,
            size: b.len() as u64,
            ..e
        };
        assert!(matches!(check(Some(&b), &e6), Err(Refusal::Layout(_))));
    }
}
