"""Each party's compiled training steps, and central training's, over the same models.

A feature party trains its bottom (`bottom`); the label party its own bottom with the MMoE top
and task weighting (`label`); central training the whole composed model (`central`).

Every step is one `tf.function` with a fixed input signature (any batch size), so each is traced
once per run, up front (`trace`), and a batch costs one TensorFlow call per feature party and one
or two for the label party. Adam optimizers over disjoint variables take exactly the steps one
Adam over all of them would, so the split model trains as the centralised one does.

With `xla`, the training steps are compiled by XLA into a few fused kernels each, which may use
every core when one step runs at a time (`set_op_threads`); fused kernels make each step cheaper
(benchmarks/RESULTS.md has the figures). XLA compiles a step on its first call at each batch
size, so `trace` takes each step once per size on zeros and puts every variable back: compiling
is start-up, as tracing is. Privacy noise comes from a generator seeded privately
(`entropy.private_seed`), never from the shared seed.
"""

from splitrec_core.training.steps.bottom import BottomTrainer
from splitrec_core.training.steps.central import CentralTrainer
from splitrec_core.training.steps.common import StepSettings, set_op_threads
from splitrec_core.training.steps.label import LabelTrainer

__all__ = ["BottomTrainer", "CentralTrainer", "LabelTrainer", "StepSettings", "set_op_threads"]
