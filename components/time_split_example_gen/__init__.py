from components.time_split_example_gen.component import TimeSplitExampleGen  # noqa: F401
from components.time_split_example_gen.split import SPLITS, SplitError, TimeSplit  # noqa: F401
