//! `cargo xtask bench kernels`: GEMV / GEMM throughput of every packed format and kernel path,
//! compared with the scalar reference and with the machine's read bandwidth measured in the
//! same run. Writes `$MAGNET_BENCH_OUT/kernels.json` (default `target/bench`).
//!
//! Env: `KERNELS_BENCH_QUICK=1` runs two shapes only (for a smoke run);
//! `KERNELS_BENCH_FORMATS=i2_s,tq2_0` and `KERNELS_BENCH_BATCHES=1` restrict the run (for
//! iterating on one kernel; the summary then covers only what ran).

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use ternary_core::{
    ActQuant, Engine, Format, Granularity, KernelPath, PackedData, PackedMatrix,
    QuantizedActivations, quantize_absmean,
};

const SHAPES: [(usize, usize); 6] = [
    (1024, 1024),
    (1536, 4096),
    (4096, 1536),
    (2560, 2560),
    (2560, 6912),
    (6912, 2560),
];
/// Bytes of weights cycled through for the out-of-cache GEMV runs: as large as the bandwidth
/// buffer (16x the reported 32 MiB L3; VMs may under-report the host's L3), so both stream
/// from the same memory level.
const COLD_BYTES: usize = 512 << 20;
/// Buffer for the read-bandwidth reduction.
const BW_BYTES: usize = 512 << 20;

#[path = "../tests/support/mod.rs"]
mod support;
use support::lcg;

/// Median of the timings of `f` (after one warm-up call when `min_reps > 1`), with at least
/// `min_reps` runs and more until `budget` is spent.
fn time(min_reps: usize, budget: Duration, mut f: impl FnMut()) -> (f64, usize) {
    if min_reps > 1 {
        f();
    }
    let start = Instant::now();
    let mut v = Vec::new();
    while v.len() < min_reps || (start.elapsed() < budget && v.len() < 200) {
        let t = Instant::now();
        f();
        v.push(t.elapsed().as_nanos() as f64);
    }
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v.len())
}

/// Sums a slice with AVX2 (4 independent 256-bit accumulators), so the loop is limited by
/// memory, not by instruction throughput; it prefetches 512 bytes ahead like the GEMV
/// kernels do, so the reference gets the same help from software prefetch as they get.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn reduce_avx2(s: &[u64]) -> u64 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_si256(); 4];
    let chunks = s.chunks_exact(16);
    let rest: u64 = chunks.remainder().iter().fold(0, |a, &b| a.wrapping_add(b));
    for c in chunks {
        // A prefetch never faults; `wrapping_add` keeps the address arithmetic defined.
        _mm_prefetch::<_MM_HINT_T0>(c.as_ptr().cast::<i8>().wrapping_add(512));
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: `c` has 16 u64 = 128 bytes; each load reads 32 of them.
            let v = unsafe { _mm256_loadu_si256(c.as_ptr().add(4 * k).cast()) };
            *a = _mm256_add_epi64(*a, v);
        }
    }
    let mut out = [0u64; 4];
    let t = _mm256_add_epi64(
        _mm256_add_epi64(acc[0], acc[1]),
        _mm256_add_epi64(acc[2], acc[3]),
    );
    // SAFETY: `out` has 32 writable bytes.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), t) };
    out.iter().fold(rest, |a, &b| a.wrapping_add(b))
}

fn reduce(s: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 detected just above.
        return unsafe { reduce_avx2(s) };
    }
    let mut acc = [0u64; 8];
    for c in s.chunks_exact(8) {
        for (a, &b) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(b);
        }
    }
    acc.iter().fold(0, |x, &y| x ^ y)
}

