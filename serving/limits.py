"""Memory bounded by examples, not bytes: a per-request cap and a global in-flight budget.

A byte cap alone lets one request of tiny tf.Examples carry tens of thousands of rows,
and the model's intermediate tensors grow with rows, not bytes. Both front ends count a
request's rows from its declared shape *before* converting anything, and answer
RESOURCE_EXHAUSTED (REST 429) rather than queueing: the client can back off or split.
"""

import threading
from contextlib import contextmanager

from serving.errors import resource_exhausted

DEFAULT_MAX_EXAMPLES_PER_REQUEST = 8192
DEFAULT_MAX_INFLIGHT_EXAMPLES = 32768


class ExampleBudget:
    def __init__(self, max_per_request: int = DEFAULT_MAX_EXAMPLES_PER_REQUEST,
                 max_in_flight: int = DEFAULT_MAX_INFLIGHT_EXAMPLES):
        self.max_per_request = max_per_request  # 0: no cap
        self.max_in_flight = max_in_flight  # 0: no budget
        self._lock = threading.Lock()
        self.in_flight = 0

    def check(self, n: int) -> None:
        if self.max_per_request and n > self.max_per_request:
            raise resource_exhausted(f"request has {n} examples, over the per-request limit of "
                                     f"{self.max_per_request} (--max_examples_per_request); split it")

    @contextmanager
    def hold(self, n: int):
        """Reserves n examples for the duration of one request."""
        self.check(n)
        with self._lock:
            if self.max_in_flight and self.in_flight + n > self.max_in_flight:
                raise resource_exhausted(
                    f"server busy: {self.in_flight} examples in flight, {n} more would pass the "
                    f"budget of {self.max_in_flight} (--max_inflight_examples); retry later")
            self.in_flight += n
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= n
