"""Behaviour windows as model input: each event becomes a short text segment, then token ids.

The rendering is pure and driven by `EncodingConfig`, which is stored in the bundle so training and
serving encode identically. Items and categories get window-local names, assigned from the newest
event backwards ("a" is always the current item), so repeats are visible and truncating old events
never renames the kept ones.

>>> window = [{"event_type": "view", "ts": 0, "item_id": "9", "category": "4"},
...           {"event_type": "cart", "ts": 90_000, "item_id": "9", "category": "4"}]
>>> render(window, EncodingConfig())
['view minutes a 1', 'cart seconds a 1']
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

Event = Mapping[str, Any]
Window = Sequence[Event]

ENCODING_VERSION = 1
ITEM_WORDS = tuple("abcdefghijklmnopqrstuvwxyz")
CATEGORY_WORDS = tuple(str(n) for n in range(1, 31))  # one wordpiece each in BERT's vocab
TYPE_WORDS = {"view": "view", "click": "click", "cart": "cart", "fav": "saved", "purchase": "buy"}
# (age below this many seconds, word); older than the last bound -> OLDEST_WORD
TIME_BUCKETS: tuple[tuple[int, str], ...] = (
    (60, "seconds"),
    (600, "minutes"),
    (3600, "hour"),
    (6 * 3600, "hours"),
    (24 * 3600, "today"),
    (48 * 3600, "yesterday"),
)
OLDEST_WORD = "days"
PRICE_BUCKETS: tuple[tuple[float, str], ...] = ((20.0, "cheap"), (100.0, "mid"))
TOP_PRICE_WORD = "expensive"


@dataclass(frozen=True)
class EncodingConfig:
    """How windows become text; stored in bundle.json (see `to_dict`/`from_dict`)."""

    version: int = ENCODING_VERSION
    max_len: int = 128  # tokens including [CLS] and [SEP]
    window: int = 50  # newest events considered before token truncation
    item_identity: str = "local"  # local | hash | none
    category_identity: str = "local"  # local | hash | none
    hash_buckets: int = 200  # for "hash": ids map to the numbers 100..100+buckets-1
    time_mode: str = "every"  # every | change (time word only when its bucket changes)
    time_ref: str = "now"  # now: age vs the newest event | prev: gap since the previous event
    name_order: str = "newest"  # local names assigned from the newest (or oldest) event
    repeat_marker: bool = False  # append "again" when the item already appeared earlier
    price: bool = True  # price bucket word when an event carries a price
    separator: str = ""  # e.g. ";" between events (costs one token per event)
    summary: bool = False  # a header summarising all `window` events (not causal-safe)
    buckets: tuple[int, ...] = field(default=(16, 32, 64, 128))

    def __post_init__(self) -> None:
        if self.max_len < 4:
            raise ValueError("max_len must be at least 4")
        for name in ("item_identity", "category_identity"):
            if getattr(self, name) not in ("local", "hash", "none"):
                raise ValueError(f"{name} must be local, hash or none")
        if self.time_mode not in ("every", "change"):
            raise ValueError("time_mode must be every or change")
        if self.time_ref not in ("now", "prev") or self.name_order not in ("newest", "oldest"):
            raise ValueError("time_ref must be now or prev; name_order newest or oldest")
        if not 1 <= self.hash_buckets <= 240:
            raise ValueError("hash_buckets must be in 1..240")

    def length_buckets(self) -> tuple[int, ...]:
        """Padding lengths in use: the configured buckets below max_len, plus max_len."""
        return tuple(sorted({b for b in self.buckets if b < self.max_len} | {self.max_len}))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "buckets": list(self.buckets)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EncodingConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown encoding fields: {sorted(unknown)}")
        values = dict(data)
        if "buckets" in values:
            values["buckets"] = tuple(values["buckets"])
        return cls(**values)


def time_word(age_s: float) -> str:
    """Relative-time bucket word for an event `age_s` seconds older than the newest one."""
    for bound, word in TIME_BUCKETS:
        if age_s < bound:
            return word
    return OLDEST_WORD


def price_word(price: float) -> str:
    for bound, word in PRICE_BUCKETS:
        if price < bound:
            return word
    return TOP_PRICE_WORD


def _hash_word(value: str, buckets: int) -> str:
    digest = hashlib.blake2b(value.encode(), digest_size=4).digest()
    return str(100 + int.from_bytes(digest, "big") % buckets)


def _local_names(
    values: Sequence[str | None], words: Sequence[str], overflow: str, newest_first: bool = True
) -> list[str]:
    """Name values by first appearance from the newest (or oldest) event; None -> ''."""
    names: dict[str, str] = {}
    out = [""] * len(values)
    order = range(len(values) - 1, -1, -1) if newest_first else range(len(values))
    for i in order:
        value = values[i]
        if value is None:
            continue
        if value not in names:
            names[value] = words[len(names)] if len(names) < len(words) else overflow
        out[i] = names[value]
    return out


def _identity(
    values: Sequence[str | None],
    mode: str,
    cfg: EncodingConfig,
    local: tuple[str, ...],
    overflow: str,
) -> list[str]:
    if mode == "none":
        return [""] * len(values)
    if mode == "hash":
        return ["" if v is None else _hash_word(v, cfg.hash_buckets) for v in values]
    return _local_names(values, local, overflow, cfg.name_order == "newest")


def render(window: Window, cfg: EncodingConfig) -> list[str]:
    """One text segment per event of the last `cfg.window` events (oldest first)."""
    events = list(window)[-cfg.window :]
    if not events:
        return []
    now_ms = events[-1]["ts"]
    items = _identity(
        [str(e["item_id"]) for e in events], cfg.item_identity, cfg, ITEM_WORDS, "item"
    )
    cats = [None if e.get("category") in (None, "") else str(e["category"]) for e in events]
    categories = _identity(cats, cfg.category_identity, cfg, CATEGORY_WORDS, "category")
    seen: set[str] = set()
    segments = []
    previous_time = ""
    for i, event in enumerate(events):
        words = [TYPE_WORDS.get(str(event["event_type"]), "event")]
        if cfg.time_ref == "now":
            when = time_word(max(0.0, (now_ms - event["ts"]) / 1000.0))
        else:  # causal-safe: nothing here depends on later events
            when = (
                time_word(max(0.0, (event["ts"] - events[i - 1]["ts"]) / 1000.0)) if i else "first"
            )
        if cfg.time_mode == "every" or when != previous_time:
            words.append(when)
        previous_time = when
        words += [w for w in (items[i], categories[i]) if w]
        item = str(event["item_id"])
        if cfg.repeat_marker and item in seen:
            words.append("again")
        seen.add(item)
        price = event.get("price")
        if cfg.price and isinstance(price, int | float):
            words.append(price_word(float(price)))
        segments.append(" ".join(words) + cfg.separator)
    return segments


def render_summary(window: Window, cfg: EncodingConfig) -> str:
    """A fixed-size header over the last `cfg.window` events, so truncated history still counts.

    >>> render_summary([{"event_type": "purchase", "ts": 0, "item_id": "1"},
    ...                 {"event_type": "view", "ts": 60_000, "item_id": "2"}], EncodingConfig())
    'bought 1 basket 0 viewed 1 items 2 categories 1 last minutes'
    """
    events = list(window)[-cfg.window :]
    if not events:
        return ""
    count = lambda kind: min(50, sum(e["event_type"] == kind for e in events))  # noqa: E731
    buys = [e["ts"] for e in events if e["event_type"] == "purchase"]
    last = time_word((events[-1]["ts"] - buys[-1]) / 1000.0) if buys else "never"
    items = min(50, len({e["item_id"] for e in events}))
    categories = min(50, len({e.get("category") for e in events}))
    return (
        f"bought {count('purchase')} basket {count('cart')} viewed {count('view')} "
        f"items {items} categories {categories} last {last}"
    )


@dataclass(frozen=True)
class Encoded:
    """Token ids with [CLS]/[SEP]; per token, the index of its event in the window (-1: special
    or summary header)."""

    input_ids: list[int]
    event_index: list[int]
    n_events: int  # events kept after truncation
    features: tuple[float, ...] | None = None  # fused models: normalised aggregates (fusion.py)
    ngrams: tuple[int, ...] | None = None  # fused models: hashed n-gram ids of the same text


def encode_window(
    window: Window,
    cfg: EncodingConfig,
    tokenize: Callable[[str], Sequence[int]],
    cls_id: int,
    sep_id: int,
) -> Encoded:
    """Render and tokenize a window, dropping whole events from the OLDEST side to fit max_len."""
    segments = render(window, cfg)
    offset = max(0, len(window) - cfg.window)  # indices refer to the caller's window
    header = tokenize(render_summary(window, cfg)) if cfg.summary and segments else ()
    budget = cfg.max_len - 2 - len(header)
    kept: list[tuple[int, Sequence[int]]] = []
    for i in range(len(segments) - 1, -1, -1):
        ids = tokenize(segments[i])
        if len(ids) > budget:
            break
        budget -= len(ids)
        kept.append((i + offset, ids))
    kept.reverse()
    input_ids, event_index = [cls_id, *header], [-1] * (1 + len(header))
    for index, ids in kept:
        input_ids += ids
        event_index += [index] * len(ids)
    input_ids.append(sep_id)
    event_index.append(-1)
    return Encoded(input_ids, event_index, len(kept))


def bucket_for(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds `length` tokens (the largest if none does)."""
    for bucket in buckets:
        if length <= bucket:
            return bucket
    return buckets[-1]


