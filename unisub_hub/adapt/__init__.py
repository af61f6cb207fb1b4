"""Learning new tasks as coefficients on a frozen basis, and serving many tasks on one model.

The same few files as a peft tuner: ``layer.py`` (tensor operations), ``model.py`` (wiring
into a model, tasks, saving). See :func:`attach`.
"""

from .control import random_basis_like
from .layer import SubspaceLayer, TaskLinear, TaskState
from .model import INIT_CHOICES, SubspaceAdapter, attach

__all__ = ["INIT_CHOICES", "SubspaceAdapter", "SubspaceLayer", "TaskLinear", "TaskState", "attach", "random_basis_like"]
