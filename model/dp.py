"""DP-SGD for `bstream train --dp-epsilon E` (opacus): per-example clipping, Gaussian noise, RDP.

The noise is calibrated so that the PLANNED number of steps spends exactly (epsilon, delta); a run
that stops early (time budget, early stopping) spends less, and the bundle records what it spent.

Privacy unit: one training example (one prefix window). A user contributes several windows, so
the per-user guarantee is weaker (group privacy); the bundle says so. Only the training split is
protected: val windows choose the checkpoint and fit the calibration, as in non-DP training.

>>> round(spent_epsilon(noise_multiplier=1.0, sample_rate=0.01, steps=100, delta=1e-5), 2)
1.21
"""

from __future__ import annotations

import math
import warnings
import weakref
from typing import Any

from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

ACCOUNTANT = "rdp"
SCOPES = ("all", "top", "head")
DEFAULT_SCOPE = "head"
# HF BERT looks these up with [1, seq] ids broadcast over the batch: opacus cannot split their
# gradient per example, so DP-SGD always keeps them frozen (pretrained values).
BROADCAST = (
    "bert.embeddings.position_embeddings.weight",
    "bert.embeddings.token_type_embeddings.weight",
)
_HOOKS: weakref.WeakKeyDictionary[nn.Module, Any] = weakref.WeakKeyDictionary()
UNIT = (
    "one example (prefix window) of the training sample; the class-balanced subsampling that"
    " forms the sample is not accounted; a user with k windows gets group privacy (k*epsilon)"
)


def planned_steps(epochs: float, batches_per_epoch: int) -> int:
    """Steps the train loop intends to take (it runs ceil(epochs * len(loader)) steps)."""
    return max(1, math.ceil(epochs * batches_per_epoch))


