# ruff: noqa: E501  (one table row per line reads best)
"""The CLI contract, one table: every bad input fails with one `Error: ...` line, no traceback.

Each row is a command line (with {placeholders} for files made here), the expected exit code and
a pattern the one error line must match: it names the bad argument and says what would be right.
Rows run as real `bstream` subprocesses (a traceback only shows up there), a few at a time, each
with its own timeout. Kafka rows point at a closed port, so they fail in milliseconds.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from stream.kafka.broker import free_port
from stream.launcher import worker_command
from stream.simulate import simulate_events

ROW_TIMEOUT_S = 90  # generous: the host is shared; a hang still fails the row
# The fixture runs every row (about a minute of CPU in all); room for a heavily shared host.
pytestmark = pytest.mark.timeout(1800)
PARALLEL = 4

# (command line, exit code, pattern of the one error line)
TABLE: list[tuple[str, int, str]] = [
    # top level
    ("nope", 2, r"No such command 'nope'"),
    ("worker --nope", 2, r"No such option: --nope"),
    # broker
    ("broker --host notahost", 2, r"--host: cannot resolve 'notahost'; give a host name"),
    ("broker --host ''", 2, r"--host: empty; give a host name"),
    ("broker --log /no/such/dir/b.log", 2, r"--log: directory /no/such/dir does not exist"),
    ("broker --log {dir}", 2, r"'--log'.* is a directory"),
    ("broker --port 70000", 2, r"'--port': 70000 is not in the range 1<=x<=65535"),
    ("broker --port abc", 2, r"'--port': 'abc' is not a valid integer"),
    # topics
    ("topics frob", 2, r"No such command 'frob'"),
    ("topics create --partitions 0", 2, r"'--partitions': 0 is not in the range x>=1"),
    ("topics create --timeout 0", 2, r"'--timeout': 0.0 is not in the range x>=0.1"),
    ("topics create", 1, r"cannot reach Kafka at 127\.0\.0\.1:{closed}"),
    ("topics list", 1, r"cannot reach Kafka at 127\.0\.0\.1:{closed}"),
    (
        "topics create --bootstrap nope",
        2,
        r"--bootstrap / BSTREAM_BOOTSTRAP: 'nope' is not HOST:PORT",
    ),
    ("topics create --bootstrap host:99999", 2, r"--bootstrap .*is not HOST:PORT"),
    ("topics create @env BSTREAM_PARTITIONS=zero", 1, r"bad setting partitions: Input should be"),
    # replay
    ("replay", 2, r"Missing argument 'PATH'"),
    ("replay /no/such.jsonl", 1, r"no such file: /no/such\.jsonl"),
    ("replay {dir}", 2, r"'PATH'.* is a directory"),
    ("replay {empty}", 1, r"nothing to replay: .* is empty"),
    (
        "replay {taobao}",
        2,
        r"--format: none of the first \d+ rows .* valid jsonl .*looks like taobao: pass --format taobao",
    ),
    ("replay {taobao} --format jsonl", 2, r"looks like taobao: pass --format taobao"),
    ("replay {jsonl} --format taobao", 2, r"looks like jsonl: pass --format jsonl"),
    ("replay {jsonl} --format rees46", 2, r"looks like jsonl: pass --format jsonl"),
    ("replay {rees46} --format taobao", 2, r"looks like rees46: pass --format rees46"),
    (
        "replay {jsonl} --format xml",
        2,
        r"'--format': 'xml' is not one of 'jsonl', 'taobao', 'rees46'",
    ),
    ("replay {jsonl} --rate -5", 2, r"'--rate': -5.0 is not in the range x>0"),
    ("replay {jsonl} --rate fast", 2, r"'--rate': 'fast' is not a valid float"),
    ("replay {jsonl} --rate 5 --speedup 2", 2, r"give either --rate or --speedup, not both"),
    ("replay {jsonl} --limit 0", 2, r"'--limit': 0 is not in the range x>=1"),
    ("replay {jsonl} --partitioner crc", 2, r"'--partitioner': 'crc' is not one of"),
    ("replay {jsonl}", 1, r"cannot reach Kafka at 127\.0\.0\.1:{closed}"),
    # simulate
    ("simulate --out {tmp}/s.jsonl", 2, r"Missing option '--users'"),
    ("simulate --users 5", 2, r"Missing option '--out'"),
    ("simulate --users 0 --out {tmp}/s.jsonl", 2, r"'--users': 0 is not in the range x>=1"),
    ("simulate --users many --out {tmp}/s.jsonl", 2, r"'--users': 'many' is not a valid integer"),
    ("simulate --users 5 --seed x --out {tmp}/s.jsonl", 2, r"'--seed': 'x' is not a valid integer"),
    ("simulate --users 5 --out {dir}", 2, r"'--out'.* is a directory"),
    ("simulate --users 5 --out {file}/s.jsonl", 2, r"--out: cannot write .*: .* is a file"),
    # tail
    ("tail", 1, r"cannot reach Kafka at 127\.0\.0\.1:{closed}"),
    ("tail --limit 0", 2, r"'--limit': 0 is not in the range x>=1"),
    ("tail --limit x", 2, r"'--limit': 'x' is not a valid integer"),
    ("tail --timeout -1", 2, r"'--timeout': -1.0 is not in the range x>0"),
    # worker
    (
        "worker",
        1,
        r"no HMAC key: set BSTREAM_HMAC_KEY or BSTREAM_HMAC_KEY_FILE \(or pass --allow-raw-ids\)",
    ),
    ("worker --hmac-key-file /no/such.key", 1, r"cannot read HMAC key file /no/such\.key"),
    ("worker --allow-raw-ids", 2, r"no model bundle: pass --model DIR or set BSTREAM_MODEL"),
    (
        "worker --allow-raw-ids --model /no/such",
        2,
        r"--model: /no/such is not a directory; give a model bundle",
    ),
    (
        "worker --allow-raw-ids --model {dir}",
        2,
        r"--model: .* is not a model bundle \(no bundle\.json\)",
    ),
    (
        "worker --allow-raw-ids --model {bundle} --store bogus://",
        2,
        r"--store / BSTREAM_STORE: 'bogus://' is not a table store; give memory:// or rocksdb://",
    ),
    (
        "worker --allow-raw-ids --model {bundle}",
        1,
        r"cannot reach Kafka at 127\.0\.0\.1:{closed}.*--bootstrap",
    ),
    (
        "worker --allow-raw-ids --model {bundle} --bootstrap nope",
        2,
        r"--bootstrap / BSTREAM_BOOTSTRAP: 'nope' is not HOST:PORT",
    ),
    ("worker --max-batch 0", 2, r"'--max-batch': 0 is not in the range x>=1"),
    ("worker --max-delay-ms soon", 2, r"'--max-delay-ms': 'soon' is not a valid integer"),
    ("worker --metrics-port 70000", 2, r"'--metrics-port': 70000 is not in the range 0<=x<=65535"),
    ("worker --device tpu", 2, r"'--device': 'tpu' is not one of 'auto', 'cpu', 'cuda'"),
    ("worker --explain some", 2, r"'--explain': 'some' is not one of"),
    # demo
    ("demo --users 0", 2, r"'--users': 0 is not in the range x>=1"),
    ("demo --rate 0", 2, r"'--rate': 0.0 is not in the range x>=1"),
    ("demo --timeout 5", 2, r"'--timeout': 5.0 is not in the range x>=10"),
    ("demo --workdir {file}", 2, r"'--workdir'.* is a file"),
    ("demo --workdir {file}/sub", 2, r"--workdir: cannot write .*: .* is a file"),
    (
        "demo --workdir {tmp}/w --metrics-port {busy}",
        2,
        r"--metrics-port: port {busy} is not free .*pick another, or 0",
    ),
    ("demo --workdir {tmp}/w --broker-port {busy}", 2, r"--broker-port: port {busy} is not free"),
    # erase
    ("erase", 2, r"Missing argument 'USER_ID'"),
    ("erase ' '", 2, r"USER_ID must not be empty"),
    ("erase u1", 1, r"cannot reach Kafka at 127\.0\.0\.1:{closed}"),
    ("erase u1 --timeout 0", 2, r"'--timeout': 0.0 is not in the range x>0"),
    # bench
    ("bench --data /no/such.csv", 1, r"no such file: /no/such\.csv"),
    ("bench --bundle {dir}", 1, r"not a model bundle \(no bundle\.json\)"),
    ("bench --load-fraction 2", 2, r"'--load-fraction': 2.0 is not in the range 0<x<=1"),
    ("bench --format xml", 2, r"'--format': 'xml' is not one of"),
    ("bench --events 5", 2, r"'--events': 5 is not in the range x>=10"),
    ("bench --json {dir}", 2, r"'--json'.* is a directory"),
    # train
    ("train --out {tmp}/b", 2, r"Missing option '--data'"),
    ("train --data {jsonl}", 2, r"Missing option '--out'"),
    (
        "train --data /no/such.jsonl --out {tmp}/b",
        2,
        r"'--data': File '/no/such\.jsonl' does not exist",
    ),
    (
        "train --data {jsonl} --out {file}",
        2,
        r"--out: .* is an existing file; give a directory path",
    ),
    ("train --data {jsonl} --out {file}/sub", 2, r"--out: cannot write .*: .* is a file"),
    (
        "train --data {jsonl} --out {tmp}/b --labels bogus",
        2,
        r"--labels: unknown 'bogus'; give a comma-separated subset of purchase, cart, fav, click",
    ),
    (
        "train --data {jsonl} --out {tmp}/b --labels ''",
        2,
        r"--labels: empty; give a comma-separated subset",
    ),
    (
        "train --data {jsonl} --out {tmp}/b --max-minutes -1",
        2,
        r"'--max-minutes': -1.0 is not in the range x>0",
    ),
    ("train --data {jsonl} --out {tmp}/b --lr -1", 2, r"'--lr': -1.0 is not in the range x>0"),
    ("train --data {jsonl} --out {tmp}/b --init random", 2, r"'--init': 'random' is not one of"),
    (
        "train --data {jsonl} --out {tmp}/b --patience -1",
        2,
        r"'--patience': -1 is not in the range",
    ),
    (
        "train --data {jsonl} --out {tmp}/b --threads 0",
        2,
        r"'--threads': 0 is not in the range x>=1",
    ),
    ("train --data {jsonl} --out {tmp}/b --lr fast", 2, r"'--lr': 'fast' is not a valid float"),
    (
        "train --data {jsonl} --out {tmp}/b --recent-frac 0",
        2,
        r"'--recent-frac': 0.0 is not in the range 0<x<=1",
    ),
    ("eval --bundle {bundle} --data {jsonl} --split train", 2, r"'--split': 'train' is not one of"),
    (
        "train --data {jsonl} --out {tmp}/b --batch-size 0",
        2,
        r"'--batch-size': 0 is not in the range x>=1",
    ),
    (
        "train --data {jsonl} --out {tmp}/b --epochs 0",
        2,
        r"'--epochs': 0.0 is not in the range x>0",
    ),
    (
        "train --data {jsonl} --out {tmp}/b --layers -1",
        2,
        r"'--layers': -1 is not in the range x>=0",
    ),
    (
        "train --data {jsonl} --out {tmp}/b --max-len 2",
        2,
        r"'--max-len': 2 is not in the range x>=8",
    ),
    (
        "train --data {jsonl} --out {tmp}/b --horizon-min 0",
        2,
        r"'--horizon-min': 0.0 is not in the range x>0",
    ),
    (
        "train --data {jsonl} --out {tmp}/b --dp-epsilon -1",
        2,
        r"'--dp-epsilon': -1.0 is not in the range x>0",
    ),
    (
        "train --data {jsonl} --out {tmp}/b --dp-delta 2",
        2,
        r"'--dp-delta': 2.0 is not in the range 0<x<1",
    ),
    (
        "train --data {jsonl} --out {tmp}/b --base /no/such",
        2,
        r"'--base': Directory '/no/such' does not exist",
    ),
    (
        "train --data {taobao} --out {tmp}/b",
        2,
        r"--format: .* valid jsonl event; it looks like taobao: pass --format taobao",
    ),
    (
        "train --data {jsonl} --format rees46 --out {tmp}/b",
        2,
        r"--format: .* valid rees46 event; it looks like jsonl: pass --format jsonl",
    ),
    (
        "train --data {text} --out {tmp}/b",
        2,
        r"--format: .* valid jsonl event; no format \(jsonl, taobao, rees46\) reads it",
    ),
    # eval
    (
        "eval --bundle {bundle} --data {jsonl} --bootstrap -5",
        2,
        r"--bootstrap: renamed: use --resamples N",
    ),
    (
        "eval --bundle {bundle} --data {jsonl} --resamples 0",
        2,
        r"'--resamples': 0 is not in the range x>=1",
    ),
    (
        "eval --bundle {bundle} --data {jsonl} --resamples -5",
        2,
        r"'--resamples': -5 is not in the range x>=1",
    ),
    ("eval --data {jsonl}", 2, r"no model bundle: pass --bundle DIR or set BSTREAM_MODEL"),
    ("eval --bundle /no/such --data {jsonl}", 2, r"--bundle: /no/such is not a directory"),
    ("eval --bundle {bundle}", 2, r"Missing option '--data'"),
    ("eval --bundle {bundle} --data {taobao}", 2, r"looks like taobao: pass --format taobao"),
    (
        "eval --bundle {bundle} --data {jsonl} --json {dir}",
        2,
        r"--json: .* is a directory; give a file path",
    ),
    (
        "eval --bundle {bundle} --data {jsonl} --max-test 0",
        2,
        r"'--max-test': 0 is not in the range x>=1",
    ),
    # export
    (
        "export --bundle {bundle} --checkpoint {text}",
        2,
        r"--checkpoint: .* is not a PyTorch checkpoint",
    ),
    (
        "export --bundle {bundle} --checkpoint /no/such.pt",
        2,
        r"'--checkpoint': File '/no/such\.pt' does not exist",
    ),
    ("export --bundle {dir}", 2, r"--bundle: .* is not a model bundle"),
    ("export", 2, r"no model bundle: pass --bundle DIR"),
    # bench-model
    (
        "bench-model --bundle {bundle} --batch-sizes -1",
        2,
        r"--batch-sizes: -1 is below 1; give integers >= 1 like 1,8,32",
    ),
    ("bench-model --bundle {bundle} --batch-sizes 1,x", 2, r"--batch-sizes: 'x' is not an integer"),
    ("bench-model --bundle {bundle} --batch-sizes ''", 2, r"--batch-sizes: '' is not an integer"),
    ("bench-model --bundle {bundle} --seconds 0", 2, r"'--seconds': 0.0 is not in the range x>0"),
    ("bench-model --bundle {bundle} --device tpu", 2, r"'--device': 'tpu' is not one of"),
    ("bench-model --bundle {bundle} --lengths 1", 2, r"--lengths: 1 is below 3"),
    ("bench-model --bundle {bundle} --json {dir}", 2, r"--json: .* is a directory"),
    (
        "bench-model --bundle {bundle} --data {taobao}",
        2,
        r"looks like taobao: pass --format taobao",
    ),
    # explain
    ("explain --bundle {bundle}", 2, r"Missing option '--events'"),
    (
        "explain --bundle {bundle} --events /no/such.jsonl",
        2,
        r"'--events': File '/no/such\.jsonl' does not exist",
    ),
    ("explain --bundle {bundle} --events {taobao}", 2, r"looks like taobao: pass --format taobao"),
    (
        "explain --bundle {bundle} --events {jsonl} --top-k 0",
        2,
        r"'--top-k': 0 is not in the range x>=1",
    ),
    ("explain --events {jsonl}", 2, r"no model bundle: pass --bundle DIR"),
    # ensemble
    ("ensemble --out {tmp}/e", 2, r"Missing option '--bundles'"),
    ("ensemble --bundles /no/such --out {tmp}/e", 2, r"--bundles: /no/such is not a directory"),
    ("ensemble --bundles {bundle} --out {file}", 2, r"--out: .* is an existing file"),
    (
        "ensemble --bundles {bundle} --out {tmp}/e --max-val 0",
        2,
        r"'--max-val': 0 is not in the range x>=1",
    ),
    ("ensemble --bundles {bundle} --out {tmp}/e --data {taobao}", 2, r"looks like taobao"),
    # monitor
    ("monitor", 1, r"cannot reach Kafka at 127\.0\.0\.1:{closed}"),
    ("monitor --window 5", 2, r"'--window': 5 is not in the range x>=10"),
    # drift-reference
    ("drift-reference", 2, r"Missing option '--bundle'"),
    (
        "drift-reference --bundle /no/such --data /no/such",
        2,
        r"'--bundle': Directory '/no/such' does not exist",
    ),
    # promote
    ("promote", 2, r"give exactly one of BUNDLE \(a path or file:// URL\) and --rollback"),
    ("promote /no/such", 2, r"BUNDLE: /no/such is not a directory; give a model bundle directory"),
    ("promote {bundle} --share 2", 2, r"'--share': 2\.0 is not in the range 0<=x<=1"),
    # models
    ("models", 1, r"cannot reach Kafka at 127\.0\.0\.1:{closed}"),
    # retrain
    ("retrain --budget-min 0", 2, r"'--budget-min': 0\.0 is not in the range x>=0\.05"),
    ("retrain --events-file /no/such", 2, r"'--events-file': File '/no/such' does not exist"),
]


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str
    seconds: float


def _parse(line: str) -> tuple[list[str], dict[str, str]]:
    """'cmd args @env K=V' -> (argv, env); shell-style quotes in args."""
    import shlex

    command, _, env = line.partition(" @env ")
    extra = dict(pair.split("=", 1) for pair in env.split()) if env else {}
    return shlex.split(command), extra


def _files(root: Path, bundle: Path, closed: int, busy: int) -> dict[str, str]:
    jsonl = root / "events.jsonl"
    jsonl.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in simulate_events(3, 0)[:40]))
    taobao = root / "taobao.csv"
    taobao.write_text(
        "".join(f"{100 + i},2244074,1575622,pv,{1511658000 + i}\n" for i in range(10))
    )
    rees46 = root / "rees46.csv"
    rees46.write_text(
        "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,"
        "user_session\n"
        + "".join(
            f"2019-10-01 00:00:0{i} UTC,view,44600062,2103807459595387724,,shiseido,35.79,"
            f"54131214{i},72d76fde-8bb3-4e00-8c23-a032dfed738c\n"
            for i in range(5)
        )
    )
    text = root / "notes.txt"
    text.write_text("this is not an event file\nnor a checkpoint\n")
    empty = root / "empty.jsonl"
    empty.write_bytes(b"")
    (root / "a-dir").mkdir()
    return {
        "tmp": str(root),
        "jsonl": str(jsonl),
        "taobao": str(taobao),
        "rees46": str(rees46),
        "text": str(text),
        "file": str(text),
        "empty": str(empty),
        "dir": str(root / "a-dir"),
        "bundle": str(bundle),
        "closed": str(closed),
        "busy": str(busy),
    }


def _run(argv: list[str], env: dict[str, str]) -> Outcome:
    started = time.monotonic()
    try:
        done = subprocess.run(
            [*worker_command(), *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=ROW_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        return Outcome(-1, str(exc.stdout or ""), f"hung for {ROW_TIMEOUT_S}s", ROW_TIMEOUT_S)
    return Outcome(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


@pytest.fixture(scope="module")
def outcomes(
    tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path
) -> Iterator[tuple[dict[str, str], dict[str, Outcome]]]:
    """Every row run once, PARALLEL at a time, against files made here and a closed port."""
    root = tmp_path_factory.mktemp("bad-inputs")
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        files = _files(root, tiny_bundle, free_port(), holder.getsockname()[1])
        env = {k: v for k, v in os.environ.items() if not k.startswith("BSTREAM_")}
        env.update(HF_HUB_OFFLINE="1", BSTREAM_BOOTSTRAP=f"127.0.0.1:{files['closed']}")

        def one(line: str) -> Outcome:
            argv, extra = _parse(line.format(**files))
            return _run(argv, {**env, **extra})

        with ThreadPoolExecutor(PARALLEL) as pool:
            results = dict(zip(TABLE, pool.map(one, [row[0] for row in TABLE]), strict=True))
        yield files, {row[0]: outcome for row, outcome in results.items()}


def test_the_table_covers_every_subcommand() -> None:
    from stream.cli import COMMANDS

    covered = {line.split()[0] for line, _, _ in TABLE}
    assert set(COMMANDS) <= covered
    assert len(TABLE) >= 60


@pytest.mark.parametrize(("line", "code", "pattern"), TABLE, ids=[row[0] for row in TABLE])
def test_bad_input_fails_with_one_error_line(
    outcomes: tuple[dict[str, str], dict[str, Outcome]], line: str, code: int, pattern: str
) -> None:
    files, results = outcomes
    outcome = results[line]
    shown = (
        f"exit {outcome.code}\nstdout: {outcome.stdout[-800:]}\nstderr: {outcome.stderr[-1500:]}"
    )

    assert outcome.code == code, shown
    assert "Traceback" not in outcome.stdout + outcome.stderr, shown
    lines = [text for text in outcome.stderr.splitlines() if text.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), shown
    assert re.search(pattern.format(**{k: re.escape(v) for k, v in files.items()}), lines[0]), shown


def test_slowest_rows(outcomes: tuple[dict[str, str], dict[str, Outcome]]) -> None:
    """Reports (never asserts) the slowest rows: argument errors should take well under 1.5 s."""
    _, results = outcomes
    slowest = sorted(results.items(), key=lambda item: item[1].seconds, reverse=True)[:5]
    for line, outcome in slowest:
        print(f"{outcome.seconds:6.2f} s  bstream {line}")
    assert all(outcome.seconds < ROW_TIMEOUT_S for outcome in results.values())
