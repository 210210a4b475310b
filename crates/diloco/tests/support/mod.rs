//! Helpers shared by the multi-process tests.

use diloco::exchange::Exchange;
use diloco::exchange::store::ObjectStoreExchange;
use diloco::protocol;
use std::time::{Duration, Instant};

/// Blocks until round `round`'s manifest is in the store (the round has committed), failing
/// the test after `limit`.
pub fn wait_for_manifest(ex: &ObjectStoreExchange, round: u64, limit: Duration) {
    let start = Instant::now();
    while ex.get(&protocol::manifest_key(round)).unwrap().is_none() {
        assert!(start.elapsed() < limit, "round {round} never committed");
        std::thread::sleep(Duration::from_millis(20));
    }
}
