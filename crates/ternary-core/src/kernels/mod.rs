//! Matrix kernels: packed weights × int8 activations with integer accumulation.
//!
//! Every path computes, per combine unit (a 256-block for TQ1_0/TQ2_0/I2_S, a 32-block for
//! Q8_0), the exact integer dot product of codes and activations, then folds it into an f32
//! accumulator with [`combine`], unit by unit in order. Fast paths therefore give bit-identical
//! results to [`scalar`] whenever their integer sums are right, which the tests check.
//!
//! Paths are picked at run time ([`KernelPath::best`]);
//! `TERNARY_KERNEL=scalar|avx2|lut|neon|auto` or [`Engine::with_path`] forces one. [`Engine`]
//! owns the thread count. [`lut`] is the lookup-table kernel for ternary formats.

#[cfg(target_arch = "x86_64")]
pub mod avx2;
pub mod lut;
#[cfg(target_arch = "aarch64")]
pub mod neon;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
pub(crate) mod tiled;
#[cfg(target_arch = "x86_64")]
pub mod vnni;

use crate::error::{Error, Result, check_len};
use crate::matrix::{PackedData, PackedMatrix};
use crate::quant::{ActQuant, BlockQ8K, QuantizedActivations};
use rayon::prelude::*;

/// The one place integer block sums become floats; all paths use it in the same order.
#[inline(always)]
pub(crate) fn combine(acc: f32, sumi: i32, scale: f32) -> f32 {
    acc + sumi as f32 * scale
}

/// A kernel implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelPath {
    /// Portable scalar reference.
    Scalar,
    /// x86-64 AVX2.
    Avx2,
    /// aarch64 NEON (never picked automatically: see [`neon`](self) module docs; force it).
    Neon,
    /// Lookup-table kernel ([`lut`]) for TQ1_0, TQ2_0 and I2_S: AVX2 `pshufb` where available,
    /// portable otherwise; Q8_0 falls back to the best dot-product path.
    Lut,
    /// x86-64 AVX-512 VNNI ([`vnni`], 512-bit `vpdpbusd`) for I2_S and TQ2_0 as stored;
    /// TQ1_0 and Q8_0 run the AVX2 kernels.
    Avx512Vnni,
    /// x86-64 AVX-VNNI ([`vnni`], 256-bit VEX `vpdpbusd`) for I2_S and TQ2_0 as stored;
    /// TQ1_0 and Q8_0 run the AVX2 kernels.
    AvxVnni,
}

impl KernelPath {
    /// All paths this build knows.
    pub const ALL: [KernelPath; 6] = [
        KernelPath::Scalar,
        KernelPath::Avx2,
        KernelPath::Neon,
        KernelPath::Lut,
        KernelPath::Avx512Vnni,
        KernelPath::AvxVnni,
    ];

