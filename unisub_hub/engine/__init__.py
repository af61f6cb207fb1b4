"""The subspace engine: truncated HOSVD per layer, projection and reconstruction.

The engine does math only: it sees sources through :class:`MatrixSource` and never opens a
file. Tensors stay on the device and dtype they are given.
"""

from .basis import LayerBasis
from .build import (
    BuildOptions,
    BuildResult,
    LayerSpec,
    MatrixSource,
    Progress,
    assess_basis,
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
    matrix_shape,
    matrix_view,
)
from .modes import MODE_SETS, Factors, ModeSet, mode_set, parse_modes
from .project import (
    LayerFit,
    fit_layer,
    project_layer,
    rebase_layer,
    reconstruct_layer,
    reconstruct_lora,
    update_rank,
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
    "Factors",
    "LayerBasis",
    "LayerFit",
    "LayerMatrix",
    "LayerReport",
    "LayerSpec",
    "LowRank",
    "ModeSet",
    "MatrixSource",
    "Progress",
    "RankRule",
    "SerialExecutor",
    "all_finite",
    "assess_basis",
    "build_basis",
    "explained_variance",
    "fit_layer",
    "k_for_variance",
    "lora_canonical",
    "lora_scale",
    "matrix_shape",
    "matrix_view",
    "mode_set",
    "parse_modes",
    "project_layer",
    "rebase_layer",
    "reconstruct_layer",
    "reconstruct_lora",
    "resolve_device",
    "update_rank",
]
