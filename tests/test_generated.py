"""generated/ is what `make generate` makes from protos/ with the pinned generator."""

from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_code_is_current(tmp_path: Path) -> None:
    subprocess.run(
        ["make", "--no-print-directory", "-s", "generate", f"GENERATED={tmp_path}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*"))
    committed = ROOT / "generated"
    kept = sorted(
        p.relative_to(committed)
        for p in committed.rglob("*.py*")
        if p.name not in ("__init__.py",) and "__pycache__" not in p.parts
    )
    assert fresh == kept, "generated/ has files protos/ no longer makes (or lacks new ones)"
    stale = [str(p) for p in fresh if not filecmp.cmp(tmp_path / p, committed / p, shallow=False)]
    assert not stale, f"generated/ is stale, run `make generate`: {stale}"