class Encoder:
    """Tokenizer-backed encoder with a segment cache (segments repeat a lot). Thread-safe."""

    def __init__(self, tokenizer: Any, cfg: EncodingConfig) -> None:
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.cls_id: int = tokenizer.cls_token_id
        self.sep_id: int = tokenizer.sep_token_id
        self.pad_id: int = tokenizer.pad_token_id
        self._cache: dict[str, tuple[int, ...]] = {}
        self._lock = threading.Lock()

    def tokenize(self, text: str) -> tuple[int, ...]:
        ids = self._cache.get(text)
        if ids is None:
            ids = tuple(self.tokenizer.encode(text, add_special_tokens=False))
            with self._lock:
                if len(self._cache) > 200_000:
                    self._cache.clear()
                self._cache[text] = ids
        return ids

    def encode(self, window: Window) -> Encoded:
        return encode_window(window, self.cfg, self.tokenize, self.cls_id, self.sep_id)

    def pad(
        self, batch: Sequence[Encoded], length: int | None = None
    ) -> tuple[list[list[int]], list[list[int]]]:
        """Right-pad to `length` (default: longest row's bucket): (ids, mask)."""
        longest = max(len(e.input_ids) for e in batch)
        length = length or bucket_for(longest, self.cfg.length_buckets())
        ids = [e.input_ids + [self.pad_id] * (length - len(e.input_ids)) for e in batch]
        mask = [[1] * len(e.input_ids) + [0] * (length - len(e.input_ids)) for e in batch]
        return ids, mask


