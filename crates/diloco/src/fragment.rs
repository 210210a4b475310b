//! Streaming DiLoCo fragments: which tensors sync together, and when.
//!
//! A fragment is a set of transformer blocks (strided: block `i` goes to fragment
//! `i % P`, the pattern the Streaming DiLoCo paper uses). Tensors outside any block
//! (embeddings, final norm) go, in name order, to the fragment holding fewest tensors. Fragment
//! `p` syncs every `H` inner steps, at steps `t` with `t ≡ (p + 1) H / P (mod H)`, so some
//! fragment syncs every `H / P` steps while each is still exchanged once per `H`.

use crate::error::{Error, Result};

/// A partition of tensor names into fragments, with the sync period.
#[derive(Debug, Clone, PartialEq)]
pub struct FragmentPlan {
    /// NamedTensor names of each fragment.
    pub fragments: Vec<Vec<String>>,
    /// Inner steps between two syncs of the same fragment.
    pub period: u64,
}

/// The block index of a tensor named `blk.N.*` or `layers.N.*`.
pub fn block_index(name: &str) -> Option<usize> {
    let mut parts = name.split('.');
    match parts.next()? {
        "blk" | "layers" | "layer" | "h" => parts.next()?.parse().ok(),
        _ => None,
    }
}

impl FragmentPlan {
    /// One fragment holding everything: plain DiLoCo.
    pub fn single(names: impl IntoIterator<Item = String>, period: u64) -> Result<Self> {
        Self::strided(names, 1, period)
    }

    /// `p` strided fragments (see the module docs).
    pub fn strided(names: impl IntoIterator<Item = String>, p: usize, period: u64) -> Result<Self> {
        if p == 0 || period == 0 || period < p as u64 {
            return Err(Error::Config {
                field: "fragments".into(),
                message: format!("need 1 <= fragments ({p}) <= period ({period})"),
            });
        }
        let mut fragments: Vec<Vec<String>> = vec![Vec::new(); p];
        let mut loose = Vec::new();
        for name in names {
            match block_index(&name) {
                Some(b) => fragments[b % p].push(name),
                None => loose.push(name),
            }
        }
        for name in loose {
            let smallest = (0..p).min_by_key(|&f| fragments[f].len()).expect("p >= 1");
            fragments[smallest].push(name);
        }
        if let Some(empty) = fragments.iter().position(Vec::is_empty) {
            return Err(Error::Config {
                field: "fragments".into(),
                message: format!("fragment {empty} of {p} would hold no tensor"),
            });
        }
        Ok(Self { fragments, period })
    }

    /// The fragments that sync after inner step `t` (1-based).
    pub fn syncing_at(&self, t: u64) -> Vec<usize> {
        let p = self.fragments.len() as u64;
        (0..p)
            .filter(|&f| {
                let offset = (f + 1) * self.period / p;
                t >= offset && (t - offset).is_multiple_of(self.period)
            })
            .map(|f| f as usize)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_plan_and_schedule() {
        let names: Vec<String> = [
            "blk.0.a",
            "blk.1.a",
            "blk.2.a",
            "blk.3.a",
            "output_norm",
            "token_embd",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        let plan = FragmentPlan::strided(names.clone(), 2, 10).unwrap();
        assert_eq!(plan.fragments[0], vec!["blk.0.a", "blk.2.a", "output_norm"]);
        assert_eq!(plan.fragments[1], vec!["blk.1.a", "blk.3.a", "token_embd"]);
        let syncs: Vec<(u64, Vec<usize>)> = (1..=20)
            .map(|t| (t, plan.syncing_at(t)))
            .filter(|(_, f)| !f.is_empty())
            .collect();
        assert_eq!(
            syncs,
            vec![(5, vec![0]), (10, vec![1]), (15, vec![0]), (20, vec![1])]
        );
        let single = FragmentPlan::single(names, 4).unwrap();
        assert_eq!(single.syncing_at(4), vec![0]);
        assert!(single.syncing_at(3).is_empty());
        assert!(FragmentPlan::strided(vec!["a".into()], 2, 10).is_err());
    }
}