    /// Name used by `TERNARY_KERNEL` and reports.
    pub fn name(self) -> &'static str {
        match self {
            KernelPath::Scalar => "scalar",
            KernelPath::Avx2 => "avx2",
            KernelPath::Neon => "neon",
            KernelPath::Lut => "lut",
            KernelPath::Avx512Vnni => "avx512vnni",
            KernelPath::AvxVnni => "avxvnni",
        }
    }

    /// Whether this CPU can run the path.
    pub fn is_supported(self) -> bool {
        match self {
            KernelPath::Scalar | KernelPath::Lut => true,
            KernelPath::Avx2 => {
                // F16C (fp16 scale conversion) ships with every AVX2 CPU; checked anyway.
                #[cfg(target_arch = "x86_64")]
                {
                    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("f16c")
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    false
                }
            }
            KernelPath::Avx512Vnni => {
                #[cfg(target_arch = "x86_64")]
                {
                    KernelPath::Avx2.is_supported()
                        && std::is_x86_feature_detected!("avx512f")
                        && std::is_x86_feature_detected!("avx512bw")
                        && std::is_x86_feature_detected!("avx512vnni")
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    false
                }
            }
            KernelPath::AvxVnni => {
                #[cfg(target_arch = "x86_64")]
                {
                    KernelPath::Avx2.is_supported() && std::is_x86_feature_detected!("avxvnni")
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    false
                }
            }
            KernelPath::Neon => {
                #[cfg(target_arch = "aarch64")]
                {
                    std::arch::is_aarch64_feature_detected!("neon")
                }
                #[cfg(not(target_arch = "aarch64"))]
                {
                    false
                }
            }
        }
    }

    /// The paths this CPU can run.
    pub fn supported() -> Vec<KernelPath> {
        KernelPath::ALL
            .into_iter()
            .filter(|p| p.is_supported())
            .collect()
    }

    /// The fastest supported path that has been verified on hardware: on x86-64 with AVX2 the
    /// lookup-table kernel (it beat the AVX2 dot-product kernel in 136 of 144 benchmark
    /// configurations, see `docs/formats.md`; it keeps a repacked copy of each matrix, built on
    /// first use), else scalar. NEON is excluded until it has run the equality tests on an ARM
    /// machine.
    pub fn best() -> KernelPath {
        if KernelPath::Avx512Vnni.is_supported() {
            KernelPath::Avx512Vnni
        } else if KernelPath::AvxVnni.is_supported() {
            KernelPath::AvxVnni
        } else if KernelPath::Avx2.is_supported() {
            KernelPath::Lut
        } else {
            KernelPath::Scalar
        }
    }

    /// The fastest verified dot-product (non-table) path: what `Lut` uses for Q8_0.
    pub fn best_dot() -> KernelPath {
        if KernelPath::Avx512Vnni.is_supported() {
            KernelPath::Avx512Vnni
        } else if KernelPath::AvxVnni.is_supported() {
            KernelPath::AvxVnni
        } else if KernelPath::Avx2.is_supported() {
            KernelPath::Avx2
        } else {
            KernelPath::Scalar
        }
    }

    /// The VNNI width of this path, if it is one.
    #[cfg(target_arch = "x86_64")]
    fn vnni_width(self) -> Option<vnni::Width> {
        match self {
            KernelPath::Avx512Vnni => Some(vnni::Width::Zmm),
            KernelPath::AvxVnni => Some(vnni::Width::Ymm),
            _ => None,
        }
    }

    /// Parses a name; `auto` means [`KernelPath::best`]. Errors on unknown or unsupported paths.
    pub fn parse(name: &str) -> Result<KernelPath> {
        let p = match name.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => return Ok(KernelPath::best()),
            "scalar" => KernelPath::Scalar,
            "avx2" => KernelPath::Avx2,
            "neon" => KernelPath::Neon,
            "lut" => KernelPath::Lut,
            "avx512vnni" | "avx512_vnni" => KernelPath::Avx512Vnni,
            "avxvnni" | "avx_vnni" => KernelPath::AvxVnni,
            other => return Err(Error::UnknownPath(other.to_string())),
        };
        if p.is_supported() {
            Ok(p)
        } else {
            Err(Error::UnsupportedPath(p.name()))
        }
    }

    /// `TERNARY_KERNEL` if set, else [`KernelPath::best`].
    pub fn from_env() -> Result<KernelPath> {
        match std::env::var("TERNARY_KERNEL") {
            Ok(v) => KernelPath::parse(&v),
            Err(_) => Ok(KernelPath::best()),
        }
    }
}

/// Runs kernels with a chosen path and thread count. Build one and reuse it: it owns a rayon
/// pool when `threads > 1`.
#[derive(Debug)]
pub struct Engine {
    path: KernelPath,
    threads: usize,
    act: ActQuant,
    /// Our own pool (`Engine::new` with threads > 1); `None` runs inline or, for
    /// [`Engine::in_current_pool`], in whatever rayon pool the caller runs in.
    pool: Option<rayon::ThreadPool>,
}