def noise_for(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """Gaussian noise multiplier that spends (epsilon, delta) in `steps` Poisson-sampled steps."""
    # Lazy (here and below): opacus loads only when DP is on; eval imports this module for a line.
    from opacus.accountants.utils import get_noise_multiplier

    if epsilon <= 0 or not 0 < delta < 1:
        raise ValueError("DP needs epsilon > 0 and 0 < delta < 1")
    with warnings.catch_warnings():  # "optimal order is the largest alpha": bound is conservative
        warnings.simplefilter("ignore", UserWarning)
        return float(
            get_noise_multiplier(
                target_epsilon=epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=ACCOUNTANT,
            )
        )


def spent_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon the RDP accountant gives for `steps` steps at this noise and sampling rate."""
    from opacus.accountants import RDPAccountant

    if steps <= 0:
        return 0.0
    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, sample_rate, steps)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(accountant.get_epsilon(delta))


def limit_trainable(model: nn.Module, scope: str) -> None:
    """Freeze all but the scope: all (as configured) | top (last encoder layer + head) | head."""
    if scope not in SCOPES:
        raise ValueError(f"unknown DP scope {scope!r}; choose one of {', '.join(SCOPES)}")
    for name in BROADCAST:
        model.get_parameter(name).requires_grad_(False)
    if scope == "all":
        return
    keep: tuple[str, ...] = ("head.",)
    if scope == "top":
        prefix = "bert.encoder.layer."
        top = max(
            int(n[len(prefix) :].split(".")[0])
            for n, _ in model.named_parameters()
            if n.startswith(prefix)
        )
        keep += (f"{prefix}{top}.",)
    for name, param in model.named_parameters():
        if not name.startswith(keep):
            param.requires_grad_(False)


def trainable_summary(model: nn.Module) -> dict[str, Any]:
    """What DP-SGD trains: parameter count and the frozen tensors (never see private data)."""
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = {_module_of(name) for name, p in model.named_parameters() if not p.requires_grad}
    return {"trainable_params": trained, "frozen": sorted(frozen)}


def _module_of(name: str) -> str:
    """'bert.encoder.layer.3.attention.self.query.weight' -> 'bert.encoder.layer.3'."""
    parts = name.split(".")
    return ".".join(parts[:4] if parts[1:3] == ["encoder", "layer"] else parts[:3])


def make_private(
    model: nn.Module, optimizer: Optimizer, loader: DataLoader[Any], cfg: Any
) -> tuple[Any, Optimizer, DataLoader[Any]]:
    """Wrap model/optimizer/loader for DP-SGD (Poisson sampling, flat clipping, calibrated noise).

    cfg: TrainConfig with dp_epsilon, dp_delta, dp_max_grad_norm and epochs.
    """
    from opacus import PrivacyEngine

    scope = getattr(cfg, "dp_train", DEFAULT_SCOPE)
    limit_trainable(model, scope)
    sample_rate = 1 / len(loader)
    steps = planned_steps(cfg.epochs, len(loader))
    noise = noise_for(cfg.dp_epsilon, cfg.dp_delta, sample_rate, steps)
    # opacus hooks the embedding layers, whose inputs (token ids) never need gradients
    warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
    with warnings.catch_warnings():  # opacus warns that secure_mode is off: expected outside prod
        warnings.simplefilter("ignore", UserWarning)
        engine = PrivacyEngine(accountant=ACCOUNTANT)
        hooks, dp_optimizer, dp_loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=noise,
            max_grad_norm=cfg.dp_max_grad_norm,
            poisson_sampling=True,
            wrap_model=False,  # hooks on the model itself: it stays a BehaviorBert for the loop
        )
    _HOOKS[model] = hooks
    return model, dp_optimizer, dp_loader


def dp_report(
    optimizer: Any, loader: Any, steps: int, cfg: Any, model: nn.Module
) -> dict[str, Any]:
    """The DP facts for bundle.json: target and spent epsilon, delta, noise, what was trained."""
    sample_rate = float(getattr(loader, "sample_rate", 1 / max(1, len(loader))))
    noise = float(optimizer.noise_multiplier)
    return {
        "epsilon": round(spent_epsilon(noise, sample_rate, steps, cfg.dp_delta), 4),
        "target_epsilon": cfg.dp_epsilon,
        "delta": cfg.dp_delta,
        "noise_multiplier": round(noise, 6),
        "max_grad_norm": cfg.dp_max_grad_norm,
        "sample_rate": sample_rate,
        "steps": steps,
        "planned_steps": planned_steps(cfg.epochs, len(loader)),
        "accountant": ACCOUNTANT,
        "mechanism": "DP-SGD (opacus, Poisson sampling, flat per-example clipping)",
        "unit": UNIT,
        "scope": getattr(cfg, "dp_train", DEFAULT_SCOPE),
        "protected": "train split only; val selects the checkpoint and fits calibration",
        **trainable_summary(model),
    }


def privacy_line(dp_epsilon: float | None, dp: dict[str, Any] | None) -> str:
    """One line for reports: how private the bundle's training was.

    >>> privacy_line(None, None)
    'non-private training (no DP)'
    """
    if dp_epsilon is None:
        return "non-private training (no DP)"
    dp = dp or {}
    return (
        f"DP-SGD epsilon={dp_epsilon:g} (target {dp.get('target_epsilon', '?')}), "
        f"delta={dp.get('delta', '?')}, trained privately: {dp.get('scope', '?')}, "
        f"unit: one training example"
    )


def release(model: nn.Module) -> Any:
    """Remove the per-sample-gradient hooks and grad_sample attributes that DP-SGD attached."""
    hooks = _HOOKS.pop(model, None)
    if hooks is not None:
        hooks.cleanup()
    return model


def cost_table(reports: dict[str, dict[str, Any]]) -> str:
    """Markdown: each eval report's BERT AUC / PR-AUC and its cost against the non-DP one."""
    rows = {name: r["models"]["bert"] for name, r in reports.items()}
    base = next((m for m in rows.values() if m["params"].get("dp_epsilon") is None), None)
    lines = [
        "| run | epsilon | AUC (95% CI) | PR-AUC (95% CI) | dAUC | dPR-AUC |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in rows.items():
        eps = m["params"].get("dp_epsilon")
        d_auc = f"{m['auc'] - base['auc']:+.4f}" if base else "n/a"
        d_pr = f"{m['pr_auc'] - base['pr_auc']:+.4f}" if base else "n/a"
        lines.append(
            f"| {name} | {'-' if eps is None else f'{eps:g}'} "
            f"| {m['auc']:.4f} ({m['auc_ci'][0]:.4f}-{m['auc_ci'][1]:.4f}) "
            f"| {m['pr_auc']:.4f} ({m['pr_auc_ci'][0]:.4f}-{m['pr_auc_ci'][1]:.4f}) "
            f"| {d_auc} | {d_pr} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # python -m model.dp nondp.json eps8.json eps1.json (eval --json)
    import json
    import sys
    from pathlib import Path

    print(cost_table({Path(p).stem: json.loads(Path(p).read_text()) for p in sys.argv[1:]}))
