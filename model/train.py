"""Fine-tune the pretrained BERT on labelled prefix windows and write a bundle.

CPU budget drives the defaults: the lower 3 layers of MiniLM at 64 tokens, every train window at
its natural rate (tokenised once and cached per data fingerprint and encoding), batches grouped by
length bucket, AdamW with warmup and linear decay (by steps or by budget, whichever ends first),
early stopping on val PR-AUC, and `--max-minutes` as a hard limit on the whole command that keeps
the best checkpoint so far. The default model is fused (Wide & Deep style): the head adds a linear
map of the window's aggregates and, when val prefers it, a hashed n-gram bag, both warm-started
from the logistic regression fitted on the same train split, so BERT learns what they miss. The
baselines (LR, LightGBM, n-gram LR, aggregates + n-gram LR) are fitted on the same split and stored
in the bundle. The head is recalibrated on val (Platt scaling folded into the weights).
"""

from __future__ import annotations

import math
import os
import random
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from model.checkpoints import Budget, Checkpoints, warmup_linear
from model.data import LabelledData
from model.encoding import Encoded, Encoder, EncodingConfig, bucket_for
from model.fusion import NGRAM_BUCKETS, FusionConfig, normalise, normaliser, pad_ngrams
from model.labels import Example
from model.metrics import fit_platt, pr_auc, roc_auc
from model.model import BehaviorBert
from model.prepared import Prepared, describe, log, prepare


@dataclass
class TrainConfig:
    """Training knobs (CLI options map onto these)."""

    max_minutes: float = 28.0  # the whole command: data, baselines, training, export
    clock: str = "wall"  # wall | cpu (CPU seconds / 2: fair budgets on a shared machine)
    epochs: float = 3.0
    batch_size: int = 16
    lr: float = 2e-4
    head_lr: float = 2e-3
    linear_lr: float = 0.5  # fused linear parts' learning rate, as a multiple of lr (0: frozen)
    warmup: float = 0.1
    weight_decay: float = 0.01
    max_train: int | None = None  # training windows per epoch (None: all)
    balance: str = "natural"  # natural | balanced (pos_frac positives in the sample)
    pos_frac: float = 0.35  # share of positives in the training sample when balanced
    val_size: int = 3000
    eval_every: int = 300  # steps
    patience: int = 4  # evaluations without val PR-AUC gain (0: no early stopping)
    average_top: int = 3  # average the weights of the k best checkpoints if val prefers it
    recent_frac: float = 1.0  # fine-tune on the newest share of train windows (1: all)
    layers: int | None = 3  # keep only the base model's first N layers (None: all)
    causal: bool = False  # causal attention: every event of a window is a training example
    freeze_word_embeddings: bool = True  # 12M rarely used params; Adam on them costs time
    freeze_layers: int = 0  # also freeze all embeddings and the lowest N layers (faster backward)
    seed: int = 0
    fusion: str = "auto"  # auto | features | features+ngrams | none (auto: the wide part if val
    # PR-AUC of the linear model prefers it)
    baselines: bool = True  # fit and store LR, LightGBM, n-gram LR on the same split
    cache_dir: str = ".bstream/cache"  # tokenised windows per data fingerprint and encoding
    reserve_s: float = 90.0  # of the budget, kept for calibration and export
    threads: int | None = None  # torch threads; None: 1 on an oversubscribed machine, else all
    dp_epsilon: float | None = None
    dp_delta: float = 1e-5
    dp_max_grad_norm: float = 1.0
    dp_train: str = "head"  # what DP-SGD trains: all | top (last layer + head) | head; model/dp.py
    init: str = "pretrained"  # pretrained | scratch (same architecture, random weights: ablation)
    curve: tuple[int, ...] = (5000, 15000, 30000)  # learning-curve snapshots (windows seen); one
    # and two epochs are added; `bstream eval --learning-curve` scores them on test


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
    windows_seen: int = 0
    train_loop_s: float = 0.0
    curve: list[dict[str, Any]] = field(default_factory=list)  # label, windows, step, state