def load_tokenizer(path: Path) -> Any:
    """The bundle's (or base model's) HF tokenizer from a local directory, never the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Lazy: transformers takes seconds to import; rendering and bucketing above do not need it.
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SUMMARY_WORDS = ("bought", "basket", "viewed", "items", "categories", "last", "never")


def probe_texts(cfg: EncodingConfig) -> list[str]:
    """Texts holding every word rendering can emit, alone and in runs (tokenizer parity checks)."""
    words = [
        *TYPE_WORDS.values(),
        *("event", "first", "again", "item", "category", OLDEST_WORD, TOP_PRICE_WORD),
        *(word for _, word in TIME_BUCKETS),
        *(word for _, word in PRICE_BUCKETS),
        *ITEM_WORDS,
        *SUMMARY_WORDS,
        *(str(n) for n in range(100 + cfg.hash_buckets)),  # counts, categories, hash words
    ]
    alone = [word + cfg.separator for word in words]
    runs = [" ".join(words[i : i + 7]) + cfg.separator for i in range(0, len(words), 3)]
    return alone + runs


class ServingTokenizer:
    """A bundle's tokenizer.json run by `tokenizers` alone: the ids of the HF fast tokenizer.

    Serving needs only `encode` and three special ids; `transformers` takes seconds to import,
    which every worker start (and every recovery) would pay. Export checks the two agree.
    """

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        config = json.loads((path / TOKENIZER_CONFIG).read_text())
        self._tokenizer = Tokenizer.from_file(str(path / TOKENIZER_JSON))
        # transformers turns both off per call unless asked; the file may carry either.
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self.cls_token_id = self._special_id(config, "cls_token", "[CLS]")
        self.sep_token_id = self._special_id(config, "sep_token", "[SEP]")
        self.pad_token_id = self._special_id(config, "pad_token", "[PAD]")

    def _special_id(self, config: Mapping[str, Any], name: str, default: str) -> int:
        token = config.get(name) or default
        content = token.get("content", default) if isinstance(token, Mapping) else str(token)
        token_id = self._tokenizer.token_to_id(content)
        if token_id is None:
            raise ValueError(f"tokenizer has no {name} {content!r}")
        return int(token_id)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)

    def get_vocab(self) -> dict[str, int]:
        return dict(self._tokenizer.get_vocab(with_added_tokens=True))


def load_serving_tokenizer(path: Path) -> Any:
    """The tokenizer the runtime uses: tokenizer.json via `tokenizers` when the bundle has one."""
    if (path / TOKENIZER_JSON).is_file() and (path / TOKENIZER_CONFIG).is_file():
        return ServingTokenizer(path)
    return load_tokenizer(path)  # a slow (vocab.txt only) tokenizer: transformers it is
