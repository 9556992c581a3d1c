"""The time-ordered split rule: train on the past, choose on the day before, test on the last days.

Production trains on days up to yesterday and serves today, so evaluation must hold
out whole days: a random split of the same days lets a model score rows whose users,
items and histories it trained on that very day. `TimeSplit` assigns each row to
`train`, `validation` or `test` by its day (span):

    days d_0 < ... < d_{n-1} present in the data
    test       = the last `test_days` days
    validation = the `validation_days` days before them
    train      = the rest

With `validation_days = 0`, validation is instead a hash slice (`validation_percent`
of the rows, by a hash of the row) of the training days: for data with few days,
at the price of validation rows sharing days with training rows.

Pure Python: ExampleGen's executor and `pipelines.transform_only.write_examples`
both split with it, so they produce the same splits.
"""

import dataclasses
import hashlib
import json
import re
from typing import Dict, Iterable, Sequence, Tuple

from models.configs import FromDict

SPLITS = ("train", "validation", "test")
_DAY_FOLDER = re.compile(r"(?:^|/)day=(\d+)(?:/|$)")


class SplitError(ValueError):
    """The data cannot be split as asked (too few days, a path without day=N)."""


@dataclasses.dataclass(frozen=True)
class TimeSplit(FromDict):
    test_days: int = 1
    validation_days: int = 1
    validation_percent: int = 10  # only with validation_days = 0

    def __post_init__(self):
        if self.test_days < 1 or self.validation_days < 0:
            raise SplitError(f"time split {self}: test_days must be >= 1 and validation_days >= 0")
        if not 0 < self.validation_percent < 100:
            raise SplitError(f"time split {self}: validation_percent must be in 1..99")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def boundaries(self, days: Iterable[int], where: str = "the data") -> Tuple[int, int]:
        """(first validation day, first test day) for the days present; a day >= the second is test.

        With a hash validation slice the first value equals the second (no validation day).
        """
        days = sorted(set(int(d) for d in days))
        need = self.test_days + self.validation_days + 1
        if len(days) < need:
            raise SplitError(f"{where}: {len(days)} day(s) {days}, but the time split needs at least {need} "
                             f"({self.test_days} test, {self.validation_days} validation, 1 train)")
        test_start = days[-self.test_days]
        validation_start = days[-self.test_days - self.validation_days] if self.validation_days else test_start
        return validation_start, test_start

    def assign(self, day: int, bounds: Tuple[int, int], key: bytes = b"") -> int:
        """Index into SPLITS of a row of `day`; `key` (the serialized row) only for a hash validation slice."""
        validation_start, test_start = bounds
        if day >= test_start:
            return 2
        if self.validation_days:
            return 1 if day >= validation_start else 0
        bucket = int(hashlib.sha256(key).hexdigest(), 16) % 100
        return 1 if bucket < self.validation_percent else 0

    def split_days(self, days: Iterable[int]) -> Dict[str, Sequence[int]]:
        """{split: the days it draws from} (train and validation share days with a hash slice)."""
        days = sorted(set(int(d) for d in days))
        validation_start, test_start = self.boundaries(days)
        return {"train": [d for d in days if d < validation_start],
                "validation": [d for d in days if validation_start <= d < test_start] if self.validation_days
                else [d for d in days if d < test_start],
                "test": [d for d in days if d >= test_start]}


def day_of_path(path: str) -> int:
    """The span of a raw file, from its `day=N` folder (the raw data contract)."""
    m = _DAY_FOLDER.search(path.replace("\\", "/"))
    if not m:
        raise SplitError(f"{path}: not under a day=N folder; the time split needs one folder per day")
    return int(m.group(1))
