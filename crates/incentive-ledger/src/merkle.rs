//! RFC 6962 / RFC 9162 Merkle tree: leaf and node hashing with domain prefixes, inclusion and
//! consistency proofs and their verification (RFC 9162 §2.1.3.2 and §2.1.4.2).
//!
//! The tree keeps every level of complete subtrees, so the hash of any range is assembled from
//! O(log n) stored nodes and proofs for a million leaves cost microseconds, not a rehash.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 ‖ data)`: the prefix keeps a leaf from posing as an interior node.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Root of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Largest power of two strictly below `n` (n >= 2).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (n - 1).ilog2()
}

/// An append-only Merkle tree over leaf hashes.
#[derive(Debug, Clone, Default)]
pub struct MerkleTree {
    /// `levels[k][i]` = hash of the complete subtree of `2^k` leaves starting at `i * 2^k`.
    levels: Vec<Vec<Hash>>,
}

impl MerkleTree {
    /// Empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// True when there are no leaves.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends a leaf by its data.
    pub fn push_data(&mut self, data: &[u8]) {
        self.push_hash(leaf_hash(data));
    }

    /// Appends an already computed leaf hash.
    pub fn push_hash(&mut self, leaf: Hash) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].push(leaf);
        let mut k = 0;
        while self.levels[k].len().is_multiple_of(2) {
            let n = self.levels[k].len();
            let h = node_hash(&self.levels[k][n - 2], &self.levels[k][n - 1]);
            if self.levels.len() == k + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[k + 1].push(h);
            k += 1;
        }
    }

    /// Leaf hash at `index`.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.levels.first()?.get(index as usize).copied()
    }

    /// MTH of leaves `[start, start + len)`; the range must lie inside the tree and be a
    /// subtree as RFC 6962 splits it (start aligned to the largest power of two <= len).
    fn range_hash(&self, start: u64, len: u64) -> Hash {
        if len.is_power_of_two() && start.is_multiple_of(len) {
            let k = len.trailing_zeros() as usize;
            return self.levels[k][(start >> k) as usize];
        }
        let k = split(len);
        node_hash(
            &self.range_hash(start, k),
            &self.range_hash(start + k, len - k),
        )
    }

    /// Root of the first `size` leaves (the tree as it was at that size).
    pub fn root_at(&self, size: u64) -> Result<Hash> {
        if size > self.len() {
            return Err(Error::Proof(format!(
                "tree size {size} exceeds the {} leaves present",
                self.len()
            )));
        }
        Ok(if size == 0 {
            empty_root()
        } else {
            self.range_hash(0, size)
        })
    }

    /// Current root.
    pub fn root(&self) -> Hash {
        self.root_at(self.len()).expect("own size")
    }

    /// Inclusion proof for leaf `index` in the tree of the first `size` leaves (RFC 9162 PATH).
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>> {
        if index >= size || size > self.len() {
            return Err(Error::Proof(format!(
                "no inclusion proof for leaf {index} in size {size} (tree has {})",
                self.len()
            )));
        }
        let mut proof = Vec::new();
        self.path(index, 0, size, &mut proof);
        Ok(proof)
    }

    fn path(&self, m: u64, start: u64, n: u64, out: &mut Vec<Hash>) {
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(m, start, k, out);
            out.push(self.range_hash(start + k, n - k));
        } else {
            self.path(m - k, start + k, n - k, out);
            out.push(self.range_hash(start, k));
        }
    }

    /// Consistency proof that the tree of size `old` is a prefix of the tree of size `new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>> {
        if old > new || new > self.len() {
            return Err(Error::Proof(format!(
                "no consistency proof from {old} to {new} (tree has {})",
                self.len()
            )));
        }
        let mut proof = Vec::new();
        if old > 0 && old < new {
            self.subproof(old, 0, new, true, &mut proof);
        }
        Ok(proof)
    }

    fn subproof(&self, m: u64, start: u64, n: u64, complete: bool, out: &mut Vec<Hash>) {
        if m == n {
            if !complete {
                out.push(self.range_hash(start, n));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, start, k, complete, out);
            out.push(self.range_hash(start + k, n - k));
        } else {
            self.subproof(m - k, start + k, n - k, false, out);
            out.push(self.range_hash(start, k));
        }
    }
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<()> {
    let fail = |why: &str| {
        Err(Error::Proof(format!(
            "inclusion of leaf {index} in size {size}: {why}"
        )))
    };
    if index >= size {
        return fail("index out of range");
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return fail("proof too long");
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return fail("proof too short");
    }
    if &r != root {
        return fail("root mismatch");
    }
    Ok(())
}

