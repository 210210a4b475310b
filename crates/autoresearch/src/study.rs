//! Studies: ask / tell, parallel optimisation with threads, per-trial timeouts, stale-trial
//! recovery, best trial and Pareto front.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::pruner::{NopPruner, Pruner};
use crate::sampler::{AutoSampler, SampleContext, Sampler, best_trial, trial_rng};
use crate::space::{ParamValue, Params, SearchSpace};
use crate::storage::{InMemoryStorage, Storage, StudyMeta};
use crate::trial::{Direction, Trial, TrialError, TrialState, dominates};

/// An objective: evaluates one trial and returns one value per study direction.
pub trait Objective: Send + Sync {
    /// Runs the trial. Use `trial` to read parameters, report intermediate values and ask
    /// whether to stop early.
    fn evaluate(&self, trial: &TrialHandle) -> std::result::Result<Vec<f64>, TrialError>;
}

impl<F> Objective for F
where
    F: Fn(&TrialHandle) -> std::result::Result<f64, TrialError> + Send + Sync,
{
    fn evaluate(&self, trial: &TrialHandle) -> std::result::Result<Vec<f64>, TrialError> {
        self(trial).map(|v| vec![v])
    }
}

/// Wraps a closure returning several values, for multi-objective studies.
pub struct MultiObjective<F>(pub F);

impl<F> Objective for MultiObjective<F>
where
    F: Fn(&TrialHandle) -> std::result::Result<Vec<f64>, TrialError> + Send + Sync,
{
    fn evaluate(&self, trial: &TrialHandle) -> std::result::Result<Vec<f64>, TrialError> {
        (self.0)(trial)
    }
}

/// A running trial as the objective sees it.
pub struct TrialHandle {
    number: u64,
    params: Params,
    storage: Arc<dyn Storage>,
    pruner: Arc<dyn Pruner>,
    direction: Direction,
    cancelled: Arc<AtomicBool>,
}

impl TrialHandle {
    /// Trial number.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// All active parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// A parameter's value.
    pub fn param(&self, name: &str) -> Result<&ParamValue> {
        self.params.get(name).ok_or_else(|| Error::Param {
            trial: self.number,
            param: name.into(),
            msg: "is not in the space or not active".into(),
        })
    }

    /// A numeric parameter as `f64`.
    pub fn suggest_float(&self, name: &str) -> Result<f64> {
        self.param(name)?.as_f64().ok_or_else(|| Error::Param {
            trial: self.number,
            param: name.into(),
            msg: "is not numeric".into(),
        })
    }

    /// An integer parameter.
    pub fn suggest_int(&self, name: &str) -> Result<i64> {
        match self.param(name)? {
            ParamValue::Int(i) => Ok(*i),
            _ => Err(Error::Param {
                trial: self.number,
                param: name.into(),
                msg: "is not an integer".into(),
            }),
        }
    }

    /// A categorical parameter.
    pub fn suggest_categorical(&self, name: &str) -> Result<&ParamValue> {
        self.param(name)
    }

    /// Whether the parameter is active in this trial.
    pub fn is_active(&self, name: &str) -> bool {
        self.params.contains_key(name)
    }

    /// Records an intermediate value (fails once the trial has timed out).
    pub fn report(&self, step: u64, value: f64) -> Result<()> {
        if self.is_cancelled() {
            return Err(Error::Config(format!(
                "trial {} was cancelled",
                self.number
            )));
        }
        self.storage.report(self.number, step, value)
    }

    /// Whether the pruner wants this trial stopped (always true once cancelled).
    pub fn should_prune(&self) -> bool {
        if self.is_cancelled() {
            return true;
        }
        let Ok(trials) = self.storage.trials() else {
            return false;
        };
        let Some(me) = trials.iter().find(|t| t.number == self.number) else {
            return false;
        };
        self.pruner.should_prune(&trials, me, self.direction)
    }

    /// Whether the study gave up on this trial (timeout); cooperative objectives stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Stores a user attribute (memory use, description, test metric, ...).
    pub fn set_user_attr(&self, key: &str, value: serde_json::Value) -> Result<()> {
        self.storage.set_user_attr(self.number, key, &value)
    }
}

/// Called after each trial of [`Study::optimize`] finishes, with its number and state.
pub type TrialCallback = Arc<dyn Fn(u64, TrialState) + Send + Sync>;

