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
from typing import Any

from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

ACCOUNTANT = "rdp"
SCOPES = ("all", "top", "head")
DEFAULT_SCOPE = "top"
# HF BERT looks these up with [1, seq] ids broadcast over the batch: opacus cannot split their
# gradient per example, so DP-SGD always keeps them frozen (pretrained values).
BROADCAST = (
    "bert.embeddings.position_embeddings.weight",
    "bert.embeddings.token_type_embeddings.weight",
)
UNIT = "example (one prefix window); a user with k training windows gets group privacy k*epsilon"


def planned_steps(epochs: float, batches_per_epoch: int) -> int:
    """Steps the train loop intends to take (it runs ceil(epochs * len(loader)) steps)."""
    return max(1, math.ceil(epochs * batches_per_epoch))


def noise_for(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """Gaussian noise multiplier that spends (epsilon, delta) in `steps` Poisson-sampled steps."""
    from opacus.accountants.utils import get_noise_multiplier

    if epsilon <= 0 or not 0 < delta < 1:
        raise ValueError("DP needs epsilon > 0 and 0 < delta < 1")
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
    engine = PrivacyEngine(accountant=ACCOUNTANT)
    with warnings.catch_warnings():  # opacus warns that secure_mode is off: expected outside prod
        warnings.simplefilter("ignore", UserWarning)
        private, dp_optimizer, dp_loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=noise,
            max_grad_norm=cfg.dp_max_grad_norm,
            poisson_sampling=True,
        )
    return private, dp_optimizer, dp_loader


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
        **trainable_summary(getattr(model, "_module", model)),
    }


def release(model: nn.Module) -> Any:
    """The plain model inside an opacus wrapper, with its per-sample-gradient hooks removed."""
    close = getattr(model, "_close", None)
    if callable(close):
        close()  # removes the hooks and the grad_sample attributes
    return getattr(model, "_module", model)