VAL_SEED = 0  # not TrainConfig.seed: a new seed must not move the yardstick


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def sample_train(
    examples: Sequence[Example], cfg: TrainConfig, rng: random.Random
) -> list[Example]:
    """Natural rate: all windows (or max_train at random). Balanced: up to pos_frac positives."""
    pool = sorted(examples, key=lambda e: e.ts)[int(len(examples) * (1 - cfg.recent_frac)) :]
    if cfg.balance == "natural":
        n = len(pool) if cfg.max_train is None else min(len(pool), cfg.max_train)
        chosen = rng.sample(pool, n)
        rng.shuffle(chosen)
        return chosen
    max_train = cfg.max_train or len(pool)
    pos = [e for e in pool if e.labels[0] > 0]
    neg = [e for e in pool if e.labels[0] == 0]
    n_pos = min(len(pos), int(max_train * cfg.pos_frac))
    n_neg = min(len(neg), max_train - n_pos)
    chosen = rng.sample(pos, n_pos) + rng.sample(neg, n_neg)
    rng.shuffle(chosen)
    return chosen


def val_sample(n_val: int, size: int) -> list[int]:
    """Rows of the val split used for early stopping: fixed, whatever the seed or train sample.

    >>> val_sample(10, 3) == val_sample(10, 3)
    True
    """
    return sorted(random.Random(VAL_SEED).sample(range(n_val), min(size, n_val)))


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
    ids, mask, pos, y, *extra = batch
    if model.config.causal:
        logits = model.forward_positions(ids, mask, pos)
        valid = (pos >= 0).unsqueeze(-1).expand_as(logits)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits[valid], y[valid].float())
    logits = model(ids, mask, *extra)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, y[:, 0].float())


def fused_rows(rows: Sequence[int], prep: Prepared, fusion: FusionConfig | None) -> list[Any]:
    """The fused inputs of prepared rows as tensors (features, n-grams), in the model's order."""
    if fusion is None:
        return []
    out: list[Any] = []
    if fusion.features:
        out.append(torch.from_numpy(normalise(prep.raw[list(rows)], fusion)))
    if fusion.ngram_buckets:
        out.append(torch.from_numpy(pad_ngrams([prep.grams[i] for i in rows])))
    return out


@torch.inference_mode()
def score(
    model: BehaviorBert,
    encoder: Encoder,
    prep: Prepared,
    fusion: FusionConfig | None = None,
    batch: int = 64,
) -> np.ndarray:
    """Logits [n, n_labels] in eval mode, batches sorted by length to limit padding."""
    model.eval()
    encoded = prep.encoded
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    out = np.zeros((len(encoded), len(model.config.labels)), dtype=np.float64)
    for start in range(0, len(order), batch):
        rows = order[start : start + batch]
        ids, mask = encoder.pad(
            [encoded[i] for i in rows], max(len(encoded[i].input_ids) for i in rows)
        )
        extra = fused_rows(rows, prep, fusion)
        out[rows] = model(torch.tensor(ids), torch.tensor(mask), *extra).double().numpy()
    return out


def length_batches(
    lengths: Sequence[int], buckets: Sequence[int], size: int, rng: random.Random
) -> list[list[int]]:
    """Shuffled batches whose rows share a length bucket (little padding), in shuffled order."""
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        groups.setdefault(bucket_for(n, buckets), []).append(i)
    batches = []
    for rows in groups.values():
        rng.shuffle(rows)
        batches += [rows[k : k + size] for k in range(0, len(rows), size)]
    rng.shuffle(batches)
    return batches


def bucket_batch(
    rows: Sequence[int], prep: Prepared, pad_id: int, fusion: FusionConfig | None
) -> tuple[torch.Tensor, ...]:
    """(ids, mask, pos, y, *fused) for a batch of prepared rows, padded to its longest row."""
    encoded = [prep.encoded[i] for i in rows]
    length = max(len(e.input_ids) for e in encoded)
    ids = [e.input_ids + [pad_id] * (length - len(e.input_ids)) for e in encoded]
    mask = [[1] * len(e.input_ids) + [0] * (length - len(e.input_ids)) for e in encoded]
    pos = torch.full((len(rows), 1), -1)
    y = torch.from_numpy(prep.y[list(rows)]).unsqueeze(1)
    return (torch.tensor(ids), torch.tensor(mask), pos, y, *fused_rows(rows, prep, fusion))


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
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": cfg.weight_decay, "lr": cfg.lr},
        {"params": no_decay, "weight_decay": 0.0, "lr": cfg.lr},
        {"params": list(model.head.parameters()), "weight_decay": 0.0, "lr": cfg.head_lr},
    ]
    # the warm-started linear parts start at the L2-tuned LR optimum on train; Adam moves every
    # hashed n-gram weight at the same pace however rarely it occurs, so they move slowly or not
    late = [
        p
        for name in ("feature_head", "wide")
        if hasattr(model, name)
        for p in getattr(model, name).parameters()
    ]
    for param in late:
        param.requires_grad_(cfg.linear_lr > 0)
    if late and cfg.linear_lr > 0:
        groups.append({"params": late, "weight_decay": 0.0, "lr": cfg.lr * cfg.linear_lr})
    return torch.optim.AdamW(groups)


