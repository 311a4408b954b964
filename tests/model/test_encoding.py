"""Encoding: pure rendering, oldest-side truncation, token -> event map."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.encoding import (
    Encoder,
    EncodingConfig,
    bucket_for,
    encode_window,
    render,
    time_word,
)
from model.model import default_base_dir
from model.runtime import load_tokenizer

MIN = 60_000


def ev(
    event_type: str, ts: int, item: str, category: str | None = None, price: float | None = None
) -> dict[str, Any]:
    event: dict[str, Any] = {"event_type": event_type, "ts": ts, "item_id": item}
    if category is not None:
        event["category"] = category
    if price is not None:
        event["price"] = price
    return event


def word_tokenizer(text: str) -> list[int]:
    """A pure stand-in tokenizer: one id per word (stable)."""
    return [1000 + sum(map(ord, word)) for word in text.split()]


def test_render_names_items_from_the_newest_backwards() -> None:
    window = [ev("view", 0, "x", "c1"), ev("view", MIN, "y", "c2"), ev("cart", 2 * MIN, "x", "c1")]

    segments = render(window, EncodingConfig())

    assert segments == ["view minutes a 1", "view minutes b 2", "cart seconds a 1"]


def test_render_maps_types_time_price_and_repeats() -> None:
    cfg = EncodingConfig(repeat_marker=True, item_identity="none", category_identity="none")
    window = [ev("fav", 0, "1", price=5.0), ev("purchase", 3 * 3600_000, "1", price=500.0)]

    assert render(window, cfg) == ["saved hours cheap", "buy seconds again expensive"]


def test_render_hash_identity_is_stable_across_windows() -> None:
    cfg = EncodingConfig(item_identity="hash", category_identity="none")
    first = render([ev("view", 0, "42")], cfg)[0]
    second = render([ev("cart", 0, "7"), ev("view", 10, "42")], cfg)[1]

    assert first.split()[-1] == second.split()[-1]
    assert 100 <= int(first.split()[-1]) < 100 + cfg.hash_buckets


def test_time_mode_change_drops_repeated_time_words() -> None:
    cfg = EncodingConfig(time_mode="change", item_identity="none", category_identity="none")
    window = [ev("view", 0, "1"), ev("view", 1000, "1"), ev("view", 2000, "1")]

    assert render(window, cfg) == ["view seconds", "view", "view"]


@pytest.mark.parametrize(
    ("age_s", "word"),
    [(0, "seconds"), (59, "seconds"), (60, "minutes"), (7200, "hours"), (3 * 86400, "days")],
)
def test_time_word_buckets(age_s: float, word: str) -> None:
    assert time_word(age_s) == word


def test_truncation_keeps_the_newest_whole_events() -> None:
    cfg = EncodingConfig(max_len=2 + 4 * 3)  # room for exactly three 4-word events
    window = [ev("view", i * MIN, str(i), "c") for i in range(10)]

    enc = encode_window(window, cfg, word_tokenizer, cls_id=101, sep_id=102)

    assert enc.n_events == 3
    assert len(enc.input_ids) == cfg.max_len
    assert enc.event_index == [-1] + [7] * 4 + [8] * 4 + [9] * 4 + [-1]


def test_window_limit_applies_before_tokens_and_indices_refer_to_the_callers_window() -> None:
    cfg = EncodingConfig(window=2)
    window = [ev("view", i * MIN, str(i)) for i in range(5)]

    enc = encode_window(window, cfg, word_tokenizer, cls_id=101, sep_id=102)

    assert sorted(set(enc.event_index) - {-1}) == [3, 4]


events = st.lists(
    st.builds(
        ev,
        st.sampled_from(["view", "click", "cart", "fav", "purchase"]),
        st.integers(0, 10**9),
        st.sampled_from(list("abcdefghij")),
        st.one_of(st.none(), st.sampled_from(["1", "2", "3"])),
    ),
    max_size=60,
).map(lambda es: sorted(es, key=lambda e: e["ts"]))


@settings(max_examples=200, deadline=None)
@given(window=events, max_len=st.integers(4, 80))
def test_encoding_is_a_suffix_with_a_consistent_token_map(
    window: list[dict[str, Any]], max_len: int
) -> None:
    cfg = EncodingConfig(max_len=max_len)

    enc = encode_window(window, cfg, word_tokenizer, cls_id=101, sep_id=102)

    assert len(enc.input_ids) == len(enc.event_index) <= max_len
    assert enc.input_ids[0] == 101 and enc.input_ids[-1] == 102
    kept = [i for i in dict.fromkeys(enc.event_index) if i != -1]
    assert kept == list(
        range(len(window) - enc.n_events, len(window))
    )  # a contiguous newest suffix
    segments = render(window, cfg)
    for i in kept:
        tokens = [t for t, e in zip(enc.input_ids, enc.event_index, strict=True) if e == i]
        assert tokens == word_tokenizer(segments[i - (len(window) - len(segments))])


def test_real_tokenizer_costs_four_tokens_per_event() -> None:
    encoder = Encoder(load_tokenizer(default_base_dir()), EncodingConfig())
    window = [
        ev(t, i * MIN, str(i % 3), str(i % 2))
        for i, t in enumerate(["view", "click", "cart", "fav", "purchase"])
    ]

    enc = encoder.encode(window)

    assert len(enc.input_ids) == 2 + 4 * len(window)
    assert encoder.tokenizer.convert_ids_to_tokens(enc.input_ids[1:5]) == [
        "view",
        "minutes",
        "b",
        "1",
    ]


def test_pad_uses_the_smallest_bucket_that_fits() -> None:
    encoder = Encoder(
        load_tokenizer(default_base_dir()), EncodingConfig(max_len=128, buckets=(16, 32, 64))
    )
    short = encoder.encode([ev("view", 0, "1")])
    longer = encoder.encode([ev("view", i, str(i)) for i in range(7)])  # 23 tokens

    ids, mask = encoder.pad([short, longer])

    assert len(ids[0]) == len(ids[1]) == 32
    assert mask[0] == [1] * 5 + [0] * 27  # [CLS] view seconds a [SEP]
    assert bucket_for(200, (16, 32)) == 32
    assert EncodingConfig(max_len=100, buckets=(16, 32, 64, 128)).length_buckets() == (
        16,
        32,
        64,
        100,
    )


def test_config_round_trips_and_rejects_unknown_fields() -> None:
    cfg = EncodingConfig(max_len=96, item_identity="hash", buckets=(32,))

    assert EncodingConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        EncodingConfig.from_dict({"nope": 1})


def test_causal_safe_rendering_never_depends_on_later_events() -> None:
    cfg = EncodingConfig(time_ref="prev", name_order="oldest", category_identity="none")
    window = [ev("view", 0, "x"), ev("view", 30_000, "y"), ev("cart", 30 * MIN, "x")]

    segments = render(window, cfg)

    assert segments == ["view first a", "view seconds b", "cart hour a"]
    assert render(window[:2], cfg) == segments[:2]  # a prefix renders identically


def test_summary_header_is_always_kept_and_mapped_to_no_event() -> None:
    cfg = EncodingConfig(max_len=2 + 12 + 4 * 2, summary=True, category_identity="local")
    window = [ev("purchase" if i == 0 else "view", i * MIN, str(i % 4), "c") for i in range(30)]

    enc = encode_window(window, cfg, word_tokenizer, cls_id=101, sep_id=102)

    # the only purchase was 29 minutes before the newest event: "last hour"
    assert enc.input_ids[1:13] == word_tokenizer(
        "bought 1 basket 0 viewed 29 items 4 categories 1 last hour"
    )
    assert enc.event_index[:13] == [-1] * 13
    assert enc.n_events == 2 and sorted(set(enc.event_index) - {-1}) == [28, 29]
