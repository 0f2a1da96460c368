"""Confidence of implicit feedback: how strongly a user's summed interaction weight r counts.

One definition for every model family and for serving, so a model and the fresh
interactions serving folds into it read the same weight the same way:

    c(r) = 1 + alpha * s(|r|)   preference = r > 0

with the scaling ``s``: ``linear`` s(r) = r; ``log`` s(r) = log(1 + r / epsilon)
(Hu, Koren & Volinsky 2008), which keeps a 5-star rating or a tenth view from
drowning out everything else; ``binary`` s(r) = 1, any interaction counts the same.
ALS weighs its squared errors by c; EASE fits on the extra confidence c - 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

if TYPE_CHECKING:
    from pyspark.sql import Column

Scaling = Literal["linear", "log", "binary"]
SCALINGS: tuple[str, ...] = get_args(Scaling)


@dataclass(frozen=True)
class Confidence:
    """A scaling and its constants; ``record`` is how registry rows and model bundles keep it."""

    scaling: str = "log"
    alpha: float = 1.0
    epsilon: float = 1.0

    def __post_init__(self) -> None:
        if self.scaling not in SCALINGS:
            raise ValueError(f"confidence scaling must be one of {SCALINGS}, got {self.scaling!r}")
        if self.alpha <= 0 or self.epsilon <= 0:
            raise ValueError(f"confidence alpha and epsilon must be positive, got {self.alpha}, {self.epsilon}")

    def extra(self, ratings: np.ndarray) -> np.ndarray:
        """c - 1 = alpha * s(|r|) per rating (float64); 0 where r is 0."""
        r = np.abs(np.asarray(ratings, dtype=np.float64))
        if self.scaling == "linear":
            scaled = r
        elif self.scaling == "log":
            scaled = np.log1p(r / self.epsilon)
        else:
            scaled = (r > 0).astype(np.float64)
        return self.alpha * scaled

    def positive(self, ratings: np.ndarray) -> np.ndarray:
        """``extra`` for a liked item, 0 for a dislike (r <= 0): what item-item models sum."""
        r = np.asarray(ratings, dtype=np.float64)
        return np.where(r > 0, self.extra(r), 0.0)

    def extra_column(self, rating: "Column") -> "Column":
        """``extra`` as a Spark column expression, signed like ``rating`` (Spark ALS reads the sign)."""
        from pyspark.sql import functions as F

        magnitude = F.abs(rating)
        if self.scaling == "linear":
            scaled = magnitude
        elif self.scaling == "log":
            scaled = F.log1p(magnitude / F.lit(self.epsilon))
        else:
            scaled = F.when(magnitude > 0, F.lit(1.0)).otherwise(F.lit(0.0))
        return F.signum(rating) * F.lit(self.alpha) * scaled

    def record(self) -> dict[str, Any]:
        return {"scaling": self.scaling, "alpha": self.alpha, "epsilon": self.epsilon}

    @classmethod
    def from_record(cls, record: dict[str, Any], default: "Confidence") -> "Confidence":
        """From a registry row's params or a bundle's meta; a row written before scalings existed
        was linear (c = 1 + alpha * r), whatever today's default is."""
        return cls(
            scaling=str(record.get("scaling", "linear")),
            alpha=float(record.get("alpha", default.alpha)),
            epsilon=float(record.get("epsilon", default.epsilon)),
        )
