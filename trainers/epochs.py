"""The one training rule every trainer follows: an epoch is one pass over its train rows.

At most `max_epochs` epochs and `train_steps` steps in all; each epoch ends with a
validation pass, and training stops once the validation score has not improved for
`patience` epochs, restoring the best epoch. So an equal cap is an equal chance to
converge, whatever a model's batch or a data set's size.
"""


def epoch_steps(rows: int, batch: int, train_steps: int, max_epochs: int):
    """(steps per epoch, epochs): an epoch is one pass over `rows` (a part of one, when `train_steps` is
    less), at most `max_epochs` epochs and `train_steps` steps in all."""
    steps = max(1, min(rows // batch, train_steps))
    return steps, max(1, min(max_epochs, train_steps // steps))
