"""Run shard work units: a local process pool, or a Dask cluster, behind one call.

The failing unit is a sample (handled inside `shards.write_shard`); the retried unit is a shard:
a shard whose worker raised or died is run again, up to ``retries`` more times, and reported as
failed after that while the other shards go on. A dead worker process breaks a
ProcessPoolExecutor as a whole, so the pool is rebuilt and the unfinished shards resubmitted.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _context():
    # Workers come from a forkserver that has imported the shard writer (and numpy) once, not
    # once per worker, and they never inherit the threads of the parent (progress bars, probe
    # pool) that plain fork would copy mid-lock. scipy and PIL are left to each worker, which
    # imports them while its first video decodes, off the path to that first decode.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["s2i_data.shards"])
    return ctx


def _ignore_sigint() -> None:
    # Ctrl-C reaches the whole process group; the parent alone decides what to stop, so that
    # no worker dies half-way through recording a result.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _ready() -> None:
    """The warm-up task: returning proves the worker has started and imported what it needs."""


class LocalExecutor:
    def __init__(self, workers: int = 0, retries: int = 2) -> None:
        self.workers = workers or default_workers()
        self.retries = retries
        self._warming: Future | None = None

    def _pool(self, n: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=n, mp_context=_context(), initializer=_ignore_sigint)

    def _warm_pool(self) -> ProcessPoolExecutor:
        pool = self._pool(self.workers)
        try:
            # A forkserver pool starts a worker per submit while none is idle: one no-op each
            # brings them all up (the server's imports first, then each worker's own).
            for fut in [pool.submit(_ready) for _ in range(self.workers)]:
                fut.result()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        return pool

    def start(self) -> None:
        """Start the worker processes in the background: the forkserver's imports and each
        worker's start (about half a second in all) then overlap the probe and the plan instead
        of following them. `run` takes the pool; `close` stops one that `run` never took."""
        if self._warming is None:
            starter = ThreadPoolExecutor(1, thread_name_prefix="s2i-pool-start")
            self._warming = starter.submit(self._warm_pool)
            starter.shutdown(wait=False)

    def _take_warm(self) -> ProcessPoolExecutor | None:
        warming, self._warming = self._warming, None
        if warming is None:
            return None
        try:
            return warming.result()
        except Exception:  # noqa: BLE001 - a pool that did not come up: run starts a fresh one
            return None

    def close(self) -> None:
        """Stop the pool `start` brought up if `run` never took it (the build stopped early)."""
        pool = self._take_warm()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def run(self, fn: Callable, tasks: Sequence, args: tuple = (),
            on_done: Callable[[Any, Any], None] | None = None) -> list[tuple[Any, str]]:
        """Run ``fn(task, *args)`` for every task; returns [(task, error)] for those that failed."""
        attempts = {id(t): 0 for t in tasks}
        pending = list(tasks)
        failures: list[tuple[Any, str]] = []
        warm = self._take_warm()
        if warm is not None and not pending:
            warm.shutdown(wait=True)
        while pending:
            pool, warm = warm or self._pool(min(self.workers, len(pending))), None
            try:
                try:
                    futures = {pool.submit(fn, t, *args): t for t in pending}
                except BrokenProcessPool:
                    # a warm worker died while it waited (the OOM killer, a kill): start afresh
                    pool.shutdown(wait=True, cancel_futures=True)
                    pool = self._pool(min(self.workers, len(pending)))
                    futures = {pool.submit(fn, t, *args): t for t in pending}
                pending = []
                broken = False
                while futures:
                    done, _ = wait(futures, return_when=FIRST_COMPLETED)
                    for fut in done:
                        task = futures.pop(fut)
                        try:
                            result = fut.result()
                        except BrokenProcessPool:
                            broken = True
                            self._retry(task, "worker process died", attempts, pending, failures)
                            continue
                        except Exception as e:  # noqa: BLE001 - any error of one shard is that shard's
                            self._retry(task, f"{type(e).__name__}: {e}", attempts, pending, failures)
                            continue
                        if on_done:
                            on_done(task, result)
                    if broken:  # the others were lost with the pool: resubmit them too
                        for fut, task in futures.items():
                            if fut.done() and not fut.exception():
                                if on_done:
                                    on_done(task, fut.result())
                            else:
                                pending.append(task)
                        futures = {}
            except BaseException:
                # Interrupted: stop at once. Shards in flight are lost (their temporary files
                # are removed by the next run); finished shards and their markers stay.
                workers = list((getattr(pool, "_processes", None) or {}).values())
                for proc in workers:
                    proc.kill()
                # Waited for: the pool's manager thread, seeing its workers dead, closes its
                # wake-up pipe; if the interpreter exits meanwhile, its atexit hook writes to
                # that pipe as it closes (a CPython race) and prints a traceback after the
                # "interrupted" line. With the workers gone, the wait is short.
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            pool.shutdown(wait=True)
        return failures

    def _retry(self, task, error, attempts, pending, failures) -> None:
        attempts[id(task)] += 1
        if attempts[id(task)] > self.retries:
            failures.append((task, error))
        else:
            pending.append(task)


@contextlib.contextmanager
def nanny_environ_kept():
    """Keep this process's environment as it was around a LocalCluster's nannies.

    Each nanny writes its workers' settings (``distributed.nanny.pre-spawn-environ``:
    MALLOC_TRIM_THRESHOLD_=65536, OMP_NUM_THREADS=1, ...) into the environment of the process it
    runs in, Dask's own docs say, "poisoning the process running the Nanny"; every later child
    of that process inherits them. A training run started afterwards from the same Python
    process ran on one thread with glibc trimming its heap at every free: about half its time in
    page faults. The workers still get them: they are spawned inside this block."""
    import dask

    keys = list(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
    before = {k: os.environ.get(k) for k in keys}
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class DaskExecutor:
    """The same work units on a Dask cluster (``distributed``): an existing one at ``scheduler``
    (tcp://host:8786 or a scheduler JSON file), else a `LocalCluster` of ``workers`` processes.

    Workers run `write_shard` themselves and write straight to the output location, so they need
    this package installed and the output reachable. A worker that dies mid-shard costs that
    shard only: the scheduler reruns it elsewhere (its ``allowed-failures``), and errors raised
    by a shard are retried here as with the local executor.
    """

    def __init__(self, scheduler: str | None = None, workers: int = 0, retries: int = 2) -> None:
        self.scheduler, self.workers, self.retries = scheduler, workers or default_workers(), retries
        self._starting: Future | None = None

    def start(self) -> None:
        """Connect, or start the LocalCluster, in the background: its seconds of start-up then
        overlap the probe and the plan instead of adding to them."""
        if self._starting is None:
            pool = ThreadPoolExecutor(1, thread_name_prefix="s2i-dask-start")
            self._starting = pool.submit(self._client)
            pool.shutdown(wait=False)

    def close(self) -> None:
        """Stop what `start` began if `run` never took it (the build stopped before its shards)."""
        starting, self._starting = self._starting, None
        if starting is not None:
            try:
                client, cluster = starting.result()
            except Exception:  # noqa: BLE001 - a cluster that never came up holds nothing
                return
            _shut(client, cluster)

    def _client(self):
        from distributed import Client, LocalCluster

        if not self.scheduler:
            # processes, one thread each: ffmpeg and numpy work is per process, as in the local pool
            with nanny_environ_kept():
                cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                       dashboard_address=None, host="127.0.0.1")
            return Client(cluster), cluster
        if os.path.isfile(self.scheduler):
            return Client(scheduler_file=self.scheduler, timeout="30s"), None
        return Client(self.scheduler, timeout="30s"), None

    def run(self, fn: Callable, tasks: Sequence, args: tuple = (),
            on_done: Callable[[Any, Any], None] | None = None) -> list[tuple[Any, str]]:
        from distributed import as_completed

        self.start()
        starting, self._starting = self._starting, None
        client, cluster = starting.result()
        attempts = {id(t): 0 for t in tasks}
        failures: list[tuple[Any, str]] = []
        futures: dict = {}

        def submit(task) -> None:
            # pure=False: a retried shard is a new task, never a cached result
            fut = client.submit(fn, task, *args, pure=False, key=f"s2i-shard-{_slug(task)}-{attempts[id(task)]}")
            futures[fut] = task
            done.add(fut)

        try:
            done = as_completed()
            for t in tasks:
                submit(t)
            for fut in done:
                task = futures.pop(fut)
                try:
                    result = fut.result()
                except Exception as e:  # noqa: BLE001 - one shard's error (or KilledWorker) is that shard's
                    attempts[id(task)] += 1
                    if attempts[id(task)] > self.retries:
                        failures.append((task, f"{type(e).__name__}: {e}"))
                    else:
                        submit(task)
                    continue
                if on_done:
                    on_done(task, result)
        except BaseException:
            client.cancel(list(futures))
            raise
        finally:
            _shut(client, cluster)
        return failures


def _shut(client, cluster) -> None:
    """Close the client, and the LocalCluster when this executor started one."""
    client.close()
    if cluster is not None:
        with nanny_environ_kept():  # a nanny that restarted a dead worker wrote them again
            cluster.close()


def _slug(task: Any) -> str:
    return str(getattr(task, "name", id(task))).replace("/", "-")


def make_executor(kind: str, workers: int = 0, scheduler: str | None = None, retries: int = 2):
    if kind == "local":
        if scheduler:
            raise ValueError("--scheduler needs --executor dask")
        return LocalExecutor(workers, retries)
    if kind == "dask":
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise ValueError("--executor dask needs dask.distributed: pip install 'dask[distributed]'") from None
        return DaskExecutor(scheduler, workers, retries)
    raise ValueError(f"--executor must be local or dask, not {kind!r}")
