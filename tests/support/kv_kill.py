"""The kill -9 harness of the KV tests (test_kvstore, test_kv_checkpoint, test_kv_compaction).

Method: a child process (`python -m tests.support.kv_kill child MODE DIR SEED ACK`) opens the
store and writes steps forever. Step n is a pure function of (seed, n), written as one atomic
batch that also sets b"__step" to n; after the batch's commit returns, the child appends "n" to
an acknowledgement file with one os.write. Depending on MODE it also checkpoints and compacts
between steps. The parent kills the child at a random instant, reopens the store, reads
__step = r, checks that r is the last acknowledged step or the one after, and that the whole
state (every key through the index, the live count, and items()) equals the model replayed to
step r. The same directory is killed and recovered many rounds in a row, so each round also
recovers from what the kills before it left. One child per round does many operations, which
keeps the wall time per round near the random sleep.

`python -m tests.support.kv_kill point NAME DIR SEED ACK` writes steps, then compacts with a
hook that kills the process at the named step of compaction.py (see CRASH_POINTS).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvlayer import KVStore

from .processes import ROOT, child_env
from .settings import CRASH_SETTINGS

STEP_KEYS_COUNT = 60


@dataclass(frozen=True)
class Mode:
    value_size_max: int
    open_settings: dict[str, Any] = field(default_factory=dict)
    checkpoint_every_steps: int = 0
    compact_every_steps: int = 0


MODES = {
    "writes": Mode(300),
    "checkpoints": Mode(200, {"checkpoint_every_bytes": 6 << 10}, checkpoint_every_steps=7),
    "compaction": Mode(200, {"checkpoint_every_bytes": 12 << 10, "checkpoint_every_ms": 30},
                       checkpoint_every_steps=13, compact_every_steps=5),
}
# Named points of compaction.compact where `point` mode kills itself.
CRASH_POINTS = ("after-copies", "after-checkpoint", "after-truncate", "after-commit")


def step_operations(seed: int, step: int, value_size_max: int) -> list[tuple[bytes,
                                                                             bytes | None]]:
    """The batch of step `step`: a pure function of (seed, step), ending with __step."""
    rng = random.Random(seed * 1_000_003 + step)
    operations: list[tuple[bytes, bytes | None]] = []
    for _ in range(rng.randint(1, 6)):
        key = b"key-%d" % rng.randrange(STEP_KEYS_COUNT)
        if rng.random() < 0.25:
            operations.append((key, None))
        else:
            operations.append((key, b"%d:" % step + bytes(rng.randrange(value_size_max))))
    operations.append((b"__step", b"%d" % step))
    return operations


def model_at(seed: int, step: int, value_size_max: int) -> dict[bytes, bytes]:
    model: dict[bytes, bytes] = {}
    for number in range(1, step + 1):
        for key, value in step_operations(seed, number, value_size_max):
            if value is None:
                model.pop(key, None)
            else:
                model[key] = value
    return model


UNIVERSE = {b"key-%d" % i for i in range(STEP_KEYS_COUNT)} | {b"__step"}


def digest(store: KVStore, universe: set[bytes] = UNIVERSE) -> str:
    """The state as seen through the index: every known key's value, and the live count."""
    hasher = hashlib.sha256(b"%d;" % len(store))
    for key in sorted(universe):
        value = store.get(key)
        hasher.update(b"%d:%s=%s;" % (len(key), key, b"-" if value is None else b"+" + value))
    return hasher.hexdigest()


def model_digest(model: dict[bytes, bytes], universe: set[bytes] = UNIVERSE) -> str:
    hasher = hashlib.sha256(b"%d;" % len(model))
    for key in sorted(universe):
        value = model.get(key)
        hasher.update(b"%d:%s=%s;" % (len(key), key, b"-" if value is None else b"+" + value))
    return hasher.hexdigest()


def _open_child_store(path: str, mode: Mode) -> KVStore:
    return KVStore.open(path, index_buckets_count_log2=1, **mode.open_settings,
                        **CRASH_SETTINGS)


