"""The one parallel path of every evaluation: work items (episode shards, sweep cells, bags) run
in this process, or as Ray tasks on a local Ray or a cluster.

Items belong to cells (a sweep cell, a bag, one `vla-eval sim` run). Results come back per cell in
item order, whatever order the workers finish in, so the same items give the same table with or
without Ray and for any number of workers. Ray re-runs an item whose worker process died
(`max_retries`); its first attempt never returned, so no episode is lost or counted twice. An item
that raises fails its cell with the error (episodes are deterministic: a retry would fail the
same way); the other cells complete.

Threads per item are the task's CPUs (`num_cpus`, also in process): torch's intra-op thread count
changes the rounding of the model's reductions, which can flip a closed-loop episode, so it is
part of what makes a table reproducible (see docs/ray.md).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

CONNECT_TIMEOUT_S = 5.0
LOCAL = "local"  # `--ray` without an address: start or join a Ray on this machine


class ClusterUnavailable(RuntimeError):
    """The Ray cluster named could not be reached (said within seconds, not after Ray's own
    minute-long reconnect loop)."""


@dataclass(frozen=True)
class Parallel:
    """Where and how work runs: `ray` None runs in this process; "local", "auto", "host:port"
    or "ray://host:10001" runs Ray tasks, each asking for `num_cpus` / `num_gpus` (fractional
    allowed: 0.25 GPU puts four small-model tasks on one device)."""

    ray: str | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_retries: int = 3  # re-runs of an item whose worker process died
    shard_episodes: int = 10  # closed-loop episodes per item
    progress: bool = True

    def __post_init__(self) -> None:
        if self.num_cpus <= 0 or self.num_gpus < 0:
            raise ValueError(f"num_cpus must be > 0 and num_gpus >= 0, not {self.num_cpus}, "
                             f"{self.num_gpus}")  # fmt: skip
        if self.shard_episodes < 1 or self.max_retries < 0:
            raise ValueError("shard_episodes must be >= 1 and max_retries >= 0")

    @property
    def threads(self) -> int:
        return max(1, int(self.num_cpus))


@dataclass(frozen=True)
class Work:
    """One item: `fn(*args)` (a module-level function, so Ray can ship it), counted as `size`
    units (episodes, steps) on the progress bar."""

    cell: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    size: int = 1


@dataclass
class CellOutcome:
    results: list[Any] = field(default_factory=list)  # per item, in item order
    error: str | None = None  # the first item's error; results are then incomplete

    @property
    def failed(self) -> bool:
        return self.error is not None


OnCell = Callable[[str, CellOutcome], None]


def run(work: Sequence[Work], options: Parallel, desc: str = "",
        on_cell: OnCell | None = None) -> dict[str, CellOutcome]:  # fmt: skip
    """Every item, per cell in first-seen order; `on_cell` is called as each cell finishes
    (done or failed), so callers can save it at once and resume after an interruption."""
    cells: dict[str, list[int]] = {}
    for i, item in enumerate(work):
        cells.setdefault(item.cell, []).append(i)
    outcomes = {name: CellOutcome([None] * len(idx)) for name, idx in cells.items()}
    slot = {i: n for idx in cells.values() for n, i in enumerate(idx)}
    bar = _Bar(sum(w.size for w in work), len(cells), desc, options.progress)
    tracker = _Tracker(cells, outcomes, on_cell, bar)
    try:
        if options.ray is None:
            _run_here(work, options, slot, tracker)
        else:
            _run_ray(work, options, slot, tracker)
    finally:
        bar.close()
    return outcomes


class _Tracker:
    """Which items of each cell are back, the cell's state, and the bar's counts."""

    def __init__(self, cells, outcomes, on_cell, bar) -> None:
        self.left = {name: len(idx) for name, idx in cells.items()}
        self.outcomes, self.on_cell, self.bar = outcomes, on_cell, bar
        self.started: set[str] = set()
        self.finished: set[str] = set()

    def start(self, cell: str) -> None:
        self.started.add(cell)
        self._show()

    def done(self, cell: str, n: int, result: Any, size: int) -> None:
        out = self.outcomes[cell]
        out.results[n] = result
        self.left[cell] -= 1
        self.bar.update(size)
        if self.left[cell] == 0 and cell not in self.finished:
            self._finish(cell)
        self._show()

    def fail(self, cell: str, error: str, size: int) -> None:
        out = self.outcomes[cell]
        out.error = out.error or error
        self.left[cell] -= 1
        self.bar.update(size)
        if cell not in self.finished:
            self._finish(cell)
        self._show()

    def _finish(self, cell: str) -> None:
        self.finished.add(cell)
        if self.on_cell is not None:
            self.on_cell(cell, self.outcomes[cell])

    def _show(self) -> None:
        failed = sum(o.failed for o in self.outcomes.values())
        running = len(self.started - self.finished)
        self.bar.cells(len(self.finished) - failed, running, failed)


class _Bar:
    """One bar over finished units, with cells done / running / failed."""

    def __init__(self, total: int, cells: int, desc: str, enabled: bool) -> None:
        from tqdm import tqdm

        self.total_cells = cells
        self.tqdm = tqdm(total=total, desc=desc, unit="ep", disable=None if enabled else True)

    def update(self, n: int) -> None:
        self.tqdm.update(n)

    def cells(self, done: int, running: int, failed: int) -> None:
        self.tqdm.set_postfix_str(
            f"cells {done} done / {running} running / {failed} failed of {self.total_cells}",
            refresh=False,
        )

    def close(self) -> None:
        self.tqdm.close()


def _describe(err: BaseException) -> str:
    cause = getattr(err, "cause", None)  # a RayTaskError wraps the task's own exception
    if isinstance(cause, BaseException):
        err = cause
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def _run_here(work, options: Parallel, slot, tracker: _Tracker) -> None:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(options.threads)
    try:
        for i, item in enumerate(work):
            if tracker.outcomes[item.cell].failed:  # the cell is lost: skip what is left of it
                tracker.fail(item.cell, "", item.size)
                continue
            tracker.start(item.cell)
            try:
                result = item.fn(*item.args)
            except Exception as err:  # noqa: BLE001 - a failing cell is reported, not raised
                tracker.fail(item.cell, _describe(err), item.size)
            else:
                tracker.done(item.cell, slot[i], result, item.size)
    finally:
        torch.set_num_threads(before)


_TASK_DEVICE: str | None = None


def task_device() -> str | None:
    """'cuda' inside a Ray task that was given a GPU, else None (the loader's default)."""
    return _TASK_DEVICE


def _ray_call(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """What a Ray worker runs: threads and device from the resources Ray gave this task."""
    global _TASK_DEVICE
    import ray
    import torch

    given = ray.get_runtime_context().get_assigned_resources()
    torch.set_num_threads(max(1, int(given.get("CPU", 1.0))))
    _TASK_DEVICE = "cuda" if given.get("GPU", 0.0) > 0 else None
    return fn(*args)


def connect(address: str) -> None:
    """Join (or, for "local", start or join) a Ray cluster; an unreachable address raises
    ClusterUnavailable within CONNECT_TIMEOUT_S. A driver already connected is reused."""
    if address not in (LOCAL, "auto"):
        _reachable(address)
    import ray

    if ray.is_initialized():
        return
    try:
        if address == LOCAL:
            ray.init(include_dashboard=False, log_to_driver=True)
        else:
            ray.init(address=address, include_dashboard=False)
    except ConnectionError as err:
        raise ClusterUnavailable(f"no Ray cluster at {address!r}: {err} (start one with "
                                 "`ray start --head`, or use --ray without an address for a "
                                 "local one)") from None  # fmt: skip


def _reachable(address: str) -> None:
    rest = address.removeprefix("ray://")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterUnavailable(f"Ray address {address!r} is not 'auto', 'HOST:PORT' or "
                                 "'ray://HOST:PORT'")  # fmt: skip
    try:
        with socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        raise ClusterUnavailable(
            f"cannot reach the Ray cluster at {address} ({err or 'timed out'}, checked for "
            f"{CONNECT_TIMEOUT_S:g} s): is `ray start --head` running there and the port open?"
        ) from None


def _run_ray(work, options: Parallel, slot, tracker: _Tracker) -> None:
    connect(options.ray)
    import ray

    remote = ray.remote(_ray_call).options(
        num_cpus=options.num_cpus, num_gpus=options.num_gpus,
        max_retries=options.max_retries, retry_exceptions=False,
    )  # fmt: skip
    cpus = ray.cluster_resources().get("CPU", 1.0)
    window = max(2, int(2 * cpus / options.num_cpus))  # queued ahead of the free workers
    pending: dict[Any, int] = {}
    queue = iter(enumerate(work))

    def submit() -> bool:
        for i, item in queue:
            if tracker.outcomes[item.cell].failed:
                tracker.fail(item.cell, "", item.size)
                continue
            pending[remote.remote(item.fn, item.args)] = i
            tracker.start(item.cell)
            return True
        return False

    while len(pending) < window and submit():
        pass
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        for ref in ready:
            i = pending.pop(ref)
            item = work[i]
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as err:
                tracker.fail(item.cell, _describe(err), item.size)
            else:
                tracker.done(item.cell, slot[i], result, item.size)
            while len(pending) < window and submit():
                pass
