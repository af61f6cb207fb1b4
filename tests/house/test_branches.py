"""What a source kind decides is decided in unisub_hub/format/kinds.py, not by comparing kind names.

Counts the comparisons the house review found in about 35 places (``== "lora"``, ``isinstance(..,
LoraSource)``, ``self.lora``, the PEFT key prefix written out): none may come back outside the
kinds module (and the one place each source class names its own kind).
"""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "unisub_hub"
BRANCHES = re.compile(
    r'[=!]= "(lora|checkpoint)"'
    r"|isinstance\([^)]*\b(LoraSource|CheckpointSource|InMemoryLora|InMemoryCheckpoint)\b"
    r"|self\.lora\b"
    r'|"base_model\.model\."'
)
HOME = {"format/kinds.py"}


def branch_sites() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative in HOME:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if BRANCHES.search(line):
                found.append(f"{relative}:{number}: {line.strip()}")
    return found


def test_no_code_branches_on_the_kind_of_source():
    sites = branch_sites()
    assert not sites, "ask unisub_hub.format.kinds.source_kind(...) or the source instead:\n" + "\n".join(sites)


def test_the_counter_sees_a_branch():
    assert BRANCHES.search('if manifest["source_kind"] == "lora":')
    assert BRANCHES.search("elif isinstance(source, LoraSource) and x:")
    assert not BRANCHES.search('kind = "lora"')
