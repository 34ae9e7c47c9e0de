"""Protocol fuzzing of the RESP codec: atheris (libFuzzer, coverage-guided) over
tests/fuzz_resp.py, with hangs over 1 s and memory over 1 GiB counted as crashes.

Goal: bad input never brings the service down. tests/fuzz_resp.py feeds any bytes, in pieces
of any size, to RespReader (with and without AUTH required) and RespParser; they may only
return commands or replies, say NEED_MORE or raise RemoteProtocolError, and their buffer never
exceeds its limit. tests/test_resp.py holds the hypothesis strategies, the comparison with
hiredis on valid input and the every-offset splits.

Method: libFuzzer runs in a child process (atheris needs a process of its own) with -timeout=1
(an input running over 1 s is a failure), -rss_limit_mb=1024 and a fixed seed, until its run
count or time budget ends; it exits non-zero on any crash, hang or memory overrun. The figure is
the number of inputs and the rate. The pure-Python codec under coverage instrumentation runs
about 3,000 inputs/s here (about 11,000/s without instrumentation), so CI runs what fits in
its budget and says so; FASTERLOG_LONG=1 asks for 100,000,000 inputs (about 9 hours).
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

from tests.reliability import LONG, record, scaled

harness = pathlib.Path(__file__).with_name("fuzz_resp.py")
root = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.timeout(120 if not LONG else 48 * 3600)
def test_atheris_fuzzing_of_the_resp_codec_finds_no_crash_hang_or_memory_overrun(
    tmp_path: pathlib.Path,
) -> None:
    pytest.importorskip("atheris")
    if os.environ.get("FASTERLOG_IO_BACKEND") == "plain" and not LONG:
        pytest.skip("the codec does not touch the log; the io_uring pass of CI fuzzes it")
    runs = scaled(1_000_000, 100_000_000)
    budget_s = scaled(15, 40 * 3600, "FASTERLOG_FUZZ_SECONDS")
    environment = dict(os.environ, PYTHONPATH=f"{root}{os.pathsep}"
                       f"{os.environ.get('PYTHONPATH', '')}")
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
           "FASTERLOG_LONG=1 python3 -m pytest -s tests/test_reliability_fuzz.py")