impl Engine {
    /// An engine with `threads` worker threads (>= 1), the path from `TERNARY_KERNEL` (or
    /// [`KernelPath::best`]) and per-token activation quantization. With the `Lut` path each
    /// ternary [`PackedMatrix`] builds and keeps a lookup-table copy on its first use (about
    /// its own size again); force `TERNARY_KERNEL=avx2` to avoid that memory.
    pub fn new(threads: usize) -> Result<Engine> {
        if threads == 0 {
            return Err(Error::ThreadPool("thread count must be at least 1".into()));
        }
        let pool = if threads > 1 {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .map_err(|e| Error::ThreadPool(e.to_string()))?,
            )
        } else {
            None
        };
        Ok(Engine {
            path: KernelPath::from_env()?,
            threads,
            act: ActQuant::PerToken,
            pool,
        })
    }

    /// An engine without a pool of its own: its parallel parts split work `threads` ways
    /// and run in the rayon pool of the caller (a model that installs one pool for a whole
    /// forward pass avoids a hand-over between two pools for every projection).
    pub fn in_current_pool(threads: usize) -> Result<Engine> {
        if threads == 0 {
            return Err(Error::ThreadPool("thread count must be at least 1".into()));
        }
        Ok(Engine {
            path: KernelPath::from_env()?,
            threads,
            act: ActQuant::PerToken,
            pool: None,
        })
    }

    /// Runs `f` in this engine's pool (or the caller's, see [`Engine::in_current_pool`]).
    fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }

    /// Forces a kernel path (error if this CPU cannot run it).
    pub fn with_path(mut self, path: KernelPath) -> Result<Engine> {
        if !path.is_supported() {
            return Err(Error::UnsupportedPath(path.name()));
        }
        self.path = path;
        Ok(self)
    }

    /// Chooses how [`Engine::gemv`] / [`Engine::gemm`] quantize f32 activations.
    pub fn with_act_quant(mut self, act: ActQuant) -> Engine {
        self.act = act;
        self
    }

    /// The kernel path in use.
    pub fn path(&self) -> KernelPath {
        self.path
    }

    /// The thread count.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// `y = W · x` for one f32 vector: quantizes `x` to int8, runs the integer kernel and
    /// scales back. `x.len() == w.cols()`, `y.len() == w.rows()`.
    pub fn gemv(&self, w: &PackedMatrix, x: &[f32], y: &mut [f32]) -> Result<()> {
        self.gemm(w, x, 1, y)
    }

    /// `Y = X · Wᵀ` for `batch` f32 token rows: `x` is `batch x cols` and `y` is
    /// `batch x rows`, both row-major.
    pub fn gemm(&self, w: &PackedMatrix, x: &[f32], batch: usize, y: &mut [f32]) -> Result<()> {
        let q = QuantizedActivations::quantize(x, batch, w.cols(), self.act)?;
        self.gemm_quantized(w, &q, y)
    }

    /// The integer kernel on already-quantized activations; `y` is `x.rows x w.rows()`.
    pub fn gemm_quantized(
        &self,
        w: &PackedMatrix,
        x: &QuantizedActivations,
        y: &mut [f32],
    ) -> Result<()> {
        check_gemm_shapes("matrix", w.rows(), w.cols(), x, y)?;
        check_i2s_row_length(w)?;
        if self.path == KernelPath::Lut && w.format() != crate::format::Format::Q8_0 {
            return self.gemm_lut(w.lut()?, x, y);
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(width) = self.path.vnni_width()
            && vnni::covers(w.data())
        {
            self.gemm_vnni(width, &mut [(w, y)], x);
            return Ok(());
        }
        // VNNI paths run the AVX2 kernels for the formats they do not cover.
        let path = match self.path {
            KernelPath::Avx512Vnni | KernelPath::AvxVnni => KernelPath::Avx2,
            p => p,
        };
        let dot = row_dot(path, w);
        let rows = w.rows();
        let batch = x.rows;
        let threads = self.threads;
        // Fills `ts` (row-major: rows r0.. of the output, `batch` values each) for batch > 1.
        // Token tiles keep a tile's activations in L2 while one row's weights stay in L1.
        const TILE: usize = 64;
        let fill_chunk = |r0: usize, ts: &mut [f32]| {
            let nr = ts.len() / batch;
            #[cfg(target_arch = "x86_64")]
            if path == KernelPath::Avx2 && w.format() != crate::format::Format::Q8_0 {
                // Decode each weight row once per token tile and reuse it for 4 tokens at a time.
                let bpr = w.cols() / w.format().block_elems();
                let tscale = match w.data() {
                    PackedData::I2S { scale, .. } => *scale,
                    _ => 1.0,
                };
                let (mut codes, mut scales) = (Vec::new(), Vec::new());
                for t0 in (0..batch).step_by(TILE) {
                    let t1 = (t0 + TILE).min(batch);
                    for r in 0..nr {
                        avx2::decode_row(w.data(), bpr, r0 + r, &mut codes, &mut scales);
                        for tq in (t0..t1).step_by(4) {
                            let te = (tq + 4).min(t1);
                            let mut xs = [x.row(tq); 4];
                            for (i, slot) in xs.iter_mut().enumerate().take(te - tq) {
                                *slot = x.row(tq + i);
                            }
                            let mut o = [0f32; 4];
                            // SAFETY: the Avx2 path is only selectable after AVX2 detection.
                            unsafe {
                                avx2::dot_decoded4(&codes, &scales, tscale, &xs[..te - tq], &mut o);
                            }
                            ts[r * batch + tq..r * batch + te].copy_from_slice(&o[..te - tq]);
                        }
                    }
                }
                return;
            }
            for t0 in (0..batch).step_by(TILE) {
                for r in 0..nr {
                    for t in t0..(t0 + TILE).min(batch) {
                        ts[r * batch + t] = dot(r0 + r, x.row(t));
                    }
                }
            }
        };
        if batch == 1 {
            let xr = x.row(0);
            #[cfg(target_arch = "x86_64")]
            let bpr = w.cols() / w.format().block_elems();
            let gemv_chunk = |r0: usize, ys: &mut [f32]| {
                #[cfg(target_arch = "x86_64")]
                if path == KernelPath::Avx2 && avx2::gemv_rows(w.data(), bpr, xr, r0, ys) {
                    return;
                }
                for (i, o) in ys.iter_mut().enumerate() {
                    *o = dot(r0 + i, xr);
                }
            };
            if threads > 1 {
                // One contiguous, 4-row-aligned range per thread: each streams its own part of
                // the matrix once, and the multi-row kernels see whole quads.
                self.install(|| {
                    let chunk = rows.div_ceil(threads).next_multiple_of(4);
                    y.par_chunks_mut(chunk)
                        .enumerate()
                        .for_each(|(ci, ys)| gemv_chunk(ci * chunk, ys));
                });
            } else {
                gemv_chunk(0, y);
            }
            return Ok(());
        }
        let mut tmp = vec![0f32; rows * batch];
        if threads > 1 {
            self.install(|| {
                let chunk = rows.div_ceil(threads * 4).max(1);
                tmp.par_chunks_mut(chunk * batch)
                    .enumerate()
                    .for_each(|(ci, ts)| fill_chunk(ci * chunk, ts));
            });
        } else {
            fill_chunk(0, &mut tmp);
        }
        for (r, tr) in tmp.chunks_exact(batch).enumerate() {
            for (t, &v) in tr.iter().enumerate() {
                y[t * rows + r] = v;
            }
        }
        Ok(())
    }
}

