//! The decode step (one new token) with one hand-out of helper threads per token.
//!
//! Run as prompts run, a decode step is five fork-joins per layer (q/k/v, attention, o,
//! gate/up, down) in the model's rayon pool, 120 for a 24-layer model, and an idle rayon
//! worker goes to sleep after a few dozen yields, so most of those regions began by waking
//! it (a futex and, on a virtual machine, a halted vCPU). Here the calling thread (the
//! leader) runs the step and the pool's other threads join it once per token as helpers
//! that spin between phases: the leader does the per-token f32 work (RMSNorm, activation
//! quantization, residual adds), publishes a phase (its input prepared once), and every
//! thread takes chunks of it from an atomic counter; the leader waits only for chunks a
//! helper has taken and not finished. A helper that is not running (another process on
//! its core, or not started yet) never holds the step up: the leader takes every chunk
//! itself, as rayon's join runs a job nobody stole. Phases per layer: q/k/v (with RoPE
//! and the cache write, per range of key/value heads), attention (per range of heads), o,
//! gate/up (act(gate)·up fused in, per row range), down; then the head.
//!
//! Every value is computed by the same kernels in the same order as the per-op path (row
//! ranges of a projection are its rows, attention per head is per head), so the logits are
//! bit-identical to it and at every thread count (unit tests in `super`).

use super::{AttnShape, KvCache, KvElem, KvStore, Projection, Transformer, ops};
use crate::config::Activation;
use crate::error::{Error, Result};
use std::cell::UnsafeCell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A slice shared by the threads of the decode region, each writing only the part it took
/// from a phase's counter, and reading only after the barrier that ends the phase.
struct Shared<T> {
    ptr: *mut T,
    len: usize,
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Shared<T> {}

// SAFETY: access is coordinated as the methods' contracts say (disjoint writes within a
// phase, reads after the barrier); `T` is plain data moved between threads.
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    fn new(v: &mut [T]) -> Self {
        Self {
            ptr: v.as_mut_ptr(),
            len: v.len(),
        }
    }

    /// `len` elements from `at`, to write.
    ///
    /// # Safety
    /// No other thread touches them until the barrier that ends this phase.
    #[allow(clippy::mut_from_ref)]
    unsafe fn part(&self, at: usize, len: usize) -> &mut [T] {
        assert!(at + len <= self.len, "shared slice out of range");
        // SAFETY: in bounds (checked); exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(at), len) }
    }

    /// The whole slice, to read.
    ///
    /// # Safety
    /// Nobody writes it while the borrow lives (the phase that wrote it has ended).
    unsafe fn all(&self) -> &[T] {
        // SAFETY: from the caller.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// The prepared input of the phases of one kind, written by the leader before it
/// publishes such a phase and read by whoever runs one of its chunks.
struct Slot<T>(UnsafeCell<Option<T>>);

// SAFETY: the leader writes a slot only between phases, after every chunk of the previous
// phase of its kind is done (`Step::finish`), and a thread reads it only while it holds
// an unfinished chunk of the published phase; `T` is `Sync` for the shared reads.
unsafe impl<T: Send + Sync> Sync for Slot<T> {}

impl<T> Slot<T> {
    fn new() -> Self {
        Self(UnsafeCell::new(None))
    }

    /// # Safety
    /// No chunk of a phase reading this slot is unfinished.
    unsafe fn set(&self, v: T) {
        // SAFETY: from the caller.
        unsafe { *self.0.get() = Some(v) };
    }

    /// # Safety
    /// The caller holds an unfinished chunk of a published phase that reads this slot.
    unsafe fn get(&self) -> &T {
        // SAFETY: from the caller: set before the phase was published, not reset while
        // one of its chunks is unfinished.
        unsafe { (*self.0.get()).as_ref() }.expect("a phase's input is set before it is published")
    }
}

/// Phases of one layer, in order.
const QKV: usize = 0;
const ATTN: usize = 1;
const O: usize = 2;
const FFN: usize = 3;
const DOWN: usize = 4;
const PHASES: usize = 5;

/// Rows per chunk of a `rows`-row projection: about four chunks per thread (the slack a
/// slowed thread leaves to the others), a multiple of 64 rows (so of every projection's
/// granule, see `decode_region_ok`, and a stream of tens of KB).
fn chunk_rows(rows: usize, threads: usize) -> usize {
    rows.div_ceil(4 * threads).next_multiple_of(64)
}

/// One decode step's shared state.
struct Step<'a, P: Projection, E> {
    model: &'a Transformer<P>,
    start: usize,
    kv: usize,
    keys: Vec<Shared<E>>,
    values: Vec<Shared<E>>,
    q: Shared<f32>,
    k: Shared<f32>,
    v: Shared<f32>,
    attn: Shared<f32>,
    proj: Shared<f32>,
    inner: Shared<f32>,
    /// The normed final hidden state (the head's input).
    xn: Shared<f32>,
    logits: Shared<f32>,
    /// Inputs of the q/k/v, o, gate/up and down phases.
    inputs: [Slot<P::Input>; 4],
    /// Per phase (`PHASES` per layer, then the head): chunks handed out, chunks done.
    taken: Vec<AtomicUsize>,
    done: Vec<AtomicUsize>,
    /// `1 + ` the latest published phase (0: none yet).
    published: AtomicUsize,
    stop: AtomicBool,
    /// A chunk's thread unwound (the leader must not wait for its chunk).
    poisoned: AtomicBool,
    failure: Mutex<Option<Error>>,
    shape: AttnShape,
    kv_per: usize,
    heads_per: usize,
    o_chunk: usize,
    ffn_chunk: usize,
}

/// Marks the step poisoned if a thread unwinds while it holds a chunk.
struct PoisonOnUnwind<'a>(&'a AtomicBool);