def progress(total: int) -> Any:
    """A tqdm bar on a terminal; None when stderr is not a TTY (then one line per validation)."""
    if not sys.stderr.isatty():
        return None
    return tqdm(total=total, desc="train", unit="step", mininterval=2.0)


def thousands(n: int) -> str:
    """A window count as the curve labels it: 256, 5k, 57k."""
    return f"{round(n / 1000)}k" if n >= 1000 else str(n)


def curve_points(cfg: TrainConfig, n_train: int) -> list[tuple[str, int]]:
    """Learning-curve snapshot points (label, windows seen), smallest first.

    >>> curve_points(TrainConfig(curve=(5000, 15000)), 10000)
    [('5k', 5000), ('1 epoch (10k)', 10000), ('2 epochs', 20000)]
    """
    points = {n: thousands(n) for n in cfg.curve if n < n_train}
    points[n_train] = f"1 epoch ({thousands(n_train)})"
    points.setdefault(2 * n_train, "2 epochs")
    return [(label, n) for n, label in sorted(points.items())]


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights training changes, and the fused linear parts (calibration rescales
    those in the final model, so a snapshot must carry its own even when they are frozen)."""
    return {
        name: param.detach().clone()
        for name, param in model.named_parameters()
        if param.requires_grad or name.startswith(("feature_head.", "wide."))
    }


def train_model(
    model: BehaviorBert,
    encoder: Encoder,
    data: LabelledData,
    window: int,
    cfg: TrainConfig,
    budget: Budget | None = None,
    train_prep: Prepared | None = None,
    val_prep: Prepared | None = None,
) -> TrainResult:
    """Fine-tune with early stopping on val PR-AUC; returns the best (calibrated) model."""
    seed_everything(cfg.seed)
    budget = budget or Budget(cfg.max_minutes, cfg.clock)
    rng = random.Random(cfg.seed)
    cache = Path(cfg.cache_dir) if cfg.cache_dir else None
    fusion = model.config.fusion_config()
    buckets = fusion.ngram_buckets if fusion and fusion.ngram_buckets else NGRAM_BUCKETS
    if train_prep is None:
        train_prep = prepare(data, "train", encoder, window, buckets, cache)
    if val_prep is None:
        val_prep = prepare(data, "val", encoder, window, buckets, cache)
    order = {id(e): i for i, e in enumerate(train_prep.examples)}
    chosen = sample_train(train_prep.examples, cfg, rng)
    train = train_prep.subset([order[id(e)] for e in chosen])
    # the same val rows for every seed and sample: runs are compared on one yardstick
    val_rows = val_sample(len(val_prep.examples), cfg.val_size)
    val = val_prep.subset(val_rows)
    val_y = val.y[:, 0]
    if not train.examples or not val.examples or not val_y.any():
        raise ValueError("training needs train examples and val examples with positives")
    causal = model.config.causal
    dp = cfg.dp_epsilon is not None
    optimizer = make_optimizer(model, cfg)
    result = TrainResult(model, n_train=len(train.examples), n_val=len(val.examples))
    loader: DataLoader[Any] | None = None
    if causal or dp:  # the per-event targets and opacus need the DataLoader path
        if fusion is not None:
            raise ValueError("fusion is for bidirectional models without DP; use --fusion none")
        pairs = [
            (enc, targets_for(e, enc, data, window, causal))
            for e, enc in zip(train.examples, train.encoded, strict=True)
        ]
        loader = DataLoader(
            pairs,  # type: ignore[arg-type]
            batch_size=cfg.batch_size,
            shuffle=True,
            collate_fn=collate(encoder.pad_id, len(model.config.labels)),
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        if dp:
            from model.dp import make_private  # extension point: DP-SGD via opacus

            model, optimizer, loader = make_private(model, optimizer, loader, cfg)
    lengths = [len(e.input_ids) for e in train.encoded]
    steps_per_epoch = (
        len(loader) if loader is not None else math.ceil(len(lengths) / cfg.batch_size)
    )
    total = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    loop_budget = Budget(
        max(0.05, (budget.seconds - budget.used() - cfg.reserve_s) / 60), cfg.clock
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_linear(total, cfg.warmup, loop_budget)
    )
    checkpoints = Checkpoints(cfg.average_top)
    best_pr, bad_evals, step, seen = -1.0, 0, 0, 0
    # opacus renames the parameters, and DP runs are not what the curve is about
    snapshots = [] if dp else curve_points(cfg, len(train.examples))
    bar = progress(total)
    last_loss = float("nan")

    val_cost = [0.0]  # seconds of the last validation: restore and calibration cost ~2 more

    def validate() -> None:
        nonlocal best_pr, bad_evals
        started = loop_budget.wall()
        val_logit = score(model, encoder, val, fusion)[:, 0]
        pr, auc = pr_auc(val_y, val_logit), roc_auc(val_y, val_logit)
        elapsed = loop_budget.wall()
        rate = seen / elapsed if elapsed > 0 else 0.0
        result.history.append(
            {"step": step, "windows": seen, "loss": last_loss, "val_pr_auc": pr,
             "val_auc": auc, "seconds": elapsed, "windows_per_s": rate}
        )  # fmt: skip
        line = (
            f"step {step} ({seen} windows, {rate:.1f}/s, {elapsed:.0f} s): "
            f"val PR-AUC {pr:.4f} AUC {auc:.4f}"
        )
        tqdm.write(line, file=sys.stderr) if bar is not None else log(line)
        if checkpoints.offer(pr, step, model.state_dict()):
            best_pr, bad_evals = pr, 0
            result.best = {"step": step, "windows": seen, "val_pr_auc": pr, "val_auc": auc}
        else:
            bad_evals += 1
        if cfg.patience and bad_evals >= cfg.patience:
            result.stopped = f"early stop at step {step}"
        val_cost[0] = loop_budget.wall() - started

    def out_of_time() -> bool:
        """Over budget, counting one more validation plus restore and calibration (a busy
        machine makes each take minutes)."""
        return loop_budget.used() + 3 * val_cost[0] > loop_budget.seconds

    if fusion is not None:
        validate()  # step 0: the warm-started linear parts alone are a candidate too
    result.stopped = result.stopped or "completed"
    epoch = 0
    while step < total and not result.stopped.startswith(("time", "early")):
        batches: Any = loader
        if loader is None:
            rows_list = length_batches(lengths, encoder.cfg.length_buckets(), cfg.batch_size, rng)
            batches = (bucket_batch(r, train, encoder.pad_id, fusion) for r in rows_list)
        for batch in batches:
            model.train()
            loss = batch_loss(model, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            seen += int(batch[0].size(0))
            last_loss = float(loss.item())
            while snapshots and seen >= snapshots[0][1]:
                label, _ = snapshots.pop(0)
                result.curve.append(
                    {"label": label, "windows": seen, "step": step, "state": trainable_state(model)}
                )
            if bar is not None:
                bar.update(1)
                shown = {"best_pr": f"{best_pr:.3f}"} if best_pr >= 0 else {}  # none before val
                bar.set_postfix({"loss": f"{last_loss:.3f}", **shown})
            last = step >= total or out_of_time()
            if step % cfg.eval_every == 0 or last:
                validate()
            if out_of_time() and not result.stopped.startswith("early"):
                result.stopped = f"time budget ({cfg.max_minutes} min) at step {step}"
            if step >= total or result.stopped.startswith(("time", "early")):
                break
        epoch += 1
    if bar is not None:
        bar.close()
    if not dp and seen and (not result.curve or result.curve[-1]["windows"] < seen):
        # where training stopped (early stop or budget) is a point of the curve too
        result.curve.append(
            {"label": f"end of training ({thousands(seen)})", "windows": seen, "step": step,
             "state": trainable_state(model)}
        )  # fmt: skip
    result.windows_seen = seen
    result.train_loop_s = loop_budget.wall()
    if dp and loader is not None:
        from model.dp import dp_report, release

        result.dp = dp_report(optimizer, loader, step, cfg, model)
        result.dp_epsilon = result.dp["epsilon"]
        model = release(model)
    model = getattr(model, "_module", model)  # opacus wraps the module
    result.model = checkpoints.restore(
        model, lambda m: pr_auc(val_y, score(m, encoder, val, fusion)[:, 0])
    )
    result.best["averaged"] = checkpoints.used_average
    result.best["epochs"] = round(seen / max(1, len(train.examples)), 2)
    result.calibration = calibrate_head(result.model, encoder, val, fusion)
    result.seconds = budget.wall()
    result.budget_used_s = budget.used()
    return result


def calibrate_head(
    model: BehaviorBert, encoder: Encoder, val: Prepared, fusion: FusionConfig | None = None
) -> tuple[float, float]:
    """Platt-scale the first label on val and fold it into the head: logit' = a * logit + b."""
    a, b = fit_platt(score(model, encoder, val, fusion)[:, 0], val.y[:, 0])
    model.scale_primary(a, b)
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
            "train_loop_s": round(result.train_loop_s, 1),
            "windows_seen": result.windows_seen,
            "windows_per_s": round(result.windows_seen / max(result.train_loop_s, 1e-9), 1),
            "stopped": result.stopped,
        },  # fmt: skip
        "best": result.best,
        "calibration": {"a": result.calibration[0], "b": result.calibration[1]},
        "history": result.history,
        "encoding": encoding.to_dict(),
    }