impl Engine {
    /// Several matrices that read the same activations (q/k/v, gate/up) in one parallel
    /// region: one hand-out of work and one join for all of them instead of one per matrix.
    /// Each `y` is `x.rows x w.rows()`. Results equal separate [`Engine::gemm_quantized`]
    /// calls bit for bit.
    pub fn gemm_many(
        &self,
        jobs: &mut [(&PackedMatrix, &mut [f32])],
        x: &QuantizedActivations,
    ) -> Result<()> {
        for (w, y) in jobs.iter() {
            check_gemm_shapes("matrix", w.rows(), w.cols(), x, y)?;
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(width) = self.path.vnni_width()
            && jobs.iter().all(|(w, _)| vnni::covers(w.data()))
        {
            let mut pairs: Vec<(&PackedMatrix, &mut [f32])> =
                jobs.iter_mut().map(|(w, y)| (*w, &mut **y)).collect();
            self.gemm_vnni(width, &mut pairs, x);
            return Ok(());
        }
        for (w, y) in jobs.iter_mut() {
            self.gemm_quantized(w, x, y)?;
        }
        Ok(())
    }

    /// The VNNI kernels over several matrices, in one parallel region. On both widths
    /// (zmm, and ymm as two 8-row halves of each line) the whole groups of 16 rows of every TQ2_0 / I2_S matrix with 256-value rows run on
    /// its [`tiled::Tiled16`] copy (built by the first call with several tokens); the other
    /// rows and matrices run on the stored layout, cut into `threads`-balanced contiguous
    /// pieces.
    #[cfg(target_arch = "x86_64")]
    fn gemm_vnni(
        &self,
        width: vnni::Width,
        jobs: &mut [(&PackedMatrix, &mut [f32])],
        x: &QuantizedActivations,
    ) {
        let tokens = x.rows;
        // Per job, the first row the stored-layout kernels compute.
        let mut from = vec![0usize; jobs.len()];
        {
            // The copy is built by the first call with several tokens (a prompt), where it
            // pays for itself many times over, and then used for single tokens too; a
            // single token alone does not build it, so loading a model and running its
            // first token stays a copy of the file's bytes.
            let tiled: Vec<Option<&tiled::Tiled16>> = if tokens > 1 {
                self.install(|| jobs.iter().map(|(w, _)| w.tiled()).collect())
            } else {
                jobs.iter().map(|(w, _)| w.tiled_if_built()).collect()
            };
            if tiled.iter().any(Option::is_some) {
                let ta = vnni::TileActs::new(x);
                self.run_tiled(width, &tiled, jobs, &ta, tokens);
                for (f, t) in from.iter_mut().zip(&tiled) {
                    *f = t.map_or(0, tiled::Tiled16::rows);
                }
            }
        }
        if jobs.iter().zip(&from).all(|((w, _), &f)| f == w.rows()) {
            return;
        }
        let acts = vnni::Acts::new(x);
        let total: usize = jobs
            .iter()
            .zip(&from)
            .map(|((w, _), &f)| w.rows() - f)
            .sum();
        // Pieces of about total / (4 * threads) rows (4-aligned), so the threads stay
        // balanced when a matrix ends inside a thread's share.
        let piece = total.div_ceil(4 * self.threads).next_multiple_of(4).max(4);
        if tokens == 1 {
            let mut work: Vec<(&PackedMatrix, usize, &mut [f32])> = Vec::new();
            for ((w, y), &f) in jobs.iter_mut().zip(&from) {
                for (ci, ys) in y[f..].chunks_mut(piece).enumerate() {
                    work.push((*w, f + ci * piece, ys));
                }
            }
            let run = |(w, r0, ys): (&PackedMatrix, usize, &mut [f32])| {
                // SAFETY: the path (and so its width) was accepted by `is_supported`.
                unsafe { vnni::gemv(width, w.data(), w.cols(), &acts, r0, ys) }
            };
            if self.threads > 1 {
                self.install(|| work.into_par_iter().for_each(run));
            } else {
                work.into_iter().for_each(run);
            }
            return;
        }
        for ((w, y), &f) in jobs.iter_mut().zip(&from) {
            let rows = w.rows();
            if f == rows {
                continue;
            }
            let mut tmp = vec![0f32; (rows - f) * tokens];
            let chunk = (rows - f).div_ceil(self.threads * 4).max(1);
            let fill = |(ci, ts): (usize, &mut [f32])| {
                // SAFETY: as above.
                unsafe {
                    vnni::gemm_rows(width, w.data(), w.cols(), &acts, tokens, f + ci * chunk, ts);
                }
            };
            if self.threads > 1 {
                self.install(|| {
                    tmp.par_chunks_mut(chunk * tokens)
                        .enumerate()
                        .for_each(fill);
                });
            } else {
                tmp.chunks_mut(chunk * tokens).enumerate().for_each(fill);
            }
            for (r, tr) in tmp.chunks_exact(tokens).enumerate() {
                for (t, &v) in tr.iter().enumerate() {
                    y[t * rows + f + r] = v;
                }
            }
        }
    }

    /// The [`tiled::Tiled16`] kernels for the jobs that have a tiled copy. One token: the
    /// groups of all matrices cut into `threads`-balanced pieces (contiguous outputs). More
    /// tokens: each matrix's tokens cut into `threads` ranges (each range's outputs are
    /// contiguous; every range streams the weights once per 64-token tile).
    #[cfg(target_arch = "x86_64")]
    fn run_tiled(
        &self,
        width: vnni::Width,
        tiled: &[Option<&tiled::Tiled16>],
        jobs: &mut [(&PackedMatrix, &mut [f32])],
        acts: &vnni::TileActs<'_>,
        tokens: usize,
    ) {
        if tokens == 1 {
            let total: usize = tiled.iter().flatten().map(|t| t.groups).sum();
            let piece = total.div_ceil(4 * self.threads).max(1);
            let mut work: Vec<(&tiled::Tiled16, usize, &mut [f32])> = Vec::new();
            for (t, (_, y)) in tiled.iter().zip(jobs.iter_mut()) {
                if let Some(t) = t {
                    for (ci, ys) in y[..t.rows()].chunks_mut(16 * piece).enumerate() {
                        work.push((t, ci * piece, ys));
                    }
                }
            }
            // SAFETY: only reached on a VNNI path whose features were detected; each piece
            // is whole groups.
            let run = |(t, g0, ys): (&tiled::Tiled16, usize, &mut [f32])| unsafe {
                vnni::tiled_gemv(width, t, acts, g0, ys);
            };
            if self.threads > 1 {
                self.install(|| work.into_par_iter().for_each(run));
            } else {
                work.into_iter().for_each(run);
            }
            return;
        }
        let per = tokens.div_ceil(self.threads);
        let mut work: Vec<(&tiled::Tiled16, usize, usize, &mut [f32])> = Vec::new();
        for (t, (w, y)) in tiled.iter().zip(jobs.iter_mut()) {
            if let Some(t) = t {
                let rows = w.rows();
                for (ci, ys) in y.chunks_mut(per * rows).enumerate() {
                    work.push((t, ci * per, rows, ys));
                }
            }
        }
        // SAFETY: as above; each piece is whole token rows of a `rows`-wide output.
        let run = |(t, t0, rows, ys): (&tiled::Tiled16, usize, usize, &mut [f32])| unsafe {
            vnni::tiled_gemm(width, t, acts, t0, rows, ys);
        };
        if self.threads > 1 {
            self.install(|| work.into_par_iter().for_each(run));
        } else {
            work.into_iter().for_each(run);
        }
    }
}

impl Engine {
    /// The row multiple that [`Engine::gemv_rows`] ranges start at: one group of the VNNI
    /// paths' 16-row interleaved copy (a multiple of every multi-row kernel's rows).
    pub const ROW_GRANULE: usize = 16;

