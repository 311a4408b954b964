"""Fine-tune the pretrained BERT on labelled prefix windows and write a bundle.

CPU budget drives the defaults: the lower 3 layers of MiniLM, a class-balanced sample of windows
at 64 tokens (as many as the budget allows), AdamW with warmup and linear decay (by steps or by
budget, whichever ends first), early stopping on val PR-AUC, and a hard time limit that keeps the
best checkpoint so far. Sampling positives up makes the raw scores too high, so the final head is
recalibrated on val (Platt scaling folded into the head weights).
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from model.checkpoints import Budget, Checkpoints, warmup_linear
from model.data import LabelledData
from model.encoding import Encoded, Encoder, EncodingConfig
from model.labels import Example
from model.metrics import fit_platt, pr_auc, roc_auc
from model.model import BehaviorBert


@dataclass
class TrainConfig:
    """Training knobs (CLI options map onto these)."""

    max_minutes: float = 8.0
    clock: str = "wall"  # wall | cpu (CPU seconds / 2: fair budgets on a shared machine)
    epochs: float = 1.0
    batch_size: int = 16
    lr: float = 2e-4
    head_lr: float = 2e-3
    warmup: float = 0.1
    weight_decay: float = 0.01
    max_train: int = 15000  # training windows per epoch
    pos_frac: float = 0.35  # share of positives in the training sample (imbalance handling)
    val_size: int = 3000
    eval_every: int = 150  # steps
    patience: int = 4  # evaluations without val PR-AUC gain
    average_top: int = 3  # average the weights of the k best checkpoints if val prefers it
    recent_frac: float = 1.0  # sample from the most recent share of train prefixes
    layers: int | None = 3  # keep only the base model's first N layers (None: all)
    causal: bool = False  # causal attention: every event of a window is a training example
    freeze_word_embeddings: bool = True  # 12M rarely used params; Adam on them costs time
    freeze_layers: int = 0  # also freeze all embeddings and the lowest N layers (faster backward)
    seed: int = 0
    dp_epsilon: float | None = None
    dp_delta: float = 1e-5
    dp_max_grad_norm: float = 1.0
    dp_train: str = "head"  # what DP-SGD trains: all | top (last layer + head) | head; model/dp.py


@dataclass
class TrainResult:
    model: BehaviorBert
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)
    calibration: tuple[float, float] = (1.0, 0.0)
    stopped: str = ""
    seconds: float = 0.0  # wall
    budget_used_s: float = 0.0  # by the budget's clock
    n_train: int = 0
    n_val: int = 0
    dp_epsilon: float | None = None
    dp: dict[str, Any] | None = None  # model.dp.dp_report: epsilon spent, delta, what was trained


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def sample_train(
    examples: Sequence[Example], cfg: TrainConfig, rng: random.Random
) -> list[Example]:
    """A class-balanced sample: up to pos_frac positives (first label), the rest negatives."""
    pool = sorted(examples, key=lambda e: e.ts)[int(len(examples) * (1 - cfg.recent_frac)) :]
    pos = [e for e in pool if e.labels[0] > 0]
    neg = [e for e in pool if e.labels[0] == 0]
    n_pos = min(len(pos), int(cfg.max_train * cfg.pos_frac))
    n_neg = min(len(neg), cfg.max_train - n_pos)
    chosen = rng.sample(pos, n_pos) + rng.sample(neg, n_neg)
    rng.shuffle(chosen)
    return chosen


Targets = list[tuple[int, tuple[float, ...]]]  # (token position, labels); position -1: whole window


def targets_for(
    example: Example, enc: Encoded, data: LabelledData, window: int, causal: bool
) -> Targets:
    """One target per window, or (causal) one per labelled event, read at its last token."""
    if not causal:
        return [(-1, example.labels)]
    start = max(0, example.index + 1 - window)
    last_token = {k: pos for pos, k in enumerate(enc.event_index) if k >= 0}
    targets = []
    for k, pos in sorted(last_token.items()):
        labels = data.labels_at(example.user, start + k)
        if labels is not None:
            targets.append((pos, labels))
    return targets


def collate(pad_id: int, n_labels: int):  # type: ignore[no-untyped-def]
    def fn(batch: list[tuple[Encoded, Targets]]) -> tuple[torch.Tensor, ...]:
        length = max(len(enc.input_ids) for enc, _ in batch)
        width = max(len(t) for _, t in batch)
        ids = [enc.input_ids + [pad_id] * (length - len(enc.input_ids)) for enc, _ in batch]
        mask = [[1] * len(enc.input_ids) + [0] * (length - len(enc.input_ids)) for enc, _ in batch]
        pos = [[p for p, _ in t] + [-2] * (width - len(t)) for _, t in batch]  # -2: padding
        pad_y = (0.0,) * n_labels
        y = [[list(lab) for _, lab in t] + [list(pad_y)] * (width - len(t)) for _, t in batch]
        return torch.tensor(ids), torch.tensor(mask), torch.tensor(pos), torch.tensor(y)

    return fn


def batch_loss(model: BehaviorBert, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Mean BCE over the batch's targets (every labelled event when the model is causal)."""
    ids, mask, pos, y = batch
    if model.config.causal:
        logits = model.forward_positions(ids, mask, pos)
        valid = (pos >= 0).unsqueeze(-1).expand_as(logits)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits[valid], y[valid].float())
    return torch.nn.functional.binary_cross_entropy_with_logits(model(ids, mask), y[:, 0].float())