def choose_fusion(
    cfg: TrainConfig, train: Prepared, val: Prepared
) -> tuple[FusionConfig | None, Any, dict[str, Any]]:
    """The fusion inputs (auto: n-grams only if the linear model's val PR-AUC gains from them)
    and the linear model that warm-starts them; also val figures behind the choice."""
    from model.baselines import fit_sparse_logreg, ngram_matrix, wide_matrix

    if cfg.fusion == "none":
        return None, None, {}
    mean, std = normaliser(train.raw)
    base = FusionConfig(features=True, mean=mean, std=std)
    feats_tr, feats_va = normalise(train.raw, base), normalise(val.raw, base)
    y_tr, y_va = train.y[:, 0], val.y[:, 0]
    empty = lambda n: ngram_matrix([()] * n, 0)  # noqa: E731
    lin = fit_sparse_logreg(
        "lr_aggregates", wide_matrix(feats_tr, empty(len(y_tr))), y_tr,
        wide_matrix(feats_va, empty(len(y_va))), y_va,
    )  # fmt: skip
    choice: dict[str, Any] = {"features_only_val_pr_auc": lin.val_pr_auc}
    if cfg.fusion == "features":
        return base, lin, choice
    grams_tr = ngram_matrix(train.grams, NGRAM_BUCKETS)
    grams_va = ngram_matrix(val.grams, NGRAM_BUCKETS)
    wide = fit_sparse_logreg(
        "wide_lr", wide_matrix(feats_tr, grams_tr), y_tr, wide_matrix(feats_va, grams_va), y_va
    )
    choice["features_ngrams_val_pr_auc"] = wide.val_pr_auc
    if cfg.fusion == "features+ngrams" or wide.val_pr_auc > lin.val_pr_auc:
        choice["chosen"] = "features+ngrams"
        return replace(base, ngram_buckets=NGRAM_BUCKETS), wide, choice
    choice["chosen"] = "features"
    return base, lin, choice