/// The packed blocks of a matrix as u64 words (block arrays are 2-byte aligned, so the
/// whole 8-byte words inside the allocation are used).
fn packed_words(m: &PackedMatrix) -> &[u64] {
    let bytes: &[u8] = match m.data() {
        PackedData::Tq1_0(b) => bytemuck::cast_slice(b),
        PackedData::Tq2_0(b) => bytemuck::cast_slice(b),
        PackedData::Q8_0(b) => bytemuck::cast_slice(b),
        PackedData::I2S { blocks, .. } => bytemuck::cast_slice(blocks),
    };
    // SAFETY: `align_to` only reinterprets the aligned middle part; any u64 bit pattern is valid.
    let (_, words, _) = unsafe { bytes.align_to::<u64>() };
    words
}

/// Read-only reduction bandwidth, timed piece by piece like the kernels: each timed call
/// reduces the next buffer of `bufs` (cycling, together far larger than the LLC) with
/// `threads` threads of a rayon pool. Short timed calls matter on a shared machine: a call of a
/// few hundred microseconds usually runs within one scheduler slice, a 100 ms loop never does,
/// so only equally short calls compare fairly with the kernel calls.
fn read_bandwidth_multi(bufs: &[&[u64]], threads: usize, pool: &rayon::ThreadPool) -> f64 {
    let bytes = bufs.iter().map(|b| b.len() * 8).sum::<usize>() as f64 / bufs.len() as f64;
    let mut i = 0;
    let (ns, _) = time(10, Duration::from_millis(300), || {
        let b = bufs[i % bufs.len()];
        i += 1;
        std::hint::black_box(reduce_threads(b, threads, pool));
    });
    bytes / ns
}

/// The read-only reduction of `b` split into `threads` contiguous parts (like the GEMV rows).
fn reduce_threads(b: &[u64], threads: usize, pool: &rayon::ThreadPool) -> u64 {
    use rayon::prelude::*;
    if threads == 1 {
        reduce(b)
    } else {
        pool.install(|| {
            b.par_chunks(b.len().div_ceil(threads).max(1))
                .map(reduce)
                .reduce(|| 0, |x, y| x ^ y)
        })
    }
}

/// `copies` matrices with the same shape and format but different code bytes: identical copies
/// could share physical pages (host page deduplication) and then stay cache-resident.
fn distinct_copies(m: &PackedMatrix, copies: usize) -> Vec<PackedMatrix> {
    let bytes = m.to_bytes();
    let f = m.format();
    // First code byte of every block (Q8_0 keeps its fp16 scale first).
    let code_off = if f == Format::Q8_0 { 2 } else { 0 };
    let data_len = if f == Format::I2S {
        m.rows() * m.cols() / 4
    } else {
        bytes.len()
    };
    (0..copies)
        .map(|c| {
            let mut b = bytes.clone();
            for off in (code_off..data_len).step_by(f.block_bytes()) {
                if matches!(f, Format::Tq2_0 | Format::I2S) {
                    // Keep codes valid ternary (the lookup-table repacking checks them): bit i
                    // of the copy number negates one 2-bit code (c -> 2 - c), so every copy
                    // differs from every other.
                    for i in 0..16 {
                        if c >> i & 1 == 1 {
                            let (byte, sh) = (off + i / 4, 2 * (i % 4));
                            let code = b[byte] >> sh & 3;
                            b[byte] = b[byte] & !(3 << sh) | (2 - code.min(2)) << sh;
                        }
                    }
                } else {
                    // TQ1_0 bytes decode to valid trits whatever their value; Q8_0 is int8.
                    b[off] ^= (c as u8).wrapping_mul(37) | 1;
                }
            }
            PackedMatrix::from_bytes(f, m.rows(), m.cols(), &b).unwrap()
        })
        .collect()
}

