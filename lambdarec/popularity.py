"""Item popularity, defined once: the publish gate's baseline and serving's ``popular`` ranking.

The gate (``batch/evaluate.py``) publishes a model only if it beats a popularity
baseline; serving answers ``popular`` when it can say nothing personal
(``lambdarec/model_bundle.py`` stores the ranking with each model). Both compute it
here, from the same training interactions, so the baseline the model had to beat is
the ranking users get without it.

An item's popularity is how many distinct users have a positive summed training
weight on it: a heavy user counts once, and a user whose weights on the item sum to
a dislike (a poor rating with a rating center) does not make it popular.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse


def item_popularity(interactions: sparse.spmatrix | sparse.sparray) -> np.ndarray:
    """Per item (column), how many users (rows) have a positive summed weight on it, as float64.

    ``interactions`` is (users x items) of training weights; duplicate (user, item)
    entries are summed first.
    """
    matrix = sparse.csr_matrix(interactions, copy=True)
    matrix.sum_duplicates()
    positive = matrix.indices[matrix.data > 0]
    return np.bincount(positive, minlength=matrix.shape[1]).astype(np.float64)
