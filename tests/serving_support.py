"""Test helpers for the serving layer: write a published model into a lake with pyarrow.

No Spark: the factor tables and registry rows are written directly, and the user
vectors are the exact ALS solution for the given item vectors (what Spark's
last half-iteration produces), so the stored and folded-in vectors agree.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from batch.registry import PUBLISHED, record_status
from lambdarec.lake import Lake
from schemas.tables import ITEM_FACTORS, MODEL_INTERACTIONS, USER_FACTORS
from serving.foldin import fold_in, gram

REG, ALPHA = 0.1, 5.0


def write_model(
    lake: Lake,
    version: int,
    source_events_version: int,
    item_vectors: dict[str, list[float]],
    ratings: dict[str, dict[str, float]],
) -> dict[str, np.ndarray]:
    """Publish a model over ``item_vectors`` trained on ``ratings`` (user -> item -> rating).

    Returns the user vectors it stored.
    """
    item_ids = sorted(item_vectors)
    y = np.asarray([item_vectors[i] for i in item_ids], dtype=np.float32)
    item_pos = {item: i for i, item in enumerate(item_ids)}
    user_ids = sorted(ratings)
    yty = gram(y)
    users = {}
    for user in user_ids:
        positions = np.asarray([item_pos[i] for i in ratings[user]])
        values = np.asarray(list(ratings[user].values()))
        users[user] = fold_in(y, yty, positions, values, REG, ALPHA).astype(np.float32)
    lake.append_arrow(
        ITEM_FACTORS,
        pa.table(
            {
                "model_version": [version] * len(item_ids),
                "item_index": list(range(len(item_ids))),
                "item_id": item_ids,
                "factors": [row.tolist() for row in y],
            }
        ),
    )
    lake.append_arrow(
        USER_FACTORS,
        pa.table(
            {
                "model_version": [version] * len(user_ids),
                "user_index": list(range(len(user_ids))),
                "user_id": user_ids,
                "factors": [users[u].tolist() for u in user_ids],
            }
        ),
    )
    rows = [(u, item_pos[i], r) for u in user_ids for i, r in ratings[u].items()]
    lake.append_arrow(
        MODEL_INTERACTIONS,
        pa.table(
            {
                "model_version": [version] * len(rows),
                "user_index": [user_ids.index(u) for u, _, _ in rows],
                "item_index": [p for _, p, _ in rows],
                "rating": [r for _, _, r in rows],
            }
        ),
    )
    record_status(
        lake,
        version,
        PUBLISHED,
        "written by a test",
        source_events_version=source_events_version,
        params={"regParam": REG, "alpha": ALPHA, "rank": y.shape[1]},
        n_users=len(user_ids),
        n_items=len(item_ids),
        n_interactions=len(rows),
    )
    return users
