"""Protocol fuzzing of the RESP codec: atheris (libFuzzer, coverage-guided) over
tests/support/children/fuzz_resp.py, with hangs over 1 s and memory over 1 GiB counted as crashes.

Goal: bad input never brings the service down. tests/support/children/fuzz_resp.py feeds any bytes,
in pieces of any size, to RespReader (with and without AUTH required) and RespParser; they may only
return commands or replies, say NEED_MORE or raise RemoteProtocolError, and their buffer never
exceeds its limit. tests/fasterlog_server/test_resp.py holds the hypothesis strategies, the
comparison with hiredis on valid input and the every-offset splits.

Method: libFuzzer runs in a child process (atheris needs a process of its own) with -timeout=1
(an input running over 1 s is a failure), -rss_limit_mb=1024 and a fixed seed, until its run
count or time budget ends; it exits non-zero on any crash, hang or memory overrun. The figure is
the number of inputs and the rate. The pure-Python codec under coverage instrumentation runs
about 3,000 inputs/s here (about 11,000/s without instrumentation), so CI runs what fits in
its budget and says so; --long asks for 100,000,000 inputs (about 9 hours).

The count in CI comes from a second fuzzer without coverage feedback: seeded mutations (bit flips,
byte changes, deletions, insertions of interesting numbers and delimiters, splices and duplications)
of a corpus of valid RESP2/RESP3 frames, 1,000,000 inputs through the same property
(tests/support/resp_fuzz_check.py) at about 25,000 inputs/s, each timed against the 1 s hang bound.
Together: coverage guidance finds new paths, the mutation count covers volume.
"""

from __future__ import annotations

import os
import pathlib
import random
import re
import resource
import subprocess
import sys
import time

import pytest

from tests.support import children
from tests.support.figures import record
from tests.support.mode import LONG, scaled
from tests.support.processes import child_env
from tests.support.resp_fuzz_check import one_input

# By path, not imported: importing the harness imports atheris and instruments the codec.
harness = pathlib.Path(children.__file__).with_name("fuzz_resp.py")


