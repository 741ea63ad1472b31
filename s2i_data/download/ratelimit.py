"""The global request rate: ``--rate 2/s`` holds for all threads of a run, and across Dask workers.

Every attempt (one video page plus one media transfer) takes a slot right before its first HTTP
request (`fetch._paced`: yt-dlp's set-up before it takes a varying time, which would bunch the
requests of threads that took consecutive slots). Slots are a
schedule, not a count: ``next`` is the earliest time of the next request; taking a slot moves
``next`` on by 1/rate and sleeps until the slot's time. Bursts are not allowed, so a run never
makes more than ``rate`` requests in any second, even right after a pause.

Locally the schedule is a float under a thread lock (`Schedule`). On a Dask cluster it is the same
schedule kept by the scheduler (`DaskSchedule`): a metadata key of the scheduler holding ``next``
(unix time), changed under a ``distributed.Lock``, both named per run. Why this rather than
giving each of W workers rate/W: the rate then holds whatever the cluster does (workers joining
or leaving, one worker busy with retries while others idle), and the requests stay evenly spaced
rather than W bursts in step. The cost is three small scheduler messages per request (nothing
next to a download at the rates YouTube tolerates) and a dependency on the workers' clocks
agreeing to well under 1/rate (NTP keeps them within milliseconds).
"""

from __future__ import annotations

import re
import threading
import time

_RATE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:/\s*(s|sec|second|m|min|minute|h|hour))?\s*$", re.IGNORECASE)
_PER = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


def parse_rate(text: str) -> float:
    """Requests per second from ``2/s``, ``30/min``, ``1000/h`` or ``2``; 0 means unlimited."""
    m = _RATE.match(str(text))
    if not m:
        raise ValueError(f"--rate {text!r}: expected a number of requests per s, min or h, e.g. 2/s or 30/min")
    return float(m[1]) / _PER[(m[2] or "s").lower()]


class Schedule:
    """Evenly spaced request slots for the threads of one process."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if self.rate <= 0:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + 1.0 / self.rate
        time.sleep(max(0.0, slot - now))


class DaskSchedule:
    """The same slots shared by every worker of a Dask cluster (picklable: it holds names only)."""

    def __init__(self, rate: float, name: str) -> None:
        self.rate, self.name = rate, name

    def acquire(self) -> None:
        if self.rate <= 0:
            return
        from distributed import Lock, get_client

        client = get_client()
        key = f"{self.name}-next"
        with Lock(f"{self.name}-lock"):
            # scheduler metadata, which has a default: a distributed Variable read before it was
            # ever set waits, and the scheduler logs that wait's time-out as an error with a
            # traceback (on the user's terminal, for a LocalCluster) at every run's first request
            planned = float(client.get_metadata(key, default=0.0))
            now = time.time()
            slot = max(now, planned)
            client.set_metadata(key, slot + 1.0 / self.rate)
        time.sleep(max(0.0, slot - time.time()))