/// Options of [`Study::optimize`].
#[derive(Clone)]
pub struct OptimizeOptions {
    /// Trials to start in this call.
    pub n_trials: usize,
    /// Worker threads.
    pub jobs: usize,
    /// Per-trial wall-clock limit.
    pub timeout: Option<Duration>,
    /// Stop starting trials after this much wall time.
    pub time_budget: Option<Duration>,
    /// Progress hook.
    pub callback: Option<TrialCallback>,
}

impl OptimizeOptions {
    /// `n` trials, one job, no limits.
    pub fn trials(n: usize) -> Self {
        Self {
            n_trials: n,
            jobs: 1,
            timeout: None,
            time_budget: None,
            callback: None,
        }
    }

    /// Sets the number of worker threads.
    pub fn jobs(mut self, jobs: usize) -> Self {
        self.jobs = jobs.max(1);
        self
    }

    /// Sets the per-trial timeout.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
}

/// Counts of what one `optimize` call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptimizeSummary {
    /// Trials started.
    pub started: usize,
    /// Completed.
    pub complete: usize,
    /// Pruned.
    pub pruned: usize,
    /// Failed.
    pub failed: usize,
    /// Timed out.
    pub timed_out: usize,
    /// Whether the sampler ran out of proposals.
    pub exhausted: bool,
}

/// Builds a [`Study`].
pub struct StudyBuilder {
    name: String,
    space: SearchSpace,
    directions: Vec<Direction>,
    sampler: Option<Box<dyn Sampler>>,
    pruner: Arc<dyn Pruner>,
    storage: Arc<dyn Storage>,
    seed: u64,
    worker: String,
    attrs: std::collections::BTreeMap<String, serde_json::Value>,
}

impl StudyBuilder {
    /// A study attribute stored at creation (command line, metric...).
    pub fn attr(mut self, key: &str, value: serde_json::Value) -> Self {
        self.attrs.insert(key.into(), value);
        self
    }
    /// Study name.
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }
    /// Single direction.
    pub fn direction(mut self, d: Direction) -> Self {
        self.directions = vec![d];
        self
    }
    /// Several directions (multi-objective).
    pub fn directions(mut self, d: Vec<Direction>) -> Self {
        self.directions = d;
        self
    }
    /// Sampler (default: [`AutoSampler`], GP or TPE on the study's evidence).
    pub fn sampler(mut self, s: impl Sampler + 'static) -> Self {
        self.sampler = Some(Box::new(s));
        self
    }
    /// Boxed sampler.
    pub fn sampler_boxed(mut self, s: Box<dyn Sampler>) -> Self {
        self.sampler = Some(s);
        self
    }
    /// Pruner (default: none).
    pub fn pruner(mut self, p: impl Pruner + 'static) -> Self {
        self.pruner = Arc::new(p);
        self
    }
    /// Shared pruner.
    pub fn pruner_arc(mut self, p: Arc<dyn Pruner>) -> Self {
        self.pruner = p;
        self
    }
    /// Storage (default: in memory).
    pub fn storage(mut self, s: Arc<dyn Storage>) -> Self {
        self.storage = s;
        self
    }
    /// Seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Worker id recorded with each trial.
    pub fn worker(mut self, w: &str) -> Self {
        self.worker = w.into();
        self
    }

    /// Opens the study in its storage (creating it or loading the stored one).
    pub fn build(self) -> Result<Study> {
        self.space.validate()?;
        if self.directions.is_empty() {
            return Err(Error::Config("a study needs at least one direction".into()));
        }
        let meta = StudyMeta {
            name: self.name.clone(),
            directions: self.directions.clone(),
            space: self.space.clone(),
            attrs: self.attrs,
        };
        let stored = self.storage.open_study(&meta)?;
        Ok(Study {
            meta: stored,
            sampler: Arc::new(Mutex::new(
                self.sampler
                    .unwrap_or_else(|| Box::new(AutoSampler::default())),
            )),
            pruner: self.pruner,
            storage: self.storage,
            seed: self.seed,
            worker: self.worker,
        })
    }
}

/// A study: a space, directions, a sampler, a pruner and a storage.
pub struct Study {
    meta: StudyMeta,
    sampler: Arc<Mutex<Box<dyn Sampler>>>,
    pruner: Arc<dyn Pruner>,
    storage: Arc<dyn Storage>,
    seed: u64,
    worker: String,
}