@pytest.mark.timeout(120 if not LONG else 48 * 3600)
def test_atheris_fuzzing_of_the_resp_codec_finds_no_crash_hang_or_memory_overrun(
    tmp_path: pathlib.Path,
) -> None:
    pytest.importorskip("atheris")
    if os.environ.get("FASTERLOG_IO_BACKEND") == "plain" and not LONG:
        pytest.skip("the codec does not touch the log; the io_uring pass of CI fuzzes it")
    runs = scaled(1_000_000, 100_000_000)
    budget_s = scaled(15, 40 * 3600, "FASTERLOG_FUZZ_SECONDS")
    environment = child_env()
    child = subprocess.run(
        [sys.executable, str(harness), f"-runs={runs}", f"-max_total_time={budget_s}",
         "-timeout=1", "-rss_limit_mb=1024", "-seed=1", "-print_final_stats=1",
         f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, cwd=tmp_path, env=environment,
        timeout=budget_s + 60, check=False,
    )
    output = child.stderr + child.stdout
    done = re.search(r"Done (\d+) runs in (\d+) second", output)
    assert child.returncode == 0 and done, (
        f"the fuzzer failed (exit {child.returncode}): {output[-3000:]}"
    )
    inputs, seconds = int(done.group(1)), max(int(done.group(2)), 1)
    peak = re.search(r"stat::peak_rss_mb:\s*(\d+)", output)
    peak_mb = int(peak.group(1)) if peak else -1
    record("fuzz_resp",
           f"{inputs} inputs in {seconds} s ({inputs // seconds}/s, coverage-guided): crashes "
           f"0, hangs over 1 s 0, peak RSS {peak_mb} MB (limit 1024)"
           + ("" if inputs >= runs else f"; {runs} asked, the time budget ended first"),
           {"inputs": inputs, "seconds": seconds, "rate_per_s": inputs // seconds,
            "crashes": 0, "hangs": 0, "peak_rss_mb": peak_mb},
           "python3 -m pytest -s tests/reliability/test_reliability_fuzz.py")


# Valid frames the mutations start from: commands (multibulk and inline, pipelined) and every
# RESP3 reply type, so both the server's reader and the client-side parser see near-valid input.
CORPUS = [
    b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n",
    b"*5\r\n$4\r\nXADD\r\n$1\r\ns\r\n$1\r\n*\r\n$1\r\nd\r\n$10\r\n0123456789\r\n",
    b"PING\r\n", b"SET a \"b c\" 'd'\r\n",
    b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n",
    b"+OK\r\n", b"-ERR bad\r\n", b":123\r\n", b"$-1\r\n", b"*-1\r\n", b"_\r\n", b",1.5\r\n",
    b"#t\r\n", b"(12345678901234567890\r\n", b"=8\r\ntxt:abcd\r\n", b"%1\r\n+a\r\n:1\r\n",
    b"~2\r\n+a\r\n+b\r\n", b">2\r\n+message\r\n+x\r\n", b"*2\r\n*1\r\n:1\r\n$3\r\nabc\r\n",
    b"!5\r\nerror\r\n", b"|1\r\n+k\r\n+v\r\n+OK\r\n",
]
INTERESTING = [b"-1", b"0", b"4096", b"4097", b"99999999999999999999", b"-0", b"+1",
               b"18446744073709551616", b"\r\n", b"\n", b"\r", b"*", b"$", b" ", b"\"", b"'"]


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        operation = rng.randrange(8)
        if operation == 0 and out:
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        elif operation == 1 and out:
            out[rng.randrange(len(out))] = rng.randrange(256)
        elif operation == 2:
            start = rng.randint(0, len(out))
            del out[start:rng.randint(start, len(out))]
        elif operation == 3:
            at = rng.randint(0, len(out))
            out[at:at] = rng.choice(INTERESTING)
        elif operation == 4:
            out += rng.choice(CORPUS)
        elif operation == 5:
            del out[rng.randint(0, len(out)):]
        elif operation == 6:
            at = rng.randint(0, len(out))
            out[at:at] = rng.randbytes(rng.randint(1, 8))
        else:
            start = rng.randint(0, len(out))
            end = rng.randint(start, len(out))
            out[start:start] = out[start:end]
    return bytes(out)


@pytest.mark.timeout(300 if not LONG else 24 * 3600)
def test_a_million_mutated_frames_find_no_crash_hang_or_memory_growth() -> None:
    if os.environ.get("FASTERLOG_IO_BACKEND") == "plain" and not LONG:
        pytest.skip("the codec does not touch the log; the io_uring pass of CI fuzzes it")
    inputs = scaled(1_000_000, 100_000_000, "FASTERLOG_MUTATION_INPUTS")
    rng = random.Random(1)
    slowest_s = 0.0
    # Peak RSS (ru_maxrss, KiB) before and after: every reader is bounded by a 16 KiB query
    # buffer, so a million inputs may not raise the process's high-water mark by much.
    # (tracemalloc would be exact but slows the loop fourfold.)
    rss_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    for _ in range(inputs):
        data = bytes([rng.randrange(256)]) + mutate(rng, rng.choice(CORPUS))
        before = time.perf_counter()
        try:
            one_input(data)
        except BaseException as error:
            raise AssertionError(f"input {data!r} broke the codec: {error!r}") from error
        slowest_s = max(slowest_s, time.perf_counter() - before)
    seconds = time.perf_counter() - started
    growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before_kib
    assert slowest_s < 1.0, f"an input took {slowest_s:.3f} s"
    assert growth_kib < 64 << 10, f"peak RSS grew by {growth_kib} KiB"
    record("fuzz_resp_mutations",
           f"{inputs} mutated frames in {seconds:.0f} s ({inputs / seconds:.0f}/s, seeded, no "
           f"coverage feedback): crashes 0, slowest input {slowest_s * 1000:.1f} ms (bound "
           f"1 s), peak RSS growth {growth_kib} KiB",
           {"inputs": inputs, "seconds": round(seconds, 1), "crashes": 0,
            "slowest_ms": round(slowest_s * 1000, 1), "rss_growth_kib": growth_kib},
           "python3 -m pytest -s tests/reliability/test_reliability_fuzz.py -k mutated")
