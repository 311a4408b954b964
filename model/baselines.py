"""Honest baselines on window aggregate features: logistic regression and LightGBM, tuned on val.

Both are selected by val PR-AUC over a small grid, then Platt-calibrated on val, exactly like the
fine-tuned model, so test logloss and ECE compare like with like.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
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

    def raw(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_proba(x)[:, 1], dtype=np.float64)

    def predict(self, x: np.ndarray) -> np.ndarray:
        a, b = self.calibration
        return sigmoid(a * logit(self.raw(x)) + b)


def _signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def best_on_val(candidates: Iterable[Baseline], x_va: np.ndarray, y_va: np.ndarray) -> Baseline:
    """The candidate with the highest val PR-AUC, Platt-calibrated on val."""
    best: Baseline | None = None
    for candidate in candidates:
        candidate.val_pr_auc = pr_auc(y_va, candidate.raw(x_va))
        if best is None or candidate.val_pr_auc > best.val_pr_auc:
            best = candidate
    if best is None:
        raise ValueError("no baseline candidates to choose from")
    best.calibration = fit_platt(logit(best.raw(x_va)), y_va)
    return best


def fit_logreg(x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray, y_va: np.ndarray) -> Baseline:
    """Logistic regression on log-scaled, standardised features; C and class weight tuned on val."""
    return best_on_val(_logreg_grid(x_tr, y_tr), x_va, y_va)


def _logreg_grid(x_tr: np.ndarray, y_tr: np.ndarray) -> Iterator[Baseline]:
    for c, weight in itertools.product((0.01, 0.1, 1.0, 10.0), (None, "balanced")):
        model = make_pipeline(
            FunctionTransformer(_signed_log),
            StandardScaler(),
            LogisticRegression(C=c, class_weight=weight, max_iter=2000),
        )
        model.fit(x_tr, y_tr)
        yield Baseline("logreg", model, (1.0, 0.0), {"C": c, "class_weight": weight})


def fit_lightgbm(
    x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray, y_va: np.ndarray, seed: int = 0
) -> Baseline:
    """LightGBM with early stopping on val; leaves, learning rate and leaf size tuned on val."""
    return best_on_val(_lightgbm_grid(x_tr, y_tr, x_va, y_va, seed), x_va, y_va)


def _lightgbm_grid(
    x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray, y_va: np.ndarray, seed: int
) -> Iterator[Baseline]:
    grid = itertools.product((7, 15, 31), (0.03, 0.1), (20, 100), (None, 4.0))
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
        yield Baseline("lightgbm", model, (1.0, 0.0), params)
