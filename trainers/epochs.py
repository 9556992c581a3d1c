"""The one training rule every trainer follows: an epoch is one pass over its train rows.

At most `max_epochs` epochs and `train_steps` steps in all; each epoch ends with a
validation pass, and training stops once the validation score has not improved for
`patience` epochs, restoring the best epoch. So an equal cap is an equal chance to
converge, whatever a model's batch or a data set's size. Recommendation models overfit
id embeddings within a few passes: the validation score, not a step count, says when.
The score is the click AUC rather than the loss: it is what the blessing and the report
judge, and the loss sums three tasks of very different weight.
"""

import tf_keras


def epoch_steps(rows: int, batch: int, train_steps: int, max_epochs: int):
    """(steps per epoch, epochs): an epoch is one pass over `rows` (a part of one, when `train_steps` is
    less), at most `max_epochs` epochs and `train_steps` steps in all."""
    steps = max(1, min(rows // batch, train_steps))
    return steps, max(1, min(max_epochs, train_steps // steps))


def early_stopping(patience: int, verbose: int = 0):
    """The stop: `patience` epochs without a better validation click AUC; the best epoch's weights are
    restored, also when the cap ends training (tf_keras 2.16 restores them at the end of `fit`)."""
    return tf_keras.callbacks.EarlyStopping(monitor="val_auc_click", mode="max", patience=patience,
                                            restore_best_weights=True, verbose=verbose)