impl Study {
    /// Starts building a study over `space` (minimize, TPE, in memory, seed 0).
    pub fn builder(space: SearchSpace) -> StudyBuilder {
        StudyBuilder {
            name: "study".into(),
            space,
            directions: vec![Direction::Minimize],
            sampler: None,
            pruner: Arc::new(NopPruner),
            storage: Arc::new(InMemoryStorage::new()),
            seed: 0,
            worker: format!("pid{}", std::process::id()),
            attrs: std::collections::BTreeMap::new(),
        }
    }

    /// The stored study description.
    pub fn meta(&self) -> &StudyMeta {
        &self.meta
    }

    /// The search space.
    pub fn space(&self) -> &SearchSpace {
        &self.meta.space
    }

    /// The directions.
    pub fn directions(&self) -> &[Direction] {
        &self.meta.directions
    }

    /// The storage.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Creates the next trial (claiming a queued one first).
    pub fn ask(&self) -> Result<TrialHandle> {
        let space = &self.meta.space;
        let dirs = &self.meta.directions;
        let seed = self.seed;
        let sampler = &self.sampler;
        let mut decision = None;
        let trial = self
            .storage
            .create_trial(&self.worker, &mut |number, trials| {
                let mut rng = trial_rng(seed, number);
                let rng_of = |n: u64| trial_rng(seed, n);
                let mut s = sampler
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let mut ctx = SampleContext {
                    space,
                    trials,
                    directions: dirs,
                    number,
                    rng: &mut rng,
                    rng_of: &rng_of,
                };
                let proposal = space.activate(s.sample(&mut ctx)?);
                decision = s.last_decision();
                Ok(proposal)
            })?;
        if let Some(d) = decision {
            self.storage.set_user_attr(trial.number, "sampler", &d)?;
        }
        Ok(TrialHandle {
            number: trial.number,
            params: trial.params,
            storage: self.storage.clone(),
            pruner: self.pruner.clone(),
            direction: dirs[0],
            cancelled: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Finishes a trial from an objective outcome and returns its record.
    pub fn tell(
        &self,
        trial: &TrialHandle,
        outcome: std::result::Result<Vec<f64>, TrialError>,
    ) -> Result<TrialState> {
        let n = trial.number;
        let state = match outcome {
            Ok(v) if v.len() != self.meta.directions.len() => {
                self.storage.finish(
                    n,
                    TrialState::Failed,
                    None,
                    Some(&format!(
                        "objective returned {} values for {} directions",
                        v.len(),
                        self.meta.directions.len()
                    )),
                )?;
                TrialState::Failed
            }
            Ok(v) if v.iter().any(|x| !x.is_finite()) => {
                self.storage.finish(
                    n,
                    TrialState::Failed,
                    None,
                    Some(&format!("objective returned a non-finite value {v:?}")),
                )?;
                TrialState::Failed
            }
            Ok(v) => {
                self.storage
                    .finish(n, TrialState::Complete, Some(&v), None)?;
                TrialState::Complete
            }
            Err(TrialError::Pruned) => {
                self.storage
                    .finish(n, TrialState::Pruned, None, Some("pruned"))?;
                TrialState::Pruned
            }
            Err(TrialError::Failed(msg)) => {
                self.storage
                    .finish(n, TrialState::Failed, None, Some(&msg))?;
                TrialState::Failed
            }
        };
        Ok(state)
    }

    /// Queues a trial with fixed parameters (warm start, known-good config).
    pub fn enqueue(&self, params: Params) -> Result<u64> {
        self.storage
            .enqueue(&self.meta.space.activate(params), None)
    }

    /// Marks running trials older than `grace` (all of them for `Duration::ZERO`) as failed
    /// and queues a re-run of each with the same parameters. Call it when resuming after a
    /// crash; returns the numbers of the stale trials.
    pub fn recover_stale(&self, grace: Duration) -> Result<Vec<u64>> {
        let now = crate::trial::now();
        let mut out = Vec::new();
        for t in self.storage.trials()? {
            let last = t.started_at;
            if t.state == TrialState::Running && now - last >= grace.as_secs_f64() {
                self.storage.finish(
                    t.number,
                    TrialState::Failed,
                    None,
                    Some("stale: its worker stopped without finishing it"),
                )?;
                self.storage.enqueue(&t.params, Some(t.number))?;
                out.push(t.number);
            }
        }
        Ok(out)
    }

    /// All trials.
    pub fn trials(&self) -> Result<Vec<Trial>> {
        self.storage.trials()
    }

    /// Best complete trial under the first direction.
    pub fn best_trial(&self) -> Result<Option<Trial>> {
        let trials = self.storage.trials()?;
        Ok(best_trial(&trials, self.meta.directions[0]).cloned())
    }

    /// Non-dominated complete trials.
    pub fn pareto_front(&self) -> Result<Vec<Trial>> {
        let dirs = &self.meta.directions;
        let complete: Vec<Trial> = self
            .storage
            .trials()?
            .into_iter()
            .filter(|t| t.state == TrialState::Complete && t.values.is_some())
            .collect();
        Ok(complete
            .iter()
            .filter(|t| {
                let v = t.values.as_deref().unwrap_or(&[]);
                !complete
                    .iter()
                    .any(|o| dominates(o.values.as_deref().unwrap_or(&[]), v, dirs))
            })
            .cloned()
            .collect())
    }

    /// Runs an objective for `opts.n_trials` trials on `opts.jobs` threads. Failing,
    /// panicking and timed-out trials are recorded and the study goes on.
    pub fn optimize<O: Objective + 'static>(
        &self,
        objective: Arc<O>,
        opts: &OptimizeOptions,
    ) -> Result<OptimizeSummary> {
        let started = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let summary = Mutex::new(OptimizeSummary::default());
        let first_err: Mutex<Option<Error>> = Mutex::new(None);
        let t0 = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..opts.jobs.max(1) {
                scope.spawn(|| {
                    loop {
                        if stop.load(Ordering::SeqCst)
                            || opts.time_budget.is_some_and(|b| t0.elapsed() >= b)
                        {
                            break;
                        }
                        if started.fetch_add(1, Ordering::SeqCst) >= opts.n_trials {
                            break;
                        }
                        let handle = match self.ask() {
                            Ok(h) => h,
                            Err(Error::Exhausted(_)) => {
                                stop.store(true, Ordering::SeqCst);
                                lock(&summary).exhausted = true;
                                break;
                            }
                            Err(e) => {
                                stop.store(true, Ordering::SeqCst);
                                lock(&first_err).get_or_insert(e);
                                break;
                            }
                        };
                        let number = handle.number;
                        let state = match self.run_one(&objective, handle, opts.timeout) {
                            Ok(s) => s,
                            Err(e) => {
                                stop.store(true, Ordering::SeqCst);
                                lock(&first_err).get_or_insert(e);
                                break;
                            }
                        };
                        if let Some(cb) = &opts.callback {
                            cb(number, state);
                        }
                        let mut s = lock(&summary);
                        s.started += 1;
                        match state {
                            TrialState::Complete => s.complete += 1,
                            TrialState::Pruned => s.pruned += 1,
                            TrialState::TimedOut => s.timed_out += 1,
                            _ => s.failed += 1,
                        }
                    }
                });
            }
        });
        if let Some(e) = first_err
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            return Err(e);
        }
        Ok(summary
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn run_one<O: Objective + 'static>(
        &self,
        objective: &Arc<O>,
        handle: TrialHandle,
        timeout: Option<Duration>,
    ) -> Result<TrialState> {
        let run = |obj: &O, h: &TrialHandle| {
            std::panic::catch_unwind(AssertUnwindSafe(|| obj.evaluate(h))).unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into());
                Err(TrialError::Failed(format!("objective panicked: {msg}")))
            })
        };
        let Some(limit) = timeout else {
            let out = run(objective, &handle);
            return self.tell(&handle, out);
        };
        // The objective runs on its own thread; if it overruns it is abandoned (it sees
        // `is_cancelled()` and failing reports) and the study moves on.
        let (tx, rx) = mpsc::channel();
        let obj = objective.clone();
        let h2 = TrialHandle {
            number: handle.number,
            params: handle.params.clone(),
            storage: handle.storage.clone(),
            pruner: handle.pruner.clone(),
            direction: handle.direction,
            cancelled: handle.cancelled.clone(),
        };
        std::thread::Builder::new()
            .name(format!("trial-{}", handle.number))
            .spawn(move || {
                let _ = tx.send(run(&obj, &h2));
            })
            .map_err(|e| Error::Config(format!("spawning trial thread: {e}")))?;
        if let Ok(out) = rx.recv_timeout(limit) {
            self.tell(&handle, out)
        } else {
            {
                handle.cancelled.store(true, Ordering::Relaxed);
                self.storage.finish(
                    handle.number,
                    TrialState::TimedOut,
                    None,
                    Some(&format!(
                        "exceeded the {:.3} s trial timeout",
                        limit.as_secs_f64()
                    )),
                )?;
                Ok(TrialState::TimedOut)
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