def warm_start(model: BehaviorBert, linear: Any, fusion: FusionConfig) -> None:
    """Copy the fitted linear model into the fused parts (first label); the [CLS] head starts
    at zero, so the untrained model scores exactly like the linear model."""
    coef = np.asarray(linear.model.coef_[0], dtype=np.float32)
    n = fusion.n_features
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.feature_head.weight.zero_()
        model.feature_head.bias.zero_()
        model.feature_head.weight[0] = torch.from_numpy(coef[:n])
        model.feature_head.bias[0] = float(linear.model.intercept_[0])
        if fusion.ngram_buckets:
            model.wide.weight.zero_()
            model.wide.weight[:, 0] = torch.from_numpy(coef[n:])


def fit_baselines(
    train: Prepared, val: Prepared, extra: Sequence[Any], seed: int
) -> dict[str, Any]:
    """LR and LightGBM on the aggregates, LR on the n-grams of the model's text, on this split."""
    from model.baselines import fit_lightgbm, fit_logreg, fit_sparse_logreg, ngram_matrix

    y_tr, y_va = train.y[:, 0], val.y[:, 0]
    out: dict[str, Any] = {}
    for fit in (fit_logreg, fit_lightgbm):
        log(f"fitting baseline {fit.__name__.removeprefix('fit_')} ...")
        baseline = fit(train.raw, y_tr, val.raw, y_va)
        out[baseline.name] = baseline
    log("fitting baseline ngram_lr ...")
    out["ngram_lr"] = fit_sparse_logreg(
        "ngram_lr",
        ngram_matrix(train.grams, NGRAM_BUCKETS),
        y_tr,
        ngram_matrix(val.grams, NGRAM_BUCKETS),
        y_va,
    )
    for baseline in extra:
        if baseline is not None and baseline.name == "wide_lr":
            out["wide_lr"] = baseline  # aggregates + n-grams: the fused model's linear part
    return out


