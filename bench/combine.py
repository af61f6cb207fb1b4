"""Merge benchmark rows (JSON lines printed by run.py, or result files) into one dated result.

python bench/combine.py OUT_STEM ROWS...   # each ROWS is a .json result file or a log of JSON lines
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import markdown  # noqa: E402


def rows_of(path: Path) -> list[dict]:
    text = path.read_text()
    if path.suffix == ".json" and text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def main() -> None:
    out = Path(sys.argv[1])
    rows = [row for path in sys.argv[2:] for row in rows_of(Path(path))]
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
