"""One-way doors: kernels <- modules <- applications. A kernel never imports lstmkit modules,
and the references share no code with the kernels they check."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lstmkit"
# lstmkit modules (dotted, relative to the package) each room may not import; a prefix bans its subtree
APPLICATIONS = {
    "cli",
    "train",
    "data",
    "datasets",
    "plots",
    "tasks",
    "runs",
    "checkpoint",
    "files",
    "distributed",
    "onnx_export",
    "experiments",
    "models",
    "metrics",
}
FORBIDDEN = {
    "kernels": {"nn", "functional", "_checks", "_variants", "reference", "reference_variants"} | APPLICATIONS,
    "reference.py": {"nn", "functional", "kernels", "_checks", "_variants"} | APPLICATIONS,
    # the variant oracle may use the contract's argument bundles, never a kernel's code
    "reference_variants.py": {"nn", "functional", "kernels.torch_ops", "_checks", "_variants"} | APPLICATIONS,
    "functional.py": {"nn", "_checks", "precompile"} | APPLICATIONS,
    # beneath functional's dispatch: whether the kernels are compiled, never how to compile them
    "compilation.py": {"nn", "functional", "_checks", "_variants", "precompile"} | APPLICATIONS,
    "precompile.py": APPLICATIONS,
    "nn.py": APPLICATIONS,
    "_variants.py": APPLICATIONS,
    "_checks.py": APPLICATIONS,
    # a leaf: process settings that applications and benchmarks apply, tied to no other room
    "memory.py": {"nn", "functional", "kernels", "_checks", "_variants", "reference", "reference_variants"}
    | APPLICATIONS,
    # applications never reach into the command line, which sits on top of them
    **{
        room: {"cli"}
        for room in (
            "tasks",
            "train.py",
            "runs.py",
            "data.py",
            "plots.py",
            "checkpoint.py",
            "files.py",
            "distributed.py",
            "onnx_export.py",
            "models.py",
            "experiments.py",
            "metrics.py",
        )
    },
}


def _imports(path: Path) -> set[str]:
    """Dotted lstmkit modules imported by path, relative to the package (e.g. "kernels.contract")."""
    names = set()
    package = path.parent.relative_to(PACKAGE).parts
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] != "lstmkit":
                    continue
                base = parts[1:]
            else:
                base = list(package[: len(package) - (node.level - 1)]) + (node.module or "").split(".")
                base = [p for p in base if p]
            # `from .kernels import torch_ops` may name a submodule: record both
            names.update(".".join([*base, alias.name]) for alias in node.names)
            if node.module:
                names.add(".".join(base))
        elif isinstance(node, ast.Import):
            names.update(a.name.removeprefix("lstmkit.") for a in node.names if a.name.startswith("lstmkit."))
    return names


def _banned(module: str, forbidden: set[str]) -> bool:
    return any(module == f or module.startswith(f + ".") for f in forbidden)


def test_rooms_import_one_way():
    checked = 0
    for room, forbidden in FORBIDDEN.items():
        for path in [PACKAGE / room] if room.endswith(".py") else sorted((PACKAGE / room).rglob("*.py")):
            bad = {m for m in _imports(path) if _banned(m, forbidden)}
            assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"
            checked += 1
    assert checked >= 20


def test_the_import_scanner_sees_relative_and_absolute_imports():
    assert "kernels.contract" in _imports(PACKAGE / "reference_variants.py")
    assert "kernels.torch_ops" in _imports(PACKAGE / "functional.py")
    assert "contract" not in _imports(PACKAGE / "kernels" / "torch_ops.py")
    assert "kernels.contract" in _imports(PACKAGE / "kernels" / "torch_ops.py")