def run_child(mode_name: str, path: str, seed: int, ack_path: str) -> None:
    """The writer a kill test kills: continues from the recovered step, forever."""
    mode = MODES[mode_name]
    store = _open_child_store(path, mode)
    step = int(store.get(b"__step") or b"0")
    ack = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    rng = random.Random(seed + step)
    print("ready", flush=True)
    while True:
        step += 1
        store.write_batch(step_operations(seed, step, mode.value_size_max))
        os.write(ack, b"%d\n" % step)
        if mode.checkpoint_every_steps and step % mode.checkpoint_every_steps == 0:
            store.checkpoint()
        if mode.compact_every_steps and step % mode.compact_every_steps == 0:
            committed = store.log.committed_until_address
            # Everything, or a page start somewhere in the log (then only part is copied).
            store.compact(None if rng.random() < 0.5 else rng.randrange(committed))


def run_point_child(point: str, path: str, seed: int, ack_path: str) -> None:
    """Writes 40 steps past the recovered one, then compacts and dies at `point`."""
    from kvlayer import compaction

    mode = MODES["compaction"]
    store = _open_child_store(path, mode)
    step = int(store.get(b"__step") or b"0")
    ack = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for _ in range(40):
        step += 1
        store.write_batch(step_operations(seed, step, mode.value_size_max))
        os.write(ack, b"%d\n" % step)

    def hook(name: str) -> None:
        if name == point:
            os.kill(os.getpid(), signal.SIGKILL)

    compaction._test_hook = hook
    store.compact()
    raise SystemExit(f"compaction finished without passing point {point!r}")


def last_acknowledged(ack_path: Path) -> int:
    if not ack_path.exists():
        return 0
    lines = [line for line in ack_path.read_bytes().split(b"\n")[:-1] if line]
    return int(lines[-1]) if lines else 0


def child_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "tests.support.kv_kill", *arguments]


@dataclass
class KillReport:
    seed: int
    acknowledged_history: list[int] = field(default_factory=list)
    recovered_from_checkpoint_count: int = 0
    begin_addresses: list[int] = field(default_factory=list)


def check_recovered(path: Path, seed: int, mode: Mode, acknowledged: int, where: str,
                    report: KillReport | None = None) -> int:
    """Reopens the store; asserts the recovered step is the acknowledged one or the next and
    the state equals the model there. Returns the recovered step."""
    with KVStore.open(path, **CRASH_SETTINGS) as store:
        recovered = int(store.get(b"__step") or b"0")
        assert recovered in (acknowledged, acknowledged + 1), (
            f"{where}: recovered step {recovered}, acknowledged {acknowledged}")
        model = model_at(seed, recovered, mode.value_size_max)
        assert digest(store) == model_digest(model), where
        assert dict(store.items()) == model, where
        assert len(store) == len(model), where
        if report is not None:
            report.recovered_from_checkpoint_count += store.recovered_from is not None
            report.begin_addresses.append(store.log.begin_address)
    return recovered


def run_kill_rounds(tmp_path: Path, mode_name: str, rounds: int,
                    sleep_max_s: float = 0.3,
                    fail: Callable[[str], Any] | None = None) -> KillReport:
    """`rounds` rounds of start child, sleep a random while, kill -9, recover and check."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    mode = MODES[mode_name]
    path = tmp_path / "kv"
    ack_path = tmp_path / "ack"
    report = KillReport(seed)
    recovered = 0
    for round_number in range(rounds):
        child = subprocess.Popen(child_command("child", mode_name, str(path), str(seed),
                                               str(ack_path)),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                                 env=child_env())
        assert child.stdout is not None and child.stderr is not None
        assert child.stdout.readline() == b"ready\n", child.stderr.read()
        time.sleep(rng.uniform(0.0, sleep_max_s))
        if child.poll() is not None:
            message = (f"seed {seed} round {round_number}: the child exited: "
                       f"{child.stderr.read()!r}")
            raise AssertionError(message)
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        child.stderr.close()
        # A step recovered earlier counts as acknowledged too: the next child went on from it
        # (it may have been durable without its ack line when the previous kill landed).
        acknowledged = max(last_acknowledged(ack_path), recovered)
        report.acknowledged_history.append(acknowledged)
        recovered = check_recovered(path, seed, mode, acknowledged,
                                    f"seed {seed} round {round_number}", report)
    # The kills must land while steps are being written, not all before the first one.
    assert report.acknowledged_history[-1] > rounds, report.acknowledged_history
    return report


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "child":
    run_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
elif __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "point":
    run_point_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
