"""The blessing rule: beat the baseline by a margin, and do not regress from what is served.

A model is blessed when its metric (e.g. `auc_click` on its slice: ALL for a
unified model, its own scenario for a SAMD student)
  1. beats the baseline's by `margin`: the baseline is another model's evaluation
     on the same slice when one is named, else chance (0.5 for AUC and GAUC); and
  2. when a version of the same model is already pushed (i.e. was blessed before),
     is not below that version's metric on the same test rows by more than
     `tolerance`.
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


def decide(config: BlessingConfig, candidate: Optional[float], baseline: Optional[float] = None,
           previous: Optional[float] = None, baseline_name: str = "chance") -> Tuple[bool, str]:
    """(blessed, reason); the reason names the numbers that decided."""
    m = config.metric
    if candidate is None:
        return False, f"{m} cannot be computed on the test split (one class only)"
    base = CHANCE if baseline is None else baseline
    if candidate < base + config.margin:
        return False, (f"{m} {candidate:.4f} does not beat {baseline_name} ({base:.4f}) "
                       f"by the margin {config.margin}")
    if previous is not None and candidate < previous - config.tolerance:
        return False, (f"{m} {candidate:.4f} regresses from the pushed version's {previous:.4f} "
                       f"by more than the tolerance {config.tolerance}")
    against = f"; pushed version {previous:.4f}" if previous is not None else ""
    return True, f"{m} {candidate:.4f} beats {baseline_name} ({base:.4f}) by >= {config.margin}{against}"