/// Verifies a consistency proof between two tree heads (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<()> {
    let fail = |why: &str| {
        Err(Error::Proof(format!(
            "consistency {old_size} -> {new_size}: {why}"
        )))
    };
    if old_size > new_size {
        return fail("old size above new size");
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return fail("proof must be empty for equal sizes");
        }
        return if old_root == new_root {
            Ok(())
        } else {
            fail("roots differ at equal size")
        };
    }
    if old_size == 0 {
        // Every tree extends the empty tree; RFC 9162 only defines proofs for 0 < m.
        return if proof.is_empty() {
            Ok(())
        } else {
            fail("proof must be empty from size 0")
        };
    }
    if proof.is_empty() {
        return fail("empty proof");
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if snode == 0 {
            return fail("proof too long");
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return fail("proof too short");
    }
    if &fr != old_root {
        return fail("old root mismatch");
    }
    if &sr != new_root {
        return fail("new root mismatch");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::hex;
    use proptest::prelude::*;

    /// The reference tree of RFC 6962 test data (transparency-dev/merkle, certificate-transparency).
    fn reference_leaves() -> Vec<Vec<u8>> {
        vec![
            vec![],
            vec![0x00],
            vec![0x10],
            vec![0x20, 0x21],
            vec![0x30, 0x31],
            vec![0x40, 0x41, 0x42, 0x43],
            (0x50..=0x57).collect(),
            (0x60..=0x6f).collect(),
        ]
    }

    /// Naive recursive MTH straight from the RFC text.
    fn mth(leaves: &[Vec<u8>]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaf_hash(&leaves[0]),
            n => {
                let k = split(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn rfc_known_answers() {
        assert_eq!(
            hex(&empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        assert_eq!(
            hex(&leaf_hash(b"L123456")),
            "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
        );
        let mut h = Sha256::new();
        h.update([1u8]);
        h.update(b"N123");
        h.update(b"N456");
        assert_eq!(
            hex(&Into::<Hash>::into(h.finalize())),
            "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"
        );
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let mut t = MerkleTree::new();
        for (i, l) in reference_leaves().iter().enumerate() {
            t.push_data(l);
            assert_eq!(hex(&t.root()), roots[i], "root of size {}", i + 1);
        }
    }

    #[test]
    fn rfc_reference_inclusion_and_consistency_paths() {
        // From the certificate-transparency / transparency-dev RFC 6962 test suite.
        let mut t = MerkleTree::new();
        for l in reference_leaves() {
            t.push_data(&l);
        }
        let p = t.inclusion_proof(0, 8).unwrap();
        let want = [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ];
        assert_eq!(p.iter().map(|h| hex(h)).collect::<Vec<_>>(), want);
        let c = t.consistency_proof(1, 8).unwrap();
        assert_eq!(c.iter().map(|h| hex(h)).collect::<Vec<_>>(), want);
        let c = t.consistency_proof(6, 8).unwrap();
        let want6 = [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ];
        assert_eq!(c.iter().map(|h| hex(h)).collect::<Vec<_>>(), want6);
        let c = t.consistency_proof(2, 5).unwrap();
        assert_eq!(
            c.iter().map(|h| hex(h)).collect::<Vec<_>>(),
            [
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"
            ]
        );
        let p5 = t.inclusion_proof(5, 8).unwrap();
        assert_eq!(
            p5.iter().map(|h| hex(h)).collect::<Vec<_>>(),
            [
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"
            ]
        );
        for (i, w) in [(0, 8), (5, 8)] {
            let p = t.inclusion_proof(i, w).unwrap();
            verify_inclusion(&t.leaf(i).unwrap(), i, w, &p, &t.root()).unwrap();
        }
    }

    #[test]
    fn odd_node_is_promoted_not_duplicated() {
        let leaves: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i]).collect();
        let mut dup = leaves.clone();
        dup.push(leaves[2].clone());
        assert_ne!(mth(&leaves), mth(&dup));
        assert_ne!(
            node_hash(&[1; 32], &[2; 32]),
            leaf_hash(&[[1u8; 32], [2; 32]].concat())
        );
    }

    #[test]
    fn bad_proofs_are_refused() {
        let mut t = MerkleTree::new();
        for i in 0..13u32 {
            t.push_data(&i.to_be_bytes());
        }
        let root = t.root();
        let p = t.inclusion_proof(5, 13).unwrap();
        let leaf = t.leaf(5).unwrap();
        verify_inclusion(&leaf, 5, 13, &p, &root).unwrap();
        assert!(verify_inclusion(&leaf, 4, 13, &p, &root).is_err());
        assert!(verify_inclusion(&leaf, 5, 26, &p, &root).is_err());
        assert!(verify_inclusion(&leaf, 5, 13, &p[..p.len() - 1], &root).is_err());
        let mut longer = p.clone();
        longer.push([0; 32]);
        assert!(verify_inclusion(&leaf, 5, 13, &longer, &root).is_err());
        for i in 0..p.len() {
            let mut q = p.clone();
            q[i][0] ^= 1;
            assert!(verify_inclusion(&leaf, 5, 13, &q, &root).is_err());
        }
        let c = t.consistency_proof(7, 13).unwrap();
        let old = t.root_at(7).unwrap();
        verify_consistency(7, 13, &old, &root, &c).unwrap();
        assert!(verify_consistency(6, 13, &old, &root, &c).is_err());
        assert!(verify_consistency(7, 13, &root, &root, &c).is_err());
        for i in 0..c.len() {
            let mut q = c.clone();
            q[i][31] ^= 0x80;
            assert!(verify_consistency(7, 13, &old, &root, &q).is_err());
        }
    }

    proptest! {
        #[test]
        fn proofs_hold_for_random_sizes(n in 1u64..300, a in any::<u64>(), b in any::<u64>()) {
            let leaves: Vec<Vec<u8>> = (0..n).map(|i| i.to_le_bytes().to_vec()).collect();
            let mut t = MerkleTree::new();
            for l in &leaves { t.push_data(l); }
            prop_assert_eq!(t.root(), mth(&leaves));
            let size = 1 + a % n;
            let idx = b % size;
            let root = t.root_at(size).unwrap();
            prop_assert_eq!(root, mth(&leaves[..size as usize]));
            let p = t.inclusion_proof(idx, size).unwrap();
            prop_assert!(verify_inclusion(&t.leaf(idx).unwrap(), idx, size, &p, &root).is_ok());
            if idx + 1 < size {
                prop_assert!(verify_inclusion(&t.leaf(idx + 1).unwrap(), idx, size, &p, &root).is_err());
            }
            let old = 1 + b % size;
            let c = t.consistency_proof(old, size).unwrap();
            let old_root = t.root_at(old).unwrap();
            prop_assert!(verify_consistency(old, size, &old_root, &root, &c).is_ok());
            if old < size {
                let mut bad = old_root;
                bad[0] ^= 1;
                prop_assert!(verify_consistency(old, size, &bad, &root, &c).is_err());
                if !c.is_empty() {
                    let mut q = c.clone();
                    let last = q.len() - 1;
                    q[last][5] ^= 2;
                    prop_assert!(verify_consistency(old, size, &old_root, &root, &q).is_err());
                }
            }
        }
    }
}
