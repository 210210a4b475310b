"""Optuna side of `cargo xtask bench hpo`: same functions, spaces, budgets and seeds as
benches/hpo.rs. Prints one JSON object: {function: {sampler: {"best": [...], "overhead_s": [...]}}}.
overhead_s = study wall time minus time spent evaluating the function (sampler + framework).
The suggest_* calls are outside the timed part: Optuna computes relative (multivariate TPE)
samples lazily at the first suggest, so timing the whole objective would hide the sampler.
Arguments: seeds trials [functions (comma list)] [extras: 0 skips the explicit TPE models]
[samplers (comma list of tpe, random, gp; default all three)] [first seed (default 0)]."""
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


A3 = [[3.0, 10, 30], [0.1, 10, 35], [3.0, 10, 30], [0.1, 10, 35]]
P3 = [[3689, 1170, 2673], [4699, 4387, 7470], [1091, 8732, 5547], [381, 5743, 8828]]


def hartmann3(x):
    return -sum(ALPHA[i] * math.exp(-sum(A3[i][j] * (x[j] - P3[i][j] * 1e-4) ** 2 for j in range(3))) for i in range(4))


def michalewicz(x):
    return -sum(math.sin(v) * math.sin((i + 1) * v * v / math.pi) ** 20 for i, v in enumerate(x))


def ackley(x):
    d = len(x)
    s1 = sum(v * v for v in x) / d
    s2 = sum(math.cos(2 * math.pi * v) for v in x) / d
    return -20 * math.exp(-0.2 * math.sqrt(s1)) - math.exp(s2) + 20 + math.e


def schwefel(x):
    return 418.9829 * len(x) - sum(v * math.sin(math.sqrt(abs(v))) for v in x)


def ellipsoid(x):
    d = len(x)
    return sum(10 ** (6 * i / (d - 1)) * (v - 1) ** 2 for i, v in enumerate(x))


def hpo_like(trial):
    lr = trial.suggest_float("lr", 1e-5, 1.0, log=True)
    width = trial.suggest_int("width", 8, 1024, log=True)
    layers = trial.suggest_int("layers", 1, 8)
    dropout = trial.suggest_float("dropout", 0.0, 0.5, step=0.05)
    opt = trial.suggest_categorical("optimizer", ["sgd", "adam", "adamw"])
    lr_star, pen = {"sgd": (-1.5, 0.3), "adam": (-3.0, 0.0)}.get(opt, (-3.3, 0.1))
    a = math.log10(lr) - lr_star
    b = math.log2(width) - 8
    return a * a + 0.25 * b * b + 0.2 * a * b + 0.1 * (layers - 3) ** 2 + 2 * (dropout - 0.15) ** 2 + pen


FUNCS = {
    "branin": lambda t: branin(t.suggest_float("x0", -5.0, 10.0), t.suggest_float("x1", 0.0, 15.0)),
    "hartmann6": lambda t: hartmann6(box(t, 6, 0.0, 1.0)),
    "rosenbrock10": lambda t: rosenbrock(box(t, 10, -5.0, 10.0)),
    "levy6": lambda t: levy(box(t, 6, -10.0, 10.0)),
    "styblinski_tang6": lambda t: styblinski_tang(box(t, 6, -5.0, 5.0)),
    "mixed": mixed,
    "hartmann3": lambda t: hartmann3(box(t, 3, 0.0, 1.0)),
    "michalewicz5": lambda t: michalewicz(box(t, 5, 0.0, math.pi)),
    "ackley5": lambda t: ackley(box(t, 5, -32.768, 32.768)),
    "schwefel4": lambda t: schwefel(box(t, 4, -500.0, 500.0)),
    "ellipsoid6": lambda t: ellipsoid(box(t, 6, -5.0, 5.0)),
    "hpo_like": hpo_like,
}


class Recorder:
    """Forwards suggest_* to the trial and remembers the values."""

    def __init__(self, trial):
        self.trial = trial
        self.params = {}

    def _rec(self, name, v):
        self.params[name] = v
        return v

    def suggest_float(self, name, lo, hi, **kw):
        return self._rec(name, self.trial.suggest_float(name, lo, hi, **kw))

    def suggest_int(self, name, lo, hi, **kw):
        return self._rec(name, self.trial.suggest_int(name, lo, hi, **kw))

    def suggest_categorical(self, name, choices):
        return self._rec(name, self.trial.suggest_categorical(name, choices))


class Replay:
    """Returns recorded values, so the timed evaluation does no sampling."""

    def __init__(self, params):
        self.params = params

    def suggest_float(self, name, *_, **__):
        return self.params[name]

    suggest_int = suggest_float
    suggest_categorical = suggest_float


def main():
    seeds = int(sys.argv[1])
    trials = int(sys.argv[2])
    only = set(sys.argv[3].split(",")) if len(sys.argv) > 3 and sys.argv[3] else None
    extras = len(sys.argv) <= 4 or sys.argv[4] != "0"
    wanted = sys.argv[5].split(",") if len(sys.argv) > 5 and sys.argv[5] else ["tpe", "random", "gp"]
    first_seed = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    out = {}
    for name, f in FUNCS.items():
        if only is not None and name not in only:
            continue
        out[name] = {}
        makers = {"tpe": lambda s: optuna.samplers.TPESampler(seed=s),
                  "random": lambda s: optuna.samplers.RandomSampler(seed=s),
                  "gp": lambda s: optuna.samplers.GPSampler(seed=s)}
        samplers = [(k, makers[k]) for k in wanted]
        if name == "hartmann6" and extras:
            # The target function also gets both TPE models spelled out: in 5.0.0 the
            # default is multivariate=True, so "tpe_multivariate" checks that like-for-like.
            samplers += [("tpe_multivariate",
                          lambda s: optuna.samplers.TPESampler(seed=s, multivariate=True)),
                         ("tpe_independent",
                          lambda s: optuna.samplers.TPESampler(seed=s, multivariate=False))]
        for sname, make in samplers:
            best, overhead = [], []
            for seed in range(first_seed, first_seed + seeds):
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
            # One JSON line per finished (function, sampler), so a long run that is cut short
            # still leaves its completed parts.
            print(f"optuna {name} {sname} done " + json.dumps(out[name][sname]),
                  file=sys.stderr, flush=True)
    print(json.dumps({"optuna_version": optuna.__version__, "results": out}))


if __name__ == "__main__":
    main()
