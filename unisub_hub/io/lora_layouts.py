"""The ways LoRA files name their factors: PEFT folders, kohya/A1111 files, diffusers files.

One layout says which keys are factors (and which factor), which key carries a module's
alpha, and how a module is named; :class:`~.peft_adapter.LoraSource` reads any of them as
the same low-rank updates, and ``materialize`` writes a set back in the layout it came from.

- ``peft``: ``adapter_config.json`` + ``adapter_model.safetensors`` with keys
  ``base_model.model.<module>.lora_A.weight`` / ``lora_B.weight`` (``lora_embedding_A/B``
  for embeddings); ranks and scales come from the config.
- ``kohya`` (kohya-ss, A1111, ComfyUI): one ``.safetensors`` file with keys
  ``lora_unet_<module_with_underscores>.lora_down.weight`` / ``.lora_up.weight`` and a scalar
  ``.alpha`` (``lora_te_``, ``lora_te1_``, ``lora_te2_`` for text encoders); scale alpha / rank.
- ``diffusers``: one ``.safetensors`` file (``pytorch_lora_weights.safetensors``) with keys
  ``unet.<module>.lora_A.weight`` / ``lora_B.weight`` (older files: ``lora.down`` /
  ``lora.up``; ``text_encoder.``, ``text_encoder_2.``, ``transformer.`` components); an
  optional ``.alpha`` per module, else scale 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..format.kinds import PEFT_KEY_PREFIX

if TYPE_CHECKING:
    from .files import SourceTree

__all__ = ["DIFFUSERS_WEIGHTS", "LAYOUTS", "LoraLayout", "detect_lora_layout"]

DIFFUSERS_WEIGHTS = "pytorch_lora_weights.safetensors"


@dataclass(frozen=True)
class LoraLayout:
    name: str
    key: re.Pattern[str]
    """Matches a factor key; groups ``stem`` (the module as the file spells it) and ``part``."""
    roles: dict[str, str]
    """File part -> ``A`` (down), ``B`` (up), ``embedding_A`` or ``embedding_B``."""
    alpha_suffix: str | None
    """``<stem><suffix>`` holds the module's alpha (a scalar tensor), where the layout has one."""
    module_prefix: str = ""
    """Dropped from a stem to name the module (PEFT's ``base_model.model.``)."""

    def module(self, stem: str) -> str:
        return stem.removeprefix(self.module_prefix)

    def stem(self, module: str) -> str:
        return self.module_prefix + module


LAYOUTS = {
    "peft": LoraLayout(
        "peft",
        re.compile(r"^(?P<stem>.+)\.(?P<part>lora_A|lora_B|lora_embedding_A|lora_embedding_B)(?:\.weight)?$"),
        {"lora_A": "A", "lora_B": "B", "lora_embedding_A": "embedding_A", "lora_embedding_B": "embedding_B"},
        None,
        PEFT_KEY_PREFIX,
    ),
    "kohya": LoraLayout(
        "kohya",
        re.compile(r"^(?P<stem>lora_(?:unet|te\d*|transformer)_\w+?)\.(?P<part>lora_down|lora_up)\.weight$"),
        {"lora_down": "A", "lora_up": "B"},
        ".alpha",
    ),
    "diffusers": LoraLayout(
        "diffusers",
        re.compile(
            r"^(?P<stem>.+?)\.(?P<part>lora_A|lora_B|lora\.down|lora\.up|lora_linear_layer\.down|lora_linear_layer\.up)\.weight$"
        ),
        {
            "lora_A": "A",
            "lora_B": "B",
            "lora.down": "A",
            "lora.up": "B",
            "lora_linear_layer.down": "A",
            "lora_linear_layer.up": "B",
        },
        ".alpha",
    ),
}


def detect_lora_layout(tree: SourceTree) -> tuple[LoraLayout, str] | None:
    """The layout and weights file name of a LoRA stored without ``adapter_config.json``, else None.

    The tree is a ``.safetensors`` file, or a folder without ``config.json`` whose top level
    holds one ``.safetensors`` file (a Hub repo of a diffusers or kohya LoRA). The header
    decides: kohya keys first (their ``lora_down`` names are unambiguous), then diffusers keys.
    """
    if "config.json" in tree.names or "adapter_config.json" in tree.names:
        return None
    files = [name for name in tree.names if "/" not in name and name.endswith(".safetensors")]
    if len(files) != 1:
        return None
    keys = [key for key in tree.weight(files[0]).header() if key != "__metadata__"]
    for name in ("kohya", "diffusers"):
        if any(LAYOUTS[name].key.match(key) for key in keys):
            return LAYOUTS[name], files[0]
    return None
