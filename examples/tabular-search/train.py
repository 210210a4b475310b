"""Objective for `autoresearch run`: an XGBoost + ExtraTrees soft-voting ensemble on
scikit-learn's bundled breast-cancer data set (the Zevor case in miniature).

Search mode (default): reads the trial's parameters from $AUTORESEARCH_PARAMS_FILE, scores
5-fold stratified cross-validated balanced accuracy on the 80 % search split, prints one
JSON line per fold ({"step": k, "metric": running mean}, for pruning) and a final
{"metric": ..., "description": ...}. The 20 % test split is never touched here.

Final mode (`--final params.json`): fits the chosen configuration on the whole search split
and reports balanced accuracy on the locked test split, once.
"""
import json
import os
import sys

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import ExtraTreesClassifier
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold, train_test_split
from xgboost import XGBClassifier

SEED = 0


def data():
    x, y = load_breast_cancer(return_X_y=True)
    return train_test_split(x, y, test_size=0.2, stratify=y, random_state=SEED)


def fit_predict(p, xtr, ytr, xte):
    xgb = XGBClassifier(
        n_estimators=int(p["xgb_n_estimators"]),
        max_depth=int(p["xgb_max_depth"]),
        learning_rate=float(p["xgb_learning_rate"]),
        subsample=float(p["xgb_subsample"]),
        colsample_bytree=float(p["xgb_colsample"]),
        n_jobs=1,
        random_state=SEED,
        verbosity=0,
    )
    et = ExtraTreesClassifier(
        n_estimators=int(p["et_n_estimators"]),
        max_features=float(p["et_max_features"]),
        min_samples_leaf=int(p["et_min_samples_leaf"]),
        class_weight=p["et_class_weight"] if p["et_class_weight"] != "none" else None,
        n_jobs=1,
        random_state=SEED,
    )
    xgb.fit(xtr, ytr)
    et.fit(xtr, ytr)
    w = float(p["xgb_weight"])
    prob = w * xgb.predict_proba(xte)[:, 1] + (1 - w) * et.predict_proba(xte)[:, 1]
    return (prob >= 0.5).astype(int)


def search(p):
    xtr, _, ytr, _ = data()
    scores = []
    for k, (a, b) in enumerate(StratifiedKFold(5, shuffle=True, random_state=SEED).split(xtr, ytr)):
        pred = fit_predict(p, xtr[a], ytr[a], xtr[b])
        scores.append(balanced_accuracy_score(ytr[b], pred))
        print(json.dumps({"step": k, "metric": float(np.mean(scores))}), flush=True)
    desc = " ".join(f"{k}={v}" for k, v in sorted(p.items()))
    print(json.dumps({"metric": float(np.mean(scores)), "cv_std": float(np.std(scores)), "description": desc}))


def final(path):
    with open(path) as f:
        p = json.load(f)
    xtr, xte, ytr, yte = data()
    pred = fit_predict(p, xtr, ytr, xte)
    print(json.dumps({"test_balanced_accuracy": float(balanced_accuracy_score(yte, pred))}))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--final":
        final(sys.argv[2])
    else:
        with open(os.environ["AUTORESEARCH_PARAMS_FILE"]) as f:
            search(json.load(f))
