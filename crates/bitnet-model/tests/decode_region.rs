//! The decode step with helper threads (one new token: `runtime::model::decode`) gives the
//! same bits as the per-operation path, for both KV caches, the packed and the reference
//! model, at 1-3 threads.

use bitnet_model::config::{Activation, ModelConfig, WeightKind};
use bitnet_model::runtime::{
    KvPrecision, Logits, PackOptions, PackedModel, Projection, ReferenceModel, Threads,
    Transformer, random_weights,
};

#[test]
fn the_decode_region_gives_the_per_op_paths_bits() {
    // The leader-and-helpers step (row ranges, attention per range of heads) against one
    // fork-join per operation; GQA 4/2 and an FFN width that is not a multiple of the
    // chunk rows.
    let config = ModelConfig {
        vocab_size: 300,
        hidden_size: 256,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        ffn_hidden_size: 768,
        context_length: 32,
        rope_theta: 10_000.0,
        norm_eps: 1e-5,
        activation: Activation::ReluSquared,
        tied_embeddings: false,
        weights: WeightKind::Ternary,
    };
    let weights = random_weights(&config, 5);
    fn steps<P: Projection>(model: &Transformer<P>, precision: KvPrecision) -> Vec<u32> {
        let mut cache = model.new_cache_with(precision);
        // A one-token prompt first (the stored layout; no 16-row copy yet), then a
        // prompt (which builds it), then decode steps on it.
        let mut out = model.forward(&mut cache, &[9], Logits::Last).unwrap();
        out.extend(
            model
                .forward(&mut cache, &[5, 17, 250], Logits::Last)
                .unwrap(),
        );
        for t in [7, 42, 1, 299] {
            out.extend(model.forward(&mut cache, &[t], Logits::Last).unwrap());
        }
        out.iter().map(|v| v.to_bits()).collect()
    }
    for threads in [1, 2, 3] {
        let options = PackOptions {
            threads: Threads(threads),
            ..PackOptions::default()
        };
        let packed = |region: bool| {
            PackedModel::from_weights(&config, &weights, options)
                .unwrap()
                .with_decode_region(region)
        };
        let reference = |region: bool| {
            ReferenceModel::from_weights(&config, &weights, Threads(threads))
                .unwrap()
                .with_decode_region(region)
        };
        assert!(packed(true).runs_decode_region() && reference(true).runs_decode_region());
        assert!(!packed(false).runs_decode_region());
        for precision in [KvPrecision::F16, KvPrecision::F32] {
            let (a, b) = (
                steps(&packed(true), precision),
                steps(&packed(false), precision),
            );
            assert_eq!(a, b, "packed, {threads} threads, {precision:?}");
            let (a, b) = (
                steps(&reference(true), precision),
                steps(&reference(false), precision),
            );
            assert_eq!(a, b, "f32, {threads} threads, {precision:?}");
        }
    }
}
