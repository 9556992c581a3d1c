"""The blessing rule: beat the baseline by a margin, do not regress from what is served, and
do not fall below the floor.

A model is blessed when its metric (e.g. `auc_click` on its slice: ALL for a
unified model, its own scenario for a SAMD student)
  1. beats the baseline's by `margin`: the baseline is another model's evaluation
     on the same slice when one is named, else chance (0.5 for AUC and GAUC);
  2. when a version of the same model is already pushed (i.e. was blessed before),
     is not below that version's metric on the same test rows by more than
     `tolerance`; and
  3. when a floor model is evaluated in the run (the logistic regression by default),
     is not below the floor's metric on the same rows: refused only when the paired
     95% interval of (model - floor) lies entirely below 0 ("no difference" passes).

The floor itself is the fallback that is always served: it is blessed whenever its
metric can be computed, whatever the other checks say.
"""

import dataclasses
from typing import Optional, Tuple

from models.configs import FromDict

METRICS = ("auc", "gauc")  # higher is better; chance is 0.5
TASKS = ("click", "conversion", "cart")
CHANCE = 0.5


@dataclasses.dataclass(frozen=True)
class BlessingConfig(FromDict):
    metric: str = "auc_click"
    margin: float = 0.01
    tolerance: float = 0.01
    floor: bool = True  # compared with the floor, when one is evaluated in the run

    def __post_init__(self):
        self.split_metric()

    def split_metric(self) -> Tuple[str, str]:
        metric, _, task = self.metric.partition("_")
        if metric not in METRICS or task not in TASKS:
            raise ValueError(f"blessing metric {self.metric!r}: expected <{'|'.join(METRICS)}>_<{'|'.join(TASKS)}>")
        return metric, task

    def value(self, per_slice, slice_name: str) -> Optional[float]:
        metric, task = self.split_metric()
        return per_slice.get(slice_name, {}).get(task, {}).get(metric)


@dataclasses.dataclass(frozen=True)
class Floor:
    """A model against the floor on the model's own test rows; `skipped` says why it was not compared."""
    model: str
    value: Optional[float] = None  # the floor's metric on those rows
    rows: int = 0
    difference: Optional[Tuple[float, float, float]] = None  # (model - floor, low, high), paired 95%
    skipped: Optional[str] = None

    @property
    def below(self) -> bool:
        return self.difference is not None and self.difference[2] < 0

    def describe(self, metric: str, candidate: float) -> str:
        if self.skipped:
            return f"floor {self.model} not checked: {self.skipped}"
        if self.difference is None:
            return f"floor {self.model} not compared on these {self.rows:,} rows (a class has fewer than 2 rows)"
        d, low, high = self.difference
        return (f"{metric} {candidate:.3f} is {'below' if self.below else 'not below'} the floor {self.model} "
                f"{self.value:.3f} on the same {self.rows:,} rows: difference {d:+.3f} [{low:+.3f}, {high:+.3f}] "
                "(paired 95%)")  # not ending in "]": the report reads that as an interval cell

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def decide(config: BlessingConfig, candidate: Optional[float], baseline: Optional[float] = None,
           previous: Optional[float] = None, baseline_name: str = "chance", floor: Optional[Floor] = None,
           fallback: bool = False) -> Tuple[bool, str]:
    """(blessed, reason); the reason names the numbers that decided. `fallback`: the model is the floor."""
    m = config.metric
    if candidate is None:
        return False, f"{m} cannot be computed on the test split (one class only)"
    base = CHANCE if baseline is None else baseline
    if fallback:  # served whatever the others do, so its own blessing depends on nothing else
        against = f"; pushed version {previous:.4f}" if previous is not None else ""
        return True, (f"{m} {candidate:.4f}: the floor, blessed whenever its metric can be computed "
                      f"(the fallback; {baseline_name} {base:.4f}{against})")
    if candidate < base + config.margin:
        return False, (f"{m} {candidate:.4f} does not beat {baseline_name} ({base:.4f}) "
                       f"by the margin {config.margin}")
    if previous is not None and candidate < previous - config.tolerance:
        return False, (f"{m} {candidate:.4f} regresses from the pushed version's {previous:.4f} "
                       f"by more than the tolerance {config.tolerance}")
    if floor is not None and floor.below:
        return False, floor.describe(m, candidate)
    against = f"; pushed version {previous:.4f}" if previous is not None else ""
    against += f"; {floor.describe(m, candidate)}" if floor is not None else ""
    return True, f"{m} {candidate:.4f} beats {baseline_name} ({base:.4f}) by >= {config.margin}{against}"
