"""One-way doors: kernels <- modules <- applications. A kernel never imports lstmkit modules."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lstmkit"
# lstmkit modules each room may not import
FORBIDDEN = {
    "kernels": {"nn", "functional", "_checks", "cli", "train", "data", "plots"},
    "reference.py": {"nn", "functional", "kernels", "_checks", "cli"},
    "functional.py": {"nn", "cli"},
    "nn.py": {"cli"},
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            parts = (node.module or "").split(".")
            if node.level == 0 and parts[0] != "lstmkit":
                continue
            parts = parts[1:] if node.level == 0 else parts
            names.update(parts[:1] if parts[0] else [alias.name for alias in node.names])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names if a.name.startswith("lstmkit."))
    return names


def test_rooms_import_one_way():
    checked = 0
    for room, forbidden in FORBIDDEN.items():
        for path in [PACKAGE / room] if room.endswith(".py") else sorted((PACKAGE / room).rglob("*.py")):
            bad = _imports(path) & forbidden
            assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"
            checked += 1
    assert checked >= 5