impl Drop for PoisonOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Release);
        }
    }
}

/// Sets the step's `stop` flag when the leader's part ends, by return or unwinding.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

const HEAD_CHUNK: usize = 256;

impl<P: Projection, E: KvElem> Step<'_, P, E> {
    fn layers(&self) -> usize {
        self.model.blocks.len()
    }

    /// Chunks of phase `phase`.
    fn chunks(&self, phase: usize) -> usize {
        let c = &self.model.config;
        if phase == PHASES * self.layers() {
            return c.vocab_size.div_ceil(HEAD_CHUNK);
        }
        match phase % PHASES {
            QKV => c.n_kv_heads.div_ceil(self.kv_per),
            ATTN => c.n_heads.div_ceil(self.heads_per),
            O | DOWN => c.hidden_size.div_ceil(self.o_chunk),
            _ => c.ffn_hidden_size.div_ceil(self.ffn_chunk),
        }
    }

    /// Runs chunks of `phase` until none is left.
    fn work(&self, phase: usize) {
        let n = self.chunks(phase);
        let _guard = PoisonOnUnwind(&self.poisoned);
        loop {
            let i = self.taken[phase].fetch_add(1, Ordering::Relaxed);
            if i >= n {
                return;
            }
            if let Err(e) = self.run(phase, i) {
                self.fail(e);
            }
            self.done[phase].fetch_add(1, Ordering::Release);
        }
    }

    fn fail(&self, e: Error) {
        self.failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert(e);
    }

    /// Publishes `phase`, runs its chunks with the helpers and waits for all of them.
    fn phase(&self, phase: usize) -> Result<()> {
        self.published.store(phase + 1, Ordering::Release);
        self.work(phase);
        let n = self.chunks(phase);
        let mut spins = 0u32;
        while self.done[phase].load(Ordering::Acquire) < n {
            assert!(
                !self.poisoned.load(Ordering::Acquire),
                "a decode helper thread panicked"
            );
            wait_a_little(&mut spins);
        }
        match self
            .failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// A helper: runs chunks of whatever phase is published until the leader stops.
    fn help(&self) {
        let mut seen = 0;
        let mut spins = 0u32;
        while !self.stop.load(Ordering::Acquire) {
            let p = self.published.load(Ordering::Acquire);
            if p == seen {
                wait_a_little(&mut spins);
            } else {
                seen = p;
                self.work(p - 1);
                spins = 0;
            }
        }
    }

    /// Chunk `i` of `phase`.
    fn run(&self, phase: usize, i: usize) -> Result<()> {
        let m = self.model;
        let c = &m.config;
        let (d, f, hd) = (c.hidden_size, c.ffn_hidden_size, c.head_dim());
        let group = c.n_heads / c.n_kv_heads;
        if phase == PHASES * self.layers() {
            let w = m.output.as_deref().unwrap_or(&m.token_embd);
            let r0 = i * HEAD_CHUNK;
            // SAFETY: the leader wrote `xn` before publishing the head; the rows of
            // chunk `i` are this thread's.
            let (x, o) = unsafe {
                (
                    self.xn.all(),
                    self.logits.part(r0, HEAD_CHUNK.min(c.vocab_size - r0)),
                )
            };
            for (j, v) in o.iter_mut().enumerate() {
                let id = r0 + j;
                *v = ops::dot(x, &w[id * d..(id + 1) * d]);
            }
            return Ok(());
        }
        let (layer, kind) = (phase / PHASES, phase % PHASES);
        let b = &m.blocks[layer];
        // SAFETY (every `part`, `all` and `get` below): chunk `i` of the published phase
        // is this thread's until it is counted done; its input was set and the buffers it
        // reads were written by phases that are done.
        match kind {
            QKV => {
                let input = unsafe { self.inputs[0].get() };
                // Key/value heads `j0 .. j0 + nj` and their query heads.
                let j0 = i * self.kv_per;
                let nj = self.kv_per.min(c.n_kv_heads - j0);
                let (qj, kj, vj) = unsafe {
                    (
                        self.q.part(j0 * group * hd, nj * group * hd),
                        self.k.part(j0 * hd, nj * hd),
                        self.v.part(j0 * hd, nj * hd),
                    )
                };
                b.q.apply_rows(input, j0 * group * hd, qj)?;
                b.k.apply_rows(input, j0 * hd, kj)?;
                b.v.apply_rows(input, j0 * hd, vj)?;
                m.rope.apply(qj, self.start);
                m.rope.apply(kj, self.start);
                let at = self.start * self.kv + j0 * hd;
                let (kc, vc) = unsafe {
                    (
                        self.keys[layer].part(at, nj * hd),
                        self.values[layer].part(at, nj * hd),
                    )
                };
                kc.iter_mut()
                    .zip(kj.iter())
                    .for_each(|(c, &x)| *c = E::from_f32(x));
                vc.iter_mut()
                    .zip(vj.iter())
                    .for_each(|(c, &x)| *c = E::from_f32(x));
            }
            ATTN => {
                let h0 = i * self.heads_per;
                let nh = self.heads_per.min(c.n_heads - h0);
                let (qa, ka, va, o) = unsafe {
                    (
                        self.q.all(),
                        self.keys[layer].all(),
                        self.values[layer].all(),
                        self.attn.part(h0 * hd, nh * hd),
                    )
                };
                E::attend(&self.shape, qa, ka, va, 0, h0, o);
            }
            O | DOWN => {
                let (p, input) = if kind == O {
                    (&b.o, unsafe { self.inputs[1].get() })
                } else {
                    (&b.down, unsafe { self.inputs[3].get() })
                };
                let r0 = i * self.o_chunk;
                p.apply_rows(input, r0, unsafe {
                    self.proj.part(r0, self.o_chunk.min(d - r0))
                })?;
            }
            _ => {
                let input = unsafe { self.inputs[2].get() };
                let r0 = i * self.ffn_chunk;
                let n = self.ffn_chunk.min(f - r0);
                let o = unsafe { self.inner.part(r0, n) };
                let mut up = vec![0f32; n];
                b.gate.apply_rows(input, r0, o)?;
                b.up.apply_rows(input, r0, &mut up)?;
                let act = match c.activation {
                    Activation::Silu => ops::silu,
                    Activation::ReluSquared => ops::relu_squared,
                };
                o.iter_mut().zip(&up).for_each(|(g, u)| *g = act(*g) * u);
            }
        }
        Ok(())
    }

    /// The leader's part: the per-token work and every phase in order.
    fn lead(&self, token: u32) -> Result<()> {
        let m = self.model;
        let c = &m.config;
        let (d, f) = (c.hidden_size, c.ffn_hidden_size);
        let eps = c.norm_eps;
        let t = token as usize;
        let mut x = m.token_embd[t * d..(t + 1) * d].to_vec();
        let (mut h, mut hf) = (vec![0f32; d], vec![0f32; f]);
        // SAFETY (every `set` and `all`): the phases run one after the other, each done
        // before the next is published, so nobody reads a slot or a buffer while it is
        // written here, and what is read here was written by finished phases.
        for (layer, b) in m.blocks.iter().enumerate() {
            let p = layer * PHASES;
            ops::rms_norm(&x, &b.attn_norm, eps, &mut h);
            unsafe { self.inputs[0].set(b.q.prepare(&h, 1)?) };
            self.phase(p + QKV)?;
            self.phase(p + ATTN)?;
            ops::rms_norm(unsafe { self.attn.all() }, &b.attn_sub_norm, eps, &mut h);
            unsafe { self.inputs[1].set(b.o.prepare(&h, 1)?) };
            self.phase(p + O)?;
            x.iter_mut()
                .zip(unsafe { self.proj.all() })
                .for_each(|(x, p)| *x += p);
            ops::rms_norm(&x, &b.ffn_norm, eps, &mut h);
            unsafe { self.inputs[2].set(b.gate.prepare(&h, 1)?) };
            self.phase(p + FFN)?;
            ops::rms_norm(unsafe { self.inner.all() }, &b.ffn_sub_norm, eps, &mut hf);
            unsafe { self.inputs[3].set(b.down.prepare(&hf, 1)?) };
            self.phase(p + DOWN)?;
            x.iter_mut()
                .zip(unsafe { self.proj.all() })
                .for_each(|(x, p)| *x += p);
        }
        // SAFETY: no phase runs; the head phase reads `xn` after it is published.
        ops::rms_norm(&x, &m.output_norm, eps, unsafe { self.xn.part(0, d) });
        self.phase(PHASES * self.layers())
    }
}