@torch.inference_mode()
def score(
    model: BehaviorBert, encoder: Encoder, encoded: Sequence[Encoded], batch: int = 64
) -> np.ndarray:
    """Logits [n, n_labels] in eval mode, batches sorted by length to limit padding."""
    model.eval()
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    out = np.zeros((len(encoded), len(model.config.labels)), dtype=np.float64)
    for start in range(0, len(order), batch):
        rows = order[start : start + batch]
        ids, mask = encoder.pad(
            [encoded[i] for i in rows], max(len(encoded[i].input_ids) for i in rows)
        )
        out[rows] = model(torch.tensor(ids), torch.tensor(mask)).double().numpy()
    return out


def make_optimizer(model: BehaviorBert, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.freeze_word_embeddings:
        model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    if cfg.freeze_layers > 0:
        for module in (model.bert.embeddings, *model.bert.encoder.layer[: cfg.freeze_layers]):
            module.requires_grad_(False)
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for _name, param in model.bert.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay, "lr": cfg.lr},
            {"params": no_decay, "weight_decay": 0.0, "lr": cfg.lr},
            {"params": list(model.head.parameters()), "weight_decay": 0.0, "lr": cfg.head_lr},
        ]
    )


def train_model(
    model: BehaviorBert, encoder: Encoder, data: LabelledData, window: int, cfg: TrainConfig
) -> TrainResult:
    """Fine-tune with early stopping on val PR-AUC; returns the best (calibrated) model."""
    seed_everything(cfg.seed)
    budget = Budget(cfg.max_minutes, cfg.clock)
    rng = random.Random(cfg.seed)
    train_ex = sample_train(data.split("train"), cfg, rng)
    val_all = data.split("val")
    val_ex = rng.sample(val_all, min(cfg.val_size, len(val_all)))
    if not train_ex or not val_ex or not any(e.labels[0] for e in val_ex):
        raise ValueError("training needs train examples and val examples with positives")
    encode = lambda exs: [encoder.encode(data.window(e, window)) for e in exs]  # noqa: E731
    train_enc, val_enc = encode(train_ex), encode(val_ex)
    val_y = np.array([e.labels[0] for e in val_ex])
    causal = model.config.causal
    pairs = [
        (enc, targets_for(e, enc, data, window, causal))
        for e, enc in zip(train_ex, train_enc, strict=True)
    ]
    loader: DataLoader[Any] = DataLoader(
        pairs,  # type: ignore[arg-type]
        batch_size=cfg.batch_size,
        shuffle=True,
        collate_fn=collate(encoder.pad_id, len(model.config.labels)),
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    optimizer = make_optimizer(model, cfg)
    result = TrainResult(model, n_train=len(train_ex), n_val=len(val_ex))
    if cfg.dp_epsilon is not None:
        from model.dp import make_private  # extension point: DP-SGD via opacus

        model, optimizer, loader = make_private(model, optimizer, loader, cfg)
    total = max(1, math.ceil(cfg.epochs * len(loader)))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_linear(total, cfg.warmup, budget)
    )
    checkpoints = Checkpoints(cfg.average_top)
    best_pr, bad_evals, step = -1.0, 0, 0
    # A bar on a terminal only; a log gets just the one line per validation (tqdm.write).
    bar = tqdm(
        total=total, desc="train", unit="step", mininterval=2.0, disable=not sys.stderr.isatty()
    )
    result.stopped = "completed"
    while step < total and not result.stopped.startswith(("time", "early")):
        for batch in loader:
            model.train()
            loss = batch_loss(model, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            bar.update(1)
            shown = {"loss": f"{loss.item():.3f}"}
            if best_pr >= 0:  # no best_pr=-1.000 before the first validation
                shown["best_pr"] = f"{best_pr:.3f}"
            bar.set_postfix(shown)
            last = step >= total or budget.over()
            if step % cfg.eval_every == 0 or last:
                val_logit = score(model, encoder, val_enc)[:, 0]
                pr, auc = pr_auc(val_y, val_logit), roc_auc(val_y, val_logit)
                elapsed = budget.wall()
                result.history.append(
                    {
                        "step": step,
                        "loss": loss.item(),
                        "val_pr_auc": pr,
                        "val_auc": auc,
                        "seconds": elapsed,
                    }
                )
                tqdm.write(f"step {step}: val PR-AUC {pr:.4f} AUC {auc:.4f}")
                if checkpoints.offer(pr, step, model.state_dict()):
                    best_pr, bad_evals = pr, 0
                    result.best = {"step": step, "val_pr_auc": pr, "val_auc": auc}
                else:
                    bad_evals += 1
                if bad_evals >= cfg.patience:
                    result.stopped = f"early stop at step {step}"
            if budget.over() and not result.stopped.startswith("early"):
                result.stopped = f"time budget ({cfg.max_minutes} min) at step {step}"
            if step >= total or result.stopped.startswith(("time", "early")):
                break
    bar.close()
    if cfg.dp_epsilon is not None:
        from model.dp import dp_report, release

        result.dp = dp_report(optimizer, loader, step, cfg, model)
        result.dp_epsilon = result.dp["epsilon"]
        model = release(model)
    model = getattr(model, "_module", model)  # opacus wraps the module
    result.model = checkpoints.restore(
        model, lambda m: pr_auc(val_y, score(m, encoder, val_enc)[:, 0])
    )
    result.best["averaged"] = checkpoints.used_average
    result.calibration = calibrate_head(result.model, encoder, val_enc, val_y)
    result.seconds = budget.wall()
    result.budget_used_s = budget.used()
    return result


def calibrate_head(
    model: BehaviorBert, encoder: Encoder, val_enc: Sequence[Encoded], val_y: np.ndarray
) -> tuple[float, float]:
    """Platt-scale the first label on val and fold it into the head: logit' = a * logit + b."""
    a, b = fit_platt(score(model, encoder, val_enc)[:, 0], val_y)
    with torch.no_grad():
        model.head.weight[0] *= a
        model.head.bias[0] = a * model.head.bias[0] + b
    return a, b


def summary(cfg: TrainConfig, result: TrainResult, encoding: EncodingConfig) -> dict[str, Any]:
    """What goes into bundle.json's metrics and metrics.json."""
    return {
        "train": {
            **asdict(cfg),
            "n_train": result.n_train,
            "n_val": result.n_val,
            "seconds": round(result.seconds, 1),
            "budget_used_s": round(result.budget_used_s, 1),
            "stopped": result.stopped,
        },  # fmt: skip
        "best": result.best,
        "calibration": {"a": result.calibration[0], "b": result.calibration[1]},
        "history": result.history,
        "encoding": encoding.to_dict(),
    }


def train_bundle(
    data: LabelledData,
    out_dir: Path,
    base_dir: Path,
    encoding: EncodingConfig,
    cfg: TrainConfig,
) -> tuple[Path, TrainResult]:
    """Fine-tune the base model on `data`; export a bundle (model.ts, tokenizer, metrics, plots)."""
    import json

    from model.bundle import METRICS_FILE, PLOTS_DIR
    from model.export import export_bundle
    from model.plots import plot_history
    from model.runtime import load_tokenizer

    seed_everything(cfg.seed)
    tokenizer = load_tokenizer(base_dir)
    encoder = Encoder(tokenizer, encoding)
    if cfg.causal and (
        encoding.time_ref != "prev" or encoding.name_order != "oldest" or encoding.summary
    ):
        raise ValueError("a causal model needs time_ref=prev, name_order=oldest and no summary")
    model = BehaviorBert.from_base(
        base_dir,
        labels=data.label_names,
        layers=cfg.layers,
        causal=cfg.causal,
        pooling="last" if cfg.causal else "mean",
    )
    result = train_model(model, encoder, data, encoding.window, cfg)
    metrics = summary(cfg, result, encoding)
    metrics["data"] = data.stats
    bundle = export_bundle(
        result.model,
        tokenizer,
        encoding,
        out_dir,
        base_model=str(base_dir),
        data_fingerprint=data.fingerprint,
        metrics={
            "best": result.best,
            "train_seconds": round(result.seconds, 1),
            **({"dp": result.dp} if result.dp else {}),
        },
        dp_epsilon=result.dp_epsilon,
    )
    (bundle / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    plot_history(result.history, bundle / PLOTS_DIR / "training.png")
    return bundle, result
