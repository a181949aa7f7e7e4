"""The split model: a bottom network per party and a multi-task top, MMoE or PLE.

One Keras concept a module: `bottom` (a party's network and its model), `mmoe` and `ple` (the
tops), `weighting` (the task-weighted loss), `build` (the top model, the centralised twin, gate
use). Importing the package registers every custom layer, so `keras.models.load_model` reads an
exported model.
"""

from splitrec_core.model.bottom import Bottom, bottom_model
from splitrec_core.model.build import composed_model, mean_gate_weights, top_model
from splitrec_core.model.mmoe import MMoE
from splitrec_core.model.ple import PLE
from splitrec_core.model.weighting import TaskWeighting, task_losses

__all__ = ["PLE", "Bottom", "MMoE", "TaskWeighting", "bottom_model", "composed_model",
           "mean_gate_weights", "task_losses", "top_model"]