/// Spins first (phases last tens to hundreds of microseconds and the threads arrive close
/// together), then yields, so a loaded machine's other processes still get the cores.
fn wait_a_little(spins: &mut u32) {
    const SPINS: u32 = 1 << 12;
    if *spins < SPINS {
        std::hint::spin_loop();
        *spins += 1;
    } else {
        std::thread::yield_now();
    }
}

impl<P: Projection> Transformer<P> {
    /// Whether a single new token runs as one decode step with helper threads (module
    /// `model::decode`): every projection computes row ranges ([`Projection::row_granule`]),
    /// in groups that divide a head and the 64-row chunk multiple, and
    /// [`Transformer::with_decode_region`] did not turn it off.
    pub fn runs_decode_region(&self) -> bool {
        self.decode_region && self.decode_region_ok()
    }

    fn decode_region_ok(&self) -> bool {
        let hd = self.config.head_dim();
        self.projections().all(|p| {
            p.row_granule()
                .is_some_and(|g| g > 0 && hd.is_multiple_of(g) && 64usize.is_multiple_of(g))
        })
    }

    /// One token after the cached positions; returns its logits. The caller checked the
    /// token and the cache and runs this in the model's pool.
    pub(super) fn decode_step(&self, cache: &mut KvCache, token: u32) -> Result<Vec<f32>> {
        let start = cache.len;
        let kv = cache.kv_dim;
        let logits = match &mut cache.store {
            KvStore::F32 { keys, values } => self.decode_with(keys, values, start, kv, token),
            KvStore::F16 { keys, values } => self.decode_with(keys, values, start, kv, token),
        }?;
        cache.len += 1;
        Ok(logits)
    }

