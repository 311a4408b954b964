"""Honest baselines on window aggregate features: logistic regression and LightGBM, tuned on val.

Both are selected by val PR-AUC over a small grid, then Platt-calibrated on val, exactly like the
fine-tuned model, so test logloss and ECE compare like with like.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from model.metrics import fit_platt, logit, pr_auc, sigmoid


@dataclass
class Baseline:
    """A fitted model plus its val calibration: predict() returns calibrated probabilities."""

    name: str
    model: Any
    calibration: tuple[float, float]
    params: dict[str, Any] = field(default_factory=dict)
    val_pr_auc: float = 0.0

    def raw(self, x: Any) -> np.ndarray:
        return np.asarray(self.model.predict_proba(x)[:, 1], dtype=np.float64)

    def predict(self, x: Any) -> np.ndarray:
        a, b = self.calibration
        return sigmoid(a * logit(self.raw(x)) + b)


def _signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def fit_logreg(x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray, y_va: np.ndarray) -> Baseline:
    """Logistic regression on log-scaled, standardised features; C and class weight tuned on val."""
    best: Baseline | None = None
    for c, weight in itertools.product((0.01, 0.1, 1.0, 10.0), (None, "balanced")):
        model = make_pipeline(
            FunctionTransformer(_signed_log),
            StandardScaler(),
            LogisticRegression(C=c, class_weight=weight, max_iter=2000),
        )
        model.fit(x_tr, y_tr)
        candidate = Baseline("logreg", model, (1.0, 0.0), {"C": c, "class_weight": weight})
        candidate.val_pr_auc = pr_auc(y_va, candidate.raw(x_va))
        if best is None or candidate.val_pr_auc > best.val_pr_auc:
            best = candidate
    assert best is not None
    best.calibration = fit_platt(logit(best.raw(x_va)), y_va)
    return best


def fit_lightgbm(
    x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray, y_va: np.ndarray, seed: int = 0
) -> Baseline:
    """LightGBM with early stopping on val; leaves, learning rate and leaf size tuned on val."""
    import lightgbm as lgb

    best: Baseline | None = None
    # a small grid: the full 24-point one cost minutes of a 2-core training budget for nothing
    grid = itertools.product((7, 15, 31), (0.05,), (20, 100), (None,))
    for leaves, lr, min_child, pos_weight in grid:
        params: dict[str, Any] = {
            "num_leaves": leaves,
            "learning_rate": lr,
            "min_child_samples": min_child,
            "scale_pos_weight": pos_weight or 1.0,
        }
        model = lgb.LGBMClassifier(
            n_estimators=1000,
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.8,
            random_state=seed,
            verbose=-1,
            n_jobs=1,
            **params,
        )
        with warnings.catch_warnings():  # lightgbm's eval_set deprecation and feature-name notes
            warnings.simplefilter("ignore")
            model.fit(
                x_tr,
                y_tr,
                eval_set=[(x_va, y_va)],
                eval_metric="average_precision",
                callbacks=[lgb.early_stopping(50, verbose=False)],
            )
        params["n_estimators"] = int(model.best_iteration_ or model.n_estimators)
        candidate = Baseline("lightgbm", model, (1.0, 0.0), params)
        candidate.val_pr_auc = pr_auc(y_va, candidate.raw(x_va))
        if best is None or candidate.val_pr_auc > best.val_pr_auc:
            best = candidate
    assert best is not None
    best.calibration = fit_platt(logit(best.raw(x_va)), y_va)
    return best


def ngram_matrix(rows: Sequence[Sequence[int]], buckets: int) -> Any:
    """Binary CSR [n, buckets + 1] of hashed n-gram ids (column 0, padding, stays empty)."""
    from scipy.sparse import csr_matrix

    indptr = np.cumsum([0, *(len(r) for r in rows)])
    indices = np.fromiter((i for r in rows for i in r), dtype=np.int64, count=int(indptr[-1]))
    data = np.ones(len(indices), dtype=np.float32)
    return csr_matrix((data, indices, indptr), shape=(len(rows), buckets + 1))


def wide_matrix(features: np.ndarray, grams: Any) -> Any:
    """[normalised aggregates | n-gram bag]: the fused model's non-BERT inputs, side by side."""
    from scipy.sparse import csr_matrix, hstack

    return hstack([csr_matrix(features.astype(np.float32)), grams], format="csr")


class CompactLogReg:
    """A logistic regression fitted on the non-empty columns of a wide sparse design."""

    def __init__(self, model: LogisticRegression, cols: np.ndarray, width: int) -> None:
        self.model, self.cols, self.width = model, cols, width

    def fit(self, x: Any, y: np.ndarray) -> CompactLogReg:
        self.model.fit(x[:, self.cols], y)
        return self

    def predict_proba(self, x: Any) -> np.ndarray:
        return np.asarray(self.model.predict_proba(x[:, self.cols]))

    @property
    def coef_(self) -> np.ndarray:
        full = np.zeros((1, self.width))
        full[:, self.cols] = self.model.coef_
        return full

    @property
    def intercept_(self) -> np.ndarray:
        return np.asarray(self.model.intercept_)


def fit_sparse_logreg(
    name: str,
    x_tr: Any,
    y_tr: np.ndarray,
    x_va: Any,
    y_va: np.ndarray,
    grid: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0),
) -> Baseline:
    """L2 logistic regression on a sparse design (n-grams, or aggregates + n-grams); C on val."""
    best: Baseline | None = None
    cols = np.unique(x_tr.indices)  # hashed designs are mostly empty columns: fit on the rest
    for c in grid:
        model = CompactLogReg(LogisticRegression(C=c, max_iter=500), cols, x_tr.shape[1])
        with warnings.catch_warnings():  # a few lbfgs runs stop at max_iter; val decides anyway
            warnings.simplefilter("ignore")
            model.fit(x_tr, y_tr)
        candidate = Baseline(name, model, (1.0, 0.0), {"C": c, "columns_used": len(cols)})
        candidate.val_pr_auc = pr_auc(y_va, candidate.raw(x_va))
        if best is None or candidate.val_pr_auc > best.val_pr_auc:
            best = candidate
    assert best is not None
    best.calibration = fit_platt(logit(best.raw(x_va)), y_va)
    return best


BASELINES_FILE = "baselines.pkl"
BASELINE_INPUTS = {"logreg": "aggregates", "lightgbm": "aggregates", "ngram_lr": "ngrams",
                   "wide_lr": "aggregates+ngrams"}  # fmt: skip


def save_baselines(bundle: Any, baselines: dict[str, Baseline], ngram_buckets: int) -> str:
    """Pickle the fitted baselines into the bundle (listed with a sha256 in bundle.json)."""
    import pickle

    payload = {"ngram_buckets": ngram_buckets, "baselines": baselines}
    with (bundle / BASELINES_FILE).open("wb") as handle:
        pickle.dump(payload, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return BASELINES_FILE


def load_baselines(bundle: Any) -> tuple[dict[str, Baseline], int] | None:
    """The bundle's stored baselines and their n-gram bucket count (None: none stored).

    Only call after validate_bundle: the pickle's sha256 is checked there (bundles are trusted
    artefacts, like model.ts)."""
    import pickle

    path = bundle / BASELINES_FILE
    if not path.is_file():
        return None
    with path.open("rb") as handle:
        payload = pickle.load(handle)
    return payload["baselines"], int(payload["ngram_buckets"])
