"""Optuna side of `cargo xtask bench hpo`: same functions, spaces, budgets and seeds as
benches/hpo.rs. Prints one JSON object: {function: {sampler: {"best": [...], "overhead_s": [...]}}}.
overhead_s = study wall time minus time spent evaluating the function (sampler + framework).
The suggest_* calls are outside the timed part: Optuna computes relative (multivariate TPE)
samples lazily at the first suggest, so timing the whole objective would hide the sampler.
Arguments: seeds trials [functions (comma list)] [extras: 0 skips the explicit TPE models]."""
import json
import math
import sys
import time

import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)

A = [[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]]
P = [[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
     [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]]
ALPHA = [1.0, 1.2, 3.0, 3.2]


def hartmann6(x):
    return -sum(ALPHA[i] * math.exp(-sum(A[i][j] * (x[j] - P[i][j] * 1e-4) ** 2 for j in range(6))) for i in range(4))


def branin(x1, x2):
    b = 5.1 / (4 * math.pi ** 2)
    c = 5 / math.pi
    t = 1 / (8 * math.pi)
    return (x2 - b * x1 * x1 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def rosenbrock(x):
    return sum(100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2 for i in range(len(x) - 1))


def levy(x):
    w = [1 + (v - 1) / 4 for v in x]
    s = math.sin(math.pi * w[0]) ** 2
    for wi in w[:-1]:
        s += (wi - 1) ** 2 * (1 + 10 * math.sin(math.pi * wi + 1) ** 2)
    return s + (w[-1] - 1) ** 2 * (1 + math.sin(2 * math.pi * w[-1]) ** 2)


def styblinski_tang(x):
    return 0.5 * sum(v ** 4 - 16 * v * v + 5 * v for v in x)


def box(trial, d, lo, hi):
    return [trial.suggest_float(f"x{i}", lo, hi) for i in range(d)]


def mixed(trial):
    x = box(trial, 3, -5.0, 5.0)
    k = trial.suggest_int("k", 0, 10)
    c = trial.suggest_categorical("c", ["a", "b", "c"])
    shift, offset = {"a": (1.0, 1.0), "b": (-2.0, 0.0)}.get(c, (3.0, 2.0))
    return sum((v - shift) ** 2 for v in x) + 0.5 * (k - 7) ** 2 + offset


FUNCS = {
    "branin": lambda t: branin(t.suggest_float("x0", -5.0, 10.0), t.suggest_float("x1", 0.0, 15.0)),
    "hartmann6": lambda t: hartmann6(box(t, 6, 0.0, 1.0)),
    "rosenbrock10": lambda t: rosenbrock(box(t, 10, -5.0, 10.0)),
    "levy6": lambda t: levy(box(t, 6, -10.0, 10.0)),
    "styblinski_tang6": lambda t: styblinski_tang(box(t, 6, -5.0, 5.0)),
    "mixed": mixed,
}


class Recorder:
    """Forwards suggest_* to the trial and remembers the values."""

    def __init__(self, trial):
        self.trial = trial
        self.params = {}

    def _rec(self, name, v):
        self.params[name] = v
        return v

    def suggest_float(self, name, lo, hi):
        return self._rec(name, self.trial.suggest_float(name, lo, hi))

    def suggest_int(self, name, lo, hi):
        return self._rec(name, self.trial.suggest_int(name, lo, hi))

    def suggest_categorical(self, name, choices):
        return self._rec(name, self.trial.suggest_categorical(name, choices))


class Replay:
    """Returns recorded values, so the timed evaluation does no sampling."""

    def __init__(self, params):
        self.params = params

    def suggest_float(self, name, *_):
        return self.params[name]

    suggest_int = suggest_float
    suggest_categorical = suggest_float


def main():
    seeds = int(sys.argv[1])
    trials = int(sys.argv[2])
    only = set(sys.argv[3].split(",")) if len(sys.argv) > 3 and sys.argv[3] else None
    extras = len(sys.argv) <= 4 or sys.argv[4] != "0"
    out = {}
    for name, f in FUNCS.items():
        if only is not None and name not in only:
            continue
        out[name] = {}
        samplers = [("tpe", lambda s: optuna.samplers.TPESampler(seed=s)),
                    ("random", lambda s: optuna.samplers.RandomSampler(seed=s))]
        if name == "hartmann6" and extras:
            # The target function also gets both TPE models spelled out: in 5.0.0 the
            # default is multivariate=True, so "tpe_multivariate" checks that like-for-like.
            samplers += [("tpe_multivariate",
                          lambda s: optuna.samplers.TPESampler(seed=s, multivariate=True)),
                         ("tpe_independent",
                          lambda s: optuna.samplers.TPESampler(seed=s, multivariate=False))]
        for sname, make in samplers:
            best, overhead = [], []
            for seed in range(seeds):
                spent = [0.0]

                def obj(t, f=f, spent=spent):
                    rec = Recorder(t)
                    f(rec)  # suggests only: collects the parameters
                    t0 = time.perf_counter()
                    v = f(Replay(rec.params))
                    spent[0] += time.perf_counter() - t0
                    return v

                t0 = time.perf_counter()
                study = optuna.create_study(sampler=make(seed))
                study.optimize(obj, n_trials=trials)
                wall = time.perf_counter() - t0
                best.append(study.best_value)
                overhead.append(wall - spent[0])
            out[name][sname] = {"best": best, "overhead_s": overhead}
            print(f"optuna {name} {sname} done", file=sys.stderr, flush=True)
    print(json.dumps({"optuna_version": optuna.__version__, "results": out}))


if __name__ == "__main__":
    main()