    fn decode_with<E: KvElem>(
        &self,
        keys: &mut [Vec<E>],
        values: &mut [Vec<E>],
        start: usize,
        kv: usize,
        token: u32,
    ) -> Result<Vec<f32>> {
        let c = &self.config;
        let (d, f, hd) = (c.hidden_size, c.ffn_hidden_size, c.head_dim());
        let threads = rayon::current_num_threads();
        // One more position in every layer, zeros until its heads are written.
        for cache in keys.iter_mut().chain(values.iter_mut()) {
            cache.resize((start + 1) * kv, E::from_f32(0.0));
        }
        let (mut q, mut k, mut v) = (vec![0f32; d], vec![0f32; kv], vec![0f32; kv]);
        let (mut attn, mut proj, mut inner) = (vec![0f32; d], vec![0f32; d], vec![0f32; f]);
        let (mut xn, mut logits) = (vec![0f32; d], vec![0f32; c.vocab_size]);
        let phases = PHASES * self.blocks.len() + 1;
        // q/k/v and attention in about two chunks per thread (one at one thread): a chunk
        // of a few heads streams short pieces of three matrices, and attention over a few
        // heads reads a few hundred bytes of every cached row (a new page per position).
        let slack = if threads == 1 { 1 } else { 2 };
        let step = Step {
            model: self,
            start,
            kv,
            keys: keys.iter_mut().map(|v| Shared::new(v)).collect(),
            values: values.iter_mut().map(|v| Shared::new(v)).collect(),
            q: Shared::new(&mut q),
            k: Shared::new(&mut k),
            v: Shared::new(&mut v),
            attn: Shared::new(&mut attn),
            proj: Shared::new(&mut proj),
            inner: Shared::new(&mut inner),
            xn: Shared::new(&mut xn),
            logits: Shared::new(&mut logits),
            inputs: [Slot::new(), Slot::new(), Slot::new(), Slot::new()],
            taken: (0..phases).map(|_| AtomicUsize::new(0)).collect(),
            done: (0..phases).map(|_| AtomicUsize::new(0)).collect(),
            published: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            failure: Mutex::new(None),
            shape: AttnShape {
                hd,
                kv,
                d,
                group: c.n_heads / c.n_kv_heads,
                scale: 1.0 / (hd as f32).sqrt(),
                start,
            },
            kv_per: c.n_kv_heads.div_ceil(threads * slack),
            heads_per: c.n_heads.div_ceil(threads * slack),
            o_chunk: chunk_rows(d, threads),
            ffn_chunk: chunk_rows(f, threads),
        };
        let result = if threads == 1 {
            step.lead(token)
        } else {
            rayon::scope(|s| {
                for _ in 1..threads {
                    s.spawn(|_| step.help());
                }
                // Stops the helpers however the leader leaves (a helper job nobody took
                // by then runs here afterwards and returns at once).
                let _stop = StopOnDrop(&step.stop);
                step.lead(token)
            })
        };
        drop(step);
        result.map(|()| logits)
    }
}
