"""Server-side batching of concurrent Predict calls to one (model, version, signature).

Like TF Serving's BasicBatchScheduler: a request waits at most `timeout_s` for others
to join it, up to `max_batch_size` rows in all; the batch runs once and each caller
gets its own rows back. Requests that cannot share a batch (no common leading
dimension, or bigger than a batch on their own) run alone rather than fail.
"""

import logging
import queue
import threading
import time
from typing import Callable, Dict, List, Optional

import numpy as np

from serving.errors import ServingError
from serving.stats import Stats

log = logging.getLogger("serving")

Arrays = Dict[str, np.ndarray]


class _Task:
    __slots__ = ("inputs", "size", "done", "result", "error")

    def __init__(self, inputs: Arrays, size: int):
        self.inputs = inputs
        self.size = size
        self.done = threading.Event()
        self.result: Optional[Arrays] = None
        self.error: Optional[BaseException] = None

    def finish(self, result=None, error=None):
        self.result, self.error = result, error
        self.done.set()


def batch_size_of(inputs: Arrays) -> Optional[int]:
    """The common leading dimension of all inputs, or None when they have none."""
    sizes = {a.shape[0] if a.ndim else None for a in inputs.values()}
    if len(sizes) != 1:
        return None
    return sizes.pop()


class Batcher:
    """Batches calls to `run(inputs) -> outputs`; one per (model, version, signature)."""

    _STOP = object()

    def __init__(self, run: Callable[[Arrays], Arrays], max_batch_size: int, timeout_s: float,
                 num_threads: int, name: str, stats: Optional[Stats] = None):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self._run = run
        self._max = max_batch_size
        self._timeout = max(0.0, timeout_s)
        self._name = name
        self._stats = stats or Stats()
        self._queue: "queue.Queue" = queue.Queue()
        self._closed = False
        self._close_lock = threading.Lock()
        self._threads = [threading.Thread(target=self._work, name=f"batch-{name}-{i}", daemon=True)
                         for i in range(max(1, num_threads))]
        for t in self._threads:
            t.start()

    def submit(self, inputs: Arrays) -> Arrays:
        size = batch_size_of(inputs)
        if size is None or size == 0 or size > self._max:
            return self._run(inputs)
        task = _Task(inputs, size)
        with self._close_lock:
            closed = self._closed
            if not closed:
                self._queue.put(task)
        if closed:
            # The version was unloaded after this request picked it: serve it directly.
            return self._run(inputs)
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.result

    def close(self) -> None:
        """Stops the workers once queued requests are served."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            for _ in self._threads:
                self._queue.put(self._STOP)

    def _work(self):
        carry = None
        while True:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is self._STOP:
                return
            batch, total = [first], first.size
            deadline = time.monotonic() + self._timeout
            stop = False
            while total < self._max:
                remaining = deadline - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is self._STOP:
                    stop = True
                    break
                if total + nxt.size > self._max:
                    carry = nxt
                    break
                batch.append(nxt)
                total += nxt.size
            self._execute(batch, total)
            if stop:
                # Another worker may still be waiting on queued work; the remaining tasks
                # were enqueued before the stop marker, so they were already taken.
                return

    def _execute(self, batch: List[_Task], total: int):
        if len(batch) == 1:
            self._run_alone(batch[0])
            return
        self._stats.add("batches")
        self._stats.add("batched_requests", len(batch))
        try:
            merged = {k: np.concatenate([t.inputs[k] for t in batch], axis=0) for k in batch[0].inputs}
            outputs = self._run(merged)
            if any(v.ndim == 0 or v.shape[0] != total for v in outputs.values()):
                raise ValueError("an output has no per-row leading dimension")
        except (ServingError, ValueError) as e:
            # One bad request must not fail its neighbours: rerun them one by one.
            log.debug("batch of %d on %s failed (%s); running its requests alone", len(batch), self._name, e)
            for t in batch:
                self._run_alone(t)
            return
        except BaseException as e:  # noqa: BLE001 - every waiting caller must be released
            for t in batch:
                t.finish(error=e)
            return
        start = 0
        for t in batch:
            t.finish(result={k: v[start:start + t.size] for k, v in outputs.items()})
            start += t.size

    def _run_alone(self, task: _Task):
        try:
            task.finish(result=self._run(task.inputs))
        except BaseException as e:  # noqa: BLE001 - handed back to the caller's thread
            task.finish(error=e)
