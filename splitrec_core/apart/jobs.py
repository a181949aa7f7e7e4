"""What a run the label party starts at a serving feature party does: its `Job`.

Apart from the serving machinery, so a flow can name a job without loading Flight.
"""

from __future__ import annotations

from enum import StrEnum


class Job(StrEnum):
    """What a run the label party starts at a serving party does."""

    TRAIN = "train"    # PSI, features, split training, registering: the party's pipeline
    SCORE = "score"    # scoring new rows with a registered version
    MODELS = "models"  # moving the registry's aliases (promote, roll back)

    @classmethod
    def named(cls, name: str) -> Job | None:
        """The job called `name`, or None: a peer may ask for anything."""
        try:
            return cls(name)
        except ValueError:
            return None
