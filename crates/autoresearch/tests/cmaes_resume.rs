//! CMA-ES resumed from a journal rebuilds its evolution state from the stored trials: the
//! resumed study asks exactly what the uninterrupted one asks.

mod support;

use std::sync::Arc;

use autoresearch::{InMemoryStorage, JournalStorage};
use support::{CMA_CUT, CMA_TRIALS, cma_drive, cma_params, cma_study};

#[test]
fn resumed_cmaes_asks_like_the_uninterrupted_study() {
    let whole = cma_study(Arc::new(InMemoryStorage::new()));
    cma_drive(&whole, 0, CMA_TRIALS);
    let want = cma_params(&whole);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cma.jsonl");
    {
        let first = cma_study(Arc::new(JournalStorage::open(&path).unwrap()));
        cma_drive(&first, 0, CMA_CUT);
    }
    // A new process: a fresh sampler whose only knowledge is the journal.
    let resumed = cma_study(Arc::new(JournalStorage::open(&path).unwrap()));
    cma_drive(&resumed, CMA_CUT, CMA_TRIALS);
    let got = cma_params(&resumed);
    assert_eq!(got.len(), want.len());
    for (n, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "trial {n} differs after the resume");
    }
    // The resumed part really continued an adapted search rather than restarting: its best
    // beats the first generation's.
    let best = |from: usize, to: usize| {
        resumed.trials().unwrap()[from..to]
            .iter()
            .filter_map(autoresearch::Trial::value)
            .fold(f64::INFINITY, f64::min)
    };
    assert!(best(CMA_CUT as usize, CMA_TRIALS as usize) < best(0, 8));
}
