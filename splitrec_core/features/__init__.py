"""Per-party feature engineering, fitted on that party's own training rows only.

`transform` (what is fitted, and applied again at scoring), `build` (the party's pass over its
aligned rows, writing its model inputs), `matrix` (those inputs read back for training).
"""

from splitrec_core.features.build import PartyFeatures, build_features
from splitrec_core.features.matrix import FeatureMatrix
from splitrec_core.features.transform import Transform

__all__ = ["FeatureMatrix", "PartyFeatures", "Transform", "build_features"]
