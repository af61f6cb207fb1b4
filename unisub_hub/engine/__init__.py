"""The subspace engine: truncated HOSVD per layer, projection and reconstruction.

The engine does math only: it sees sources through :class:`MatrixSource` and never opens a
file. Tensors stay on the device and dtype they are given.
"""

from .basis import MODE_SETS, LayerBasis, parse_modes
from .build import (
    BuildOptions,
    BuildResult,
    LayerSpec,
    MatrixSource,
    Progress,
    build_basis,
)
from .device import resolve_device
from .executor import Executor, SerialExecutor
from .matrix import (
    Dense,
    LayerMatrix,
    LowRank,
    all_finite,
    lora_canonical,
    lora_scale,
    matrix_view,
)
from .project import (
    LayerFit,
    fit_layer,
    project_layer,
    reconstruct_layer,
    reconstruct_lora,
)
from .quality import BuildReport, LayerReport
from .rank import RankRule, explained_variance, k_for_variance

__all__ = [
    "MODE_SETS",
    "BuildOptions",
    "BuildReport",
    "BuildResult",
    "Dense",
    "Executor",
    "LayerBasis",
    "LayerFit",
    "LayerMatrix",
    "LayerReport",
    "LayerSpec",
    "LowRank",
    "MatrixSource",
    "Progress",
    "RankRule",
    "SerialExecutor",
    "all_finite",
    "build_basis",
    "explained_variance",
    "fit_layer",
    "k_for_variance",
    "lora_canonical",
    "lora_scale",
    "matrix_view",
    "parse_modes",
    "project_layer",
    "reconstruct_layer",
    "reconstruct_lora",
    "resolve_device",
]
