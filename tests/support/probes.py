"""What the held-load and memory-attack tests (tests/reliability/test_reliability_held.py,
test_reliability_memory.py and test_reliability_memory_streams.py) measure on a server child:
its RSS and open sockets from /proc, and a PING probe beside the load.

Rules:
1. The probe's PINGs go out from a process of their own (PING_PROBE), so the load this process
   makes (it holds the GIL while it parses and sends) does not show up as the server's
   latency; the RSS sampler is a thread here, reading /proc/PID/status every
   `sample_interval_s`.
2. `stop` returns the p99 and the maximum of the PING round trips; a probe that got no answer
   at all fails there, not as a zero latency.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

sample_interval_s = 0.005
stop_timeout_s = 60


def command(*words: bytes) -> bytes:
    """One RESP array of bulk strings."""
    return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def open_sockets_count(pid: int) -> int:
    """The sockets `pid` holds open (its listening socket and its connections, with the
    files it opens when it likes left out)."""
    count = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:")
        except FileNotFoundError:
            pass  # closed since the listing
    return count


# Pings every 5 ms until its stdin closes, then prints the round trips in seconds.
PING_PROBE = """
import json, select, socket, sys, time
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=60)
latencies = []
while not select.select([sys.stdin], [], [], 0)[0]:
    started = time.perf_counter()
    sock.sendall(b"*1\\r\\n$4\\r\\nPING\\r\\n")
    assert sock.recv(64) == b"+PONG\\r\\n"
    latencies.append(time.perf_counter() - started)
    time.sleep(0.005)
print(json.dumps(latencies))
"""


class PingProbe:
    """Samples the server's peak RSS (a thread) and times PINGs on a connection of its own
    (a child process), from construction until `stop`."""

    def __init__(self, pid: int, port: int) -> None:
        self.pid = pid
        self.peak_bytes = rss_bytes(pid)
        self.pings_s: list[float] = []
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample)
        self._sampler.start()
        self._pinger = subprocess.Popen([sys.executable, "-c", PING_PROBE, str(port)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, rss_bytes(self.pid))
            time.sleep(sample_interval_s)

    def stop(self) -> tuple[float, float]:
        """Ends the probe: (p99, max) of the PING round trips, in seconds."""
        self._stop.set()
        self._sampler.join(stop_timeout_s)
        output, _ = self._pinger.communicate(timeout=stop_timeout_s)
        assert self._pinger.returncode == 0, "the PING probe failed (no answer, or a wrong one)"
        self.pings_s = json.loads(output)
        assert self.pings_s, "the PING probe got no answer"
        ordered = sorted(self.pings_s)
        return ordered[int(0.99 * (len(ordered) - 1))], ordered[-1]