    /// Whether [`Engine::gemv_rows`] runs `w` on this engine's path: every path except the
    /// lookup-table one for ternary formats, which builds its tables once per token for the
    /// whole matrix ([`Engine::gemm_quantized`] runs it).
    pub fn supports_gemv_rows(&self, w: &PackedMatrix) -> bool {
        self.path != KernelPath::Lut || w.format() == crate::format::Format::Q8_0
    }

    /// Rows `r0 .. r0 + y.len()` of `W · x` for the one token of `x`, on the calling
    /// thread, equal bit for bit to those rows of [`Engine::gemm_quantized`] (the same
    /// kernels on a sub-range: every row's result is independent of the range). For a
    /// caller that runs its own threads over a step (the decode step of a model): it can
    /// split a matrix's rows without a fork-join per matrix. `r0` is a multiple of
    /// [`Engine::ROW_GRANULE`], and so is `r0 + y.len()` unless it is `w.rows()`.
    pub fn gemv_rows(
        &self,
        w: &PackedMatrix,
        x: &QuantizedActivations,
        r0: usize,
        y: &mut [f32],
    ) -> Result<()> {
        let end = r0.checked_add(y.len()).filter(|&e| e <= w.rows());
        let aligned = |r: usize| r.is_multiple_of(Self::ROW_GRANULE);
        match end {
            Some(e) if (aligned(r0) || y.is_empty()) && (aligned(e) || e == w.rows()) => {}
            _ => {
                return Err(Error::Shape(format!(
                    "rows {r0}..{r0}+{} of a {}-row matrix are not a range of whole {}-row \
                     groups",
                    y.len(),
                    w.rows(),
                    Self::ROW_GRANULE
                )));
            }
        }
        if x.rows != 1 {
            return Err(Error::Shape(format!(
                "gemv_rows takes one token, got {}",
                x.rows
            )));
        }
        if x.cols != w.cols() {
            return Err(Error::Shape(format!(
                "activations have {} features, matrix has {} columns",
                x.cols,
                w.cols()
            )));
        }
        check_len(
            "activations blocks",
            x.blocks.len(),
            x.blocks_per_row,
            "blocks",
        )?;
        check_i2s_row_length(w)?;
        if !self.supports_gemv_rows(w) {
            return Err(Error::UnsupportedPath("lut (gemv_rows)"));
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(width) = self.path.vnni_width()
            && vnni::covers(w.data())
        {
            // As `gemm_vnni` for one token: rows of the 16-row copy (if a prompt built it)
            // on the interleaved kernel, the others on the stored layout.
            let mut done = 0;
            if let Some(t) = w.tiled_if_built() {
                let tend = t.rows().min(r0 + y.len());
                if r0 < tend {
                    let ta = vnni::TileActs::new(x);
                    // SAFETY: the path's features were detected (`with_path`/`from_env`);
                    // `r0` and `tend` are multiples of 16 inside the copy's groups.
                    unsafe { vnni::tiled_gemv(width, t, &ta, r0 / 16, &mut y[..tend - r0]) };
                    done = tend - r0;
                }
            }
            if done < y.len() {
                let acts = vnni::Acts::new(x);
                // SAFETY: as above; the rows exist (checked).
                unsafe { vnni::gemv(width, w.data(), w.cols(), &acts, r0 + done, &mut y[done..]) };
            }
            return Ok(());
        }
        let path = match self.path {
            KernelPath::Avx512Vnni | KernelPath::AvxVnni => KernelPath::Avx2,
            p => p,
        };
        let xr = x.row(0);
        #[cfg(target_arch = "x86_64")]
        if path == KernelPath::Avx2
            && avx2::gemv_rows(w.data(), w.cols() / w.format().block_elems(), xr, r0, y)
        {
            return Ok(());
        }
        let dot = row_dot(path, w);
        for (i, o) in y.iter_mut().enumerate() {
            *o = dot(r0 + i, xr);
        }
        Ok(())
    }
}

/// The integer kernels read I2_S rows in 128-value blocks.
fn check_i2s_row_length(w: &PackedMatrix) -> Result<()> {
    if w.format() == crate::format::Format::I2S && !w.cols().is_multiple_of(128) {
        return Err(Error::NotBlockMultiple {
            what: "i2_s kernel row length",
            format: "i2_s",
            len: w.cols(),
            block: 128,
        });
    }
    Ok(())
}

/// Checks that activations `x` fit a `rows x cols` weight matrix and `y` holds the product.
fn check_gemm_shapes(
    matrix: &str,
    rows: usize,
    cols: usize,
    x: &QuantizedActivations,
    y: &[f32],
) -> Result<()> {
    if x.cols != cols {
        return Err(Error::Shape(format!(
            "activations have {} features, {matrix} has {cols} columns",
            x.cols
        )));
    }
    check_len(
        "activations blocks",
        x.blocks.len(),
        x.rows * x.blocks_per_row,
        "blocks",
    )?;
    check_len("gemm output", y.len(), x.rows * rows, "elements")
}

impl Engine {
    /// The lookup-table kernel on a [`lut::LutMatrix`] (what the `Lut` path runs for ternary
    /// formats): per token, builds the tables once, then splits the 32-row tiles between the
    /// threads. `y` is `x.rows x m.rows()`.
    pub fn gemm_lut(
        &self,
        m: &lut::LutMatrix,
        x: &QuantizedActivations,
        y: &mut [f32],
    ) -> Result<()> {
        check_gemm_shapes("lut matrix", m.rows(), m.cols(), x, y)?;
        #[cfg(target_arch = "x86_64")]
        let simd = std::is_x86_feature_detected!("avx2");
        #[cfg(not(target_arch = "x86_64"))]
        let simd = false;
        let rows = m.rows();
        let tiles = m.tiles();
        // Several tokens per thread: split the tokens, so each thread builds its own tables
        // (table building is the serial part of the tile split below).
        if self.threads > 1 && x.rows >= 2 * self.threads {
            self.install(|| {
                y.par_chunks_mut(rows)
                    .enumerate()
                    .for_each_init(Vec::new, |tables, (t, yt)| {
                        let xr = x.row(t);
                        lut::build_tables(xr, x.blocks_per_row, tables);
                        lut::gemv_tiles(m, 0, tables, xr, yt, simd);
                    });
            });
            return Ok(());
        }
        let mut tables = Vec::new();
        for (t, yt) in y.chunks_exact_mut(rows).enumerate() {
            let xr = x.row(t);
            lut::build_tables(xr, x.blocks_per_row, &mut tables);
            if self.threads > 1 {
                self.install(|| {
                    let per = tiles.div_ceil(self.threads);
                    yt.par_chunks_mut(per * lut::LutMatrix::TILE_ROWS)
                        .enumerate()
                        .for_each(|(ci, ys)| lut::gemv_tiles(m, ci * per, &tables, xr, ys, simd));
                });
            } else {
                lut::gemv_tiles(m, 0, &tables, xr, yt, simd);
            }
        }
        Ok(())
    }
}

type RowDot<'a> = Box<dyn Fn(usize, &[BlockQ8K]) -> f32 + Sync + 'a>;

/// The dot product of weight row `r` with one token, for a path and format.
fn row_dot(path: KernelPath, w: &PackedMatrix) -> RowDot<'_> {
    let bpr = w.cols() / w.format().block_elems();
    match (path, w.data()) {
        (KernelPath::Scalar, PackedData::Tq1_0(b)) => {
            Box::new(move |r, x| scalar::dot_tq1(&b[r * bpr..(r + 1) * bpr], x))
        }
        (KernelPath::Scalar, PackedData::Tq2_0(b)) => {
            Box::new(move |r, x| scalar::dot_tq2(&b[r * bpr..(r + 1) * bpr], x))
        }
        (KernelPath::Scalar, PackedData::Q8_0(b)) => {
            Box::new(move |r, x| scalar::dot_q8_0(&b[r * bpr..(r + 1) * bpr], x))
        }
        (KernelPath::Scalar, PackedData::I2S { blocks, scale }) => {
            let s = *scale;
            Box::new(move |r, x| scalar::dot_i2s(&blocks[r * bpr..(r + 1) * bpr], s, x))
        }
        #[cfg(target_arch = "x86_64")]
        (KernelPath::Avx2, data) => avx2::row_dot(data, bpr),
        #[cfg(not(target_arch = "x86_64"))]
        (KernelPath::Avx2, _) => unreachable!("Engine::with_path rejects unsupported paths"),
        #[cfg(target_arch = "aarch64")]
        (KernelPath::Neon, data) => neon::row_dot(data, bpr),
        #[cfg(not(target_arch = "aarch64"))]
        (KernelPath::Neon, _) => unreachable!("Engine::with_path rejects unsupported paths"),
        // Formats the lookup-table kernel does not cover (Q8_0) use the best dot product.
        (KernelPath::Lut, _) => row_dot(KernelPath::best_dot(), w),
        // Formats the VNNI kernels do not cover (TQ1_0, Q8_0) use AVX2.
        (KernelPath::Avx512Vnni | KernelPath::AvxVnni, _) => row_dot(KernelPath::Avx2, w),
    }
}