fn main() {
    let quick = std::env::var("KERNELS_BENCH_QUICK").as_deref() == Ok("1");
    let out_dir = std::env::var("MAGNET_BENCH_OUT").unwrap_or_else(|_| "target/bench".into());
    let shapes: Vec<(usize, usize)> = if quick {
        vec![SHAPES[0], SHAPES[4]]
    } else {
        SHAPES.to_vec()
    };
    let thread_counts = [1usize, 2];
    let list = |var: &str| -> Option<Vec<String>> {
        std::env::var(var)
            .ok()
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
    };
    let formats: Vec<Format> = match list("KERNELS_BENCH_FORMATS") {
        Some(names) => names
            .iter()
            .map(|n| Format::from_name(n).expect("KERNELS_BENCH_FORMATS: unknown format"))
            .collect(),
        None => Format::ALL.to_vec(),
    };
    let batches: Vec<usize> = match list("KERNELS_BENCH_BATCHES") {
        Some(b) => b
            .iter()
            .map(|n| n.parse().expect("KERNELS_BENCH_BATCHES: not a number"))
            .collect(),
        None => vec![1, 64, 512],
    };
    let paths = KernelPath::supported();

    // The machine is shared, so bandwidth is re-measured right before each shape and every
    // record is compared with the measurement taken next to it (and the same thread count).
    let bw_buf: Vec<u64> = (0..BW_BYTES / 8).map(|i| i as u64).collect();
    let bw_pieces: Vec<&[u64]> = bw_buf.chunks((2 << 20) / 8).collect();
    let pools: std::collections::BTreeMap<usize, rayon::ThreadPool> = thread_counts
        .iter()
        .map(|&t| {
            (
                t,
                rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .unwrap(),
            )
        })
        .collect();
    let measure_bw = || -> std::collections::BTreeMap<usize, f64> {
        thread_counts
            .iter()
            .map(|&t| {
                let gbs = read_bandwidth_multi(&bw_pieces, t, &pools[&t]);
                eprintln!("read bandwidth, {t} thread(s): {gbs:.2} GB/s");
                (t, gbs)
            })
            .collect()
    };
    let bw_start = measure_bw();
    let mut bw_all: Vec<Value> = Vec::new();

    let engines: Vec<(KernelPath, usize, Engine)> = paths
        .iter()
        .flat_map(|&p| {
            thread_counts
                .iter()
                .map(move |&t| (p, t, Engine::new(t).unwrap().with_path(p).unwrap()))
        })
        .collect();

    let mut records: Vec<Value> = Vec::new();
    for &(rows, cols) in &shapes {
        let bw = measure_bw();
        bw_all.push(json!({"rows": rows, "cols": cols, "read_bandwidth_gb_per_s": bw.iter().map(|(t, g)| (t.to_string(), json!(g))).collect::<serde_json::Map<_, _>>()}));
        let w = lcg(rows as u64 * 31 + cols as u64, rows * cols, 1.0);
        let t = quantize_absmean(&w, rows, cols, Granularity::PerTensor, 1e-5).unwrap();
        let xs = lcg(7, 512 * cols, 1.0);
        for &format in &formats {
            let m = if format == Format::Q8_0 {
                PackedMatrix::quantize(format, &w, rows, cols).unwrap()
            } else {
                PackedMatrix::from_ternary(format, &t).unwrap()
            };
            let wbytes = m.byte_len();
            let copies = COLD_BYTES.div_ceil(wbytes).max(2);
            let cold = distinct_copies(&m, copies);
            // The same read-only reduction, over the very buffers the out-of-cache GEMV streams.
            let cold_bytes: Vec<&[u64]> = cold.iter().map(packed_words).collect();
            let bw_same: std::collections::BTreeMap<usize, f64> = thread_counts
                .iter()
                .map(|&t| (t, read_bandwidth_multi(&cold_bytes, t, &pools[&t])))
                .collect();
            // The lookup-table path streams its own repacking: build it (for every copy) before
            // timing, as a model loader would.
            let lut_bytes = if paths.contains(&KernelPath::Lut) && format != Format::Q8_0 {
                let t0 = Instant::now();
                for c in &cold {
                    c.lut().unwrap();
                }
                let lb = m.lut().unwrap().byte_len();
                eprintln!(
                    "{:>5} lut repack of {} copies: {:.2} s",
                    format.name(),
                    cold.len(),
                    t0.elapsed().as_secs_f64()
                );
                Some(lb)
            } else {
                None
            };
            let mut scalar_ns = std::collections::BTreeMap::new();
            let mut avx2_ns = std::collections::BTreeMap::new();
            for &batch in &batches {
                let q = QuantizedActivations::quantize(
                    &xs[..batch * cols],
                    batch,
                    cols,
                    ActQuant::PerToken,
                )
                .unwrap();
                let mut y = vec![0f32; batch * rows];
                for (path, threads, engine) in &engines {
                    if *path == KernelPath::Lut && lut_bytes.is_none() {
                        continue;
                    }
                    let scalar = *path == KernelPath::Scalar;
                    // Scalar GEMM at batch 512 would take minutes: not measured, and no ratio
                    // to scalar is reported there (nothing is extrapolated).
                    if scalar && batch == 512 {
                        continue;
                    }
                    // GEMM runs take up to seconds each: one timed run after the warm-up keeps the
                    // whole bench within minutes on a shared 2-core machine.
                    let budget = Duration::from_millis(if batch == 1 { 300 } else { 0 });
                    let min_reps = if batch == 1 { 10 } else { 1 };
                    let (ns, reps) = time(min_reps, budget, || {
                        engine.gemm_quantized(&m, &q, &mut y).unwrap();
                        std::hint::black_box(&y);
                    });
                    if scalar {
                        scalar_ns.insert((*threads, batch), ns);
                    }
                    let mut variants = vec![("cache", ns, reps)];
                    if batch == 1 {
                        let mut i = 0;
                        let (cns, creps) = time(min_reps, budget, || {
                            engine
                                .gemm_quantized(&cold[i % copies], &q, &mut y)
                                .unwrap();
                            i += 1;
                            std::hint::black_box(&y);
                        });
                        variants.push(("dram", cns, creps));
                    }
                    // Paired measurement: alternate one reduction call over a cold copy's bytes
                    // and one GEMV call over another cold copy, so both see the same moment of
                    // contention on this shared machine; the ratio of their medians is the most
                    // robust "fraction of read bandwidth" this machine can give.
                    let mut paired: Option<(f64, f64)> = None;
                    if batch == 1 && !scalar {
                        let pool = &pools[threads];
                        let (mut tg, mut tr) = (Vec::new(), Vec::new());
                        let start = Instant::now();
                        let mut i = 0usize;
                        let mut red_bytes = 0usize;
                        while tg.len() < 10
                            || (start.elapsed() < Duration::from_millis(300) && tg.len() < 200)
                        {
                            let rb = cold_bytes[(2 * i) % copies];
                            red_bytes += rb.len() * 8;
                            let t = Instant::now();
                            std::hint::black_box(reduce_threads(rb, *threads, pool));
                            tr.push(t.elapsed().as_nanos() as f64);
                            let t = Instant::now();
                            engine
                                .gemm_quantized(&cold[(2 * i + 1) % copies], &q, &mut y)
                                .unwrap();
                            std::hint::black_box(&y);
                            tg.push(t.elapsed().as_nanos() as f64);
                            i += 1;
                        }
                        let med = |v: &mut Vec<f64>| {
                            v.sort_by(f64::total_cmp);
                            v[v.len() / 2]
                        };
                        let red_gbs = red_bytes as f64 / tr.len() as f64 / med(&mut tr);
                        // Bytes as the format stores them in the file: a repacked copy's extra
                        // bytes are the kernel's cost, not bandwidth it earns.
                        let gemv_gbs = wbytes as f64 / med(&mut tg);
                        paired = Some((gemv_gbs / red_gbs, red_gbs));
                    }
                    for (resident, ns, reps) in variants {
                        let streamed = match (path, lut_bytes) {
                            (KernelPath::Lut, Some(lb)) => lb,
                            _ => wbytes,
                        };
                        let gbs = wbytes as f64 / ns;
                        let sref = scalar_ns.get(&(*threads, batch)).copied();
                        if *path == KernelPath::Avx2 {
                            avx2_ns.insert((*threads, batch, resident), ns);
                        }
                        let aref = avx2_ns.get(&(*threads, batch, resident)).copied();
                        let mut rec = json!({
                            "format": format.name(),
                            "path": path.name(),
                            "rows": rows,
                            "cols": cols,
                            "batch": batch,
                            "threads": threads,
                            "weights_resident": resident,
                            "median_ns": ns,
                            "reps": reps,
                            "weight_bytes": wbytes,
                            "streamed_bytes": streamed,
                            "gb_per_s": gbs,
                            "gmac_per_s": (rows * cols * batch) as f64 / ns,
                            "ratio_to_scalar": sref.map(|s| s / ns),
                            "ratio_to_avx2": aref.map(|a| a / ns),
                            "lut_streamed_bytes": (*path == KernelPath::Lut).then_some(streamed),
                            "read_bandwidth_gb_per_s": bw[threads],
                            "ratio_to_read_bandwidth": gbs / bw[threads],
                            "read_bandwidth_same_buffers_gb_per_s": bw_same[threads],
                            "ratio_to_read_bandwidth_same_buffers": gbs / bw_same[threads],
                        });
                        if let (Some((ratio, red)), "dram") = (paired, resident) {
                            rec["ratio_to_read_bandwidth_paired"] = json!(ratio);
                            rec["read_bandwidth_paired_gb_per_s"] = json!(red);
                            eprintln!("      paired: {ratio:.2} of {red:.2} GB/s");
                        }
                        eprintln!(
                            "{:>5} {:>6} {:>4}x{:<4} b{:<3} t{} {:>5}: {:>12.0} ns {:>7.2} GB/s  x{:.1} scalar  x{:.2} avx2  {:.2} of bw",
                            format.name(),
                            path.name(),
                            rows,
                            cols,
                            batch,
                            threads,
                            resident,
                            ns,
                            gbs,
                            sref.map_or(f64::NAN, |s| s / ns),
                            aref.map_or(f64::NAN, |a| a / ns),
                            gbs / bw[threads]
                        );
                        records.push(rec);
                    }
                }
            }
        }
    }

    let best = |pred: &dyn Fn(&Value) -> bool, key: &str| -> Option<(f64, Value)> {
        records
            .iter()
            .filter(|r| pred(r))
            .filter_map(|r| r[key].as_f64().map(|v| (v, r.clone())))
            .max_by(|a, b| a.0.total_cmp(&b.0))
    };
    let gemv_best = best(
        &|r| r["batch"] == 1 && r["weights_resident"] == "dram",
        "ratio_to_read_bandwidth",
    );
    let simd_best = best(
        &|r| r["path"] != "scalar" && r["batch"] == 1,
        "ratio_to_scalar",
    );
    let gemv_best_paired = best(
        &|r| r["batch"] == 1 && r["weights_resident"] == "dram",
        "ratio_to_read_bandwidth_paired",
    );
    let gemv_best_same = best(
        &|r| r["batch"] == 1 && r["weights_resident"] == "dram",
        "ratio_to_read_bandwidth_same_buffers",
    );
    // Medians per format resist the outliers a shared, overloaded machine produces.
    let median_of = |pred: &dyn Fn(&Value) -> bool, key: &str| -> Option<f64> {
        let mut v: Vec<f64> = records
            .iter()
            .filter(|r| pred(r))
            .filter_map(|r| r[key].as_f64())
            .collect();
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| v[v.len() / 2])
    };
    let per_format: serde_json::Map<String, Value> = Format::ALL
        .iter()
        .map(|f| {
            let n = f.name();
            let per_path: serde_json::Map<String, Value> = paths
                .iter()
                .filter(|p| **p != KernelPath::Scalar)
                .map(|p| {
                    let pn = p.name();
                    (
                        pn.to_string(),
                        json!({
                            "gemv_dram_bandwidth_ratio_paired_median": median_of(
                                &|r| r["format"] == n && r["path"] == pn && r["batch"] == 1 && r["weights_resident"] == "dram",
                                "ratio_to_read_bandwidth_paired"),
                            "gemv_dram_bandwidth_ratio_median": median_of(
                                &|r| r["format"] == n && r["path"] == pn && r["batch"] == 1 && r["weights_resident"] == "dram",
                                "ratio_to_read_bandwidth"),
                            "gemv_batch1_over_scalar_median": median_of(
                                &|r| r["format"] == n && r["path"] == pn && r["batch"] == 1,
                                "ratio_to_scalar"),
                            "gemm_over_scalar_median": median_of(
                                &|r| r["format"] == n && r["path"] == pn && r["batch"] != 1,
                                "ratio_to_scalar"),
                        }),
                    )
                })
                .collect();
            (
                n.to_string(),
                json!({
                    "by_path": per_path,
                    "gemv_dram_bandwidth_ratio_same_buffers_median": median_of(
                        &|r| r["format"] == n && r["path"] != "scalar" && r["batch"] == 1 && r["weights_resident"] == "dram",
                        "ratio_to_read_bandwidth_same_buffers"),
                    "gemv_dram_bandwidth_ratio_median": median_of(
                        &|r| r["format"] == n && r["path"] != "scalar" && r["batch"] == 1 && r["weights_resident"] == "dram",
                        "ratio_to_read_bandwidth"),
                    "gemv_simd_over_scalar_median": median_of(
                        &|r| r["format"] == n && r["path"] == "avx2" && r["batch"] == 1,
                        "ratio_to_scalar"),
                    "gemm_simd_over_scalar_median": median_of(
                        &|r| r["format"] == n && r["path"] == "avx2" && r["batch"] != 1,
                        "ratio_to_scalar"),
                    "gemv_dram_lut_over_avx2_median": median_of(
                        &|r| r["format"] == n && r["path"] == "lut" && r["batch"] == 1 && r["weights_resident"] == "dram",
                        "ratio_to_avx2"),
                    "gemv_cache_lut_over_avx2_median": median_of(
                        &|r| r["format"] == n && r["path"] == "lut" && r["batch"] == 1 && r["weights_resident"] == "cache",
                        "ratio_to_avx2"),
                    "gemm_lut_over_avx2_median": median_of(
                        &|r| r["format"] == n && r["path"] == "lut" && r["batch"] != 1,
                        "ratio_to_avx2"),
                    "gemv_lut_over_scalar_median": median_of(
                        &|r| r["format"] == n && r["path"] == "lut" && r["batch"] == 1,
                        "ratio_to_scalar"),
                    "gemv_dram_bandwidth_ratio_median_avx2": median_of(
                        &|r| r["format"] == n && r["path"] == "avx2" && r["batch"] == 1 && r["weights_resident"] == "dram",
                        "ratio_to_read_bandwidth"),
                    "gemv_dram_bandwidth_ratio_paired_median_avx2": median_of(
                        &|r| r["format"] == n && r["path"] == "avx2" && r["batch"] == 1 && r["weights_resident"] == "dram",
                        "ratio_to_read_bandwidth_paired"),
                    "gemv_dram_bandwidth_ratio_paired_median_lut": median_of(
                        &|r| r["format"] == n && r["path"] == "lut" && r["batch"] == 1 && r["weights_resident"] == "dram",
                        "ratio_to_read_bandwidth_paired"),
                    "gemv_dram_bandwidth_ratio_median_lut": median_of(
                        &|r| r["format"] == n && r["path"] == "lut" && r["batch"] == 1 && r["weights_resident"] == "dram",
                        "ratio_to_read_bandwidth"),
                }),
            )
        })
        .collect();
    let spread = |t: usize| -> Value {
        let mut v: Vec<f64> = bw_all
            .iter()
            .filter_map(|r| r["read_bandwidth_gb_per_s"][t.to_string()].as_f64())
            .collect();
        v.sort_by(f64::total_cmp);
        match (v.first(), v.last()) {
            (Some(lo), Some(hi)) => {
                json!({"min": lo, "median": v[v.len() / 2], "max": hi, "max_over_min": hi / lo})
            }
            _ => Value::Null,
        }
    };
    let summary = json!({
        "per_format_medians": per_format,
        "read_bandwidth_spread_gb_per_s": thread_counts.iter().map(|t| (t.to_string(), spread(*t))).collect::<serde_json::Map<_, _>>(),
        "best_of_extra_columns": "the *_best fields below are maxima over noisy records, kept only as extra columns; the medians above lead",
        "gemv_bandwidth_ratio_best": gemv_best.as_ref().map(|b| b.0),
        "gemv_bandwidth_ratio_best_record": gemv_best.map(|b| b.1),
        "gemv_bandwidth_ratio_paired_best": gemv_best_paired.as_ref().map(|b| b.0),
        "gemv_bandwidth_ratio_paired_best_record": gemv_best_paired.map(|b| b.1),
        "gemv_bandwidth_ratio_same_buffers_best": gemv_best_same.as_ref().map(|b| b.0),
        "gemv_bandwidth_ratio_same_buffers_best_record": gemv_best_same.map(|b| b.1),
        "simd_over_scalar_best": simd_best.as_ref().map(|b| b.0),
        "simd_over_scalar_best_record": simd_best.map(|b| b.1),
        "targets": {"gemv_bandwidth_ratio": 0.85, "simd_over_scalar": 10.0},
    });
    let report = json!({
        "area": "kernels",
        "machine": {
            "read_bandwidth_gb_per_s": bw_start.iter().map(|(t, g)| (t.to_string(), json!(g))).collect::<serde_json::Map<_, _>>(),
            "read_bandwidth_per_shape": bw_all,
            "read_bandwidth_buffer_bytes": BW_BYTES,
            "cold_weight_bytes": COLD_BYTES,
            "paths": paths.iter().map(|p| p.name()).collect::<Vec<_>>(),
        },
        "notes": "gb_per_s = packed weight bytes / median time. weights_resident=dram cycles through distinct copies of the matrix (code bytes perturbed, so no page sharing) totalling >= cold_weight_bytes so every call streams weights from memory; cache = the same matrix every call (fits in L3). ratio_to_read_bandwidth divides by the AVX2 read-only reduction (same thread count, timed per 2 MiB piece while cycling through a 512 MiB buffer, like the kernel calls) measured right before that shape, because the machine is shared and its load changes during the run. ratio_to_read_bandwidth_same_buffers divides by the same reduction run over the very copies the dram GEMV streams (measured per shape and format). Activations are pre-quantized (kernel time only). Scalar batch 512 is not measured (no ratio to scalar there; nothing is extrapolated). path=lut is the lookup-table kernel (LutMatrix, built before timing); gb_per_s and every bandwidth ratio of every path count weight_bytes (the format's own bytes, as in the file); lut_streamed_bytes is what the lookup-table layout actually streams (codes at 2 bits/weight plus f32 scales per 32-row tile and 256-unit), its extra bytes being the kernel's cost. The reference reduction prefetches 512 B ahead like the GEMV kernels; summary.read_bandwidth_spread_gb_per_s gives its spread over the per-shape measurements. ratio_to_avx2 compares with the avx2 record of the same shape/batch/threads/residency. Q8_0 has no lut records (not ternary). ratio_to_read_bandwidth_paired (dram records of non-scalar paths) alternates one reduction call over one cold copy's bytes with one GEMV call over another cold copy, ~10-200 pairs, and divides the GEMV's streamed GB/s (median) by the reduction's (median): both see the same contention.",
        "quick": quick,
        "records": records,
        "summary": summary,
    });
    std::fs::create_dir_all(&out_dir).unwrap();
    let path = std::path::Path::new(&out_dir).join("kernels.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    eprintln!("wrote {}", path.display());
    eprintln!(
        "summary: {}",
        serde_json::to_string_pretty(&report["summary"]).unwrap()
    );
}