def auto_threads() -> int:
    """1 when the machine is oversubscribed (intra-op threads then wait on each other: measured
    2.5x faster than 2 threads at load 15 on 2 cores), else torch's default."""
    busy = os.getloadavg()[0] > (os.cpu_count() or 1)
    return 1 if busy else torch.get_num_threads()


def train_bundle(
    data: LabelledData,
    out_dir: Path,
    base_dir: Path,
    encoding: EncodingConfig,
    cfg: TrainConfig,
) -> tuple[Path, TrainResult]:
    """Fine-tune the base model on `data`; export a bundle (model.ts, tokenizer, baselines, ...)."""
    import json

    from model.baselines import save_baselines
    from model.bundle import CURVE_FILE, METRICS_FILE, PLOTS_DIR, add_file
    from model.export import export_bundle
    from model.plots import plot_history
    from model.reference import reference_for_bundle
    from model.runtime import load_tokenizer

    budget = Budget(cfg.max_minutes, cfg.clock)
    seed_everything(cfg.seed)
    cfg = replace(cfg, threads=cfg.threads or auto_threads())
    torch.set_num_threads(cfg.threads or 1)
    log(f"torch threads: {cfg.threads} (load average {os.getloadavg()[0]:.1f})")
    tokenizer = load_tokenizer(base_dir)
    encoder = Encoder(tokenizer, encoding)
    if cfg.causal and (
        encoding.time_ref != "prev" or encoding.name_order != "oldest" or encoding.summary
    ):
        raise ValueError("a causal model needs time_ref=prev, name_order=oldest and no summary")
    if (cfg.causal or cfg.dp_epsilon is not None) and cfg.fusion != "none":
        cfg = replace(cfg, fusion="none")  # fusion is for the bidirectional, non-DP model
    cache = Path(cfg.cache_dir) if cfg.cache_dir else None
    log("tokenising (cached per data fingerprint and encoding) ...")
    train_prep = prepare(data, "train", encoder, encoding.window, NGRAM_BUCKETS, cache)
    val_prep = prepare(data, "val", encoder, encoding.window, NGRAM_BUCKETS, cache)
    log(
        f"prepared in {budget.wall():.0f} s: train {describe(train_prep)}, val {describe(val_prep)}"
    )
    fusion, linear, choice = choose_fusion(cfg, train_prep, val_prep)
    if choice:
        log(f"fusion: {json.dumps(choice)}")
    baselines = fit_baselines(train_prep, val_prep, [linear], cfg.seed) if cfg.baselines else {}
    log(f"baselines fitted ({budget.wall():.0f} s): " + ", ".join(
        f"{k} val PR-AUC {b.val_pr_auc:.4f}" for k, b in baselines.items()))  # fmt: skip
    model = BehaviorBert.from_base(
        base_dir,
        labels=data.label_names,
        layers=cfg.layers,
        causal=cfg.causal,
        pooling="last" if cfg.causal else "mean",
        fusion=fusion.to_dict() if fusion else {},
        init=cfg.init,
    )
    if fusion is not None:
        warm_start(model, linear, fusion)
    result = train_model(model, encoder, data, encoding.window, cfg, budget, train_prep, val_prep)
    metrics = summary(cfg, result, encoding)
    metrics["data"] = data.stats
    metrics["fusion_choice"] = choice
    metrics["baselines"] = {
        k: {**b.params, "val_pr_auc": b.val_pr_auc} for k, b in baselines.items()
    }
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
            "windows_seen": result.windows_seen,
            "windows_per_s": metrics["train"]["windows_per_s"],
            "init": cfg.init,
            **({"dp": result.dp} if result.dp else {}),
        },
        dp_epsilon=result.dp_epsilon,
    )
    if baselines:
        add_file(bundle, save_baselines(bundle, baselines, NGRAM_BUCKETS))
    if result.curve:  # for `bstream eval --learning-curve`; not needed to serve, so not hashed
        torch.save(result.curve, bundle / CURVE_FILE)
        metrics["curve"] = [{k: v for k, v in p.items() if k != "state"} for p in result.curve]
    reference_for_bundle(bundle, data, encoding.window)  # drift reference (model/reference.py)
    (bundle / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    plot_history(result.history, bundle / PLOTS_DIR / "training.png")
    result.seconds = budget.wall()
    return bundle, result
