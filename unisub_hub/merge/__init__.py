"""Merging tasks of one basis in coefficient space.

Tasks of one basis share its mean ``M`` and directions ``U``, ``V``; a task is its
coefficients ``C_t`` per layer, its coordinates around the mean. A merge combines the
``C_t`` layer by layer (``O(T k^2)`` per layer for a Tucker basis, where a merge in weight
space works on ``p x q`` matrices) and the merged task is ``M + U C V^T`` like any other.

Methods sit in a registry keyed by name (:data:`METHODS`), as mergekit keeps its merge
methods: a new method is one class. See ``docs/merge.md`` for the math.
"""

from .base import MergeMethod, merge_coefficients
from .dare import Dare
from .iso import Iso
from .linear import Linear
from .registry import METHODS, method_named
from .ties import Ties

__all__ = ["METHODS", "Dare", "Iso", "Linear", "MergeMethod", "Ties", "merge_coefficients", "method_named"]
