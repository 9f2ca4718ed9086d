"""The README's Python examples run as written (its >>> example runs as a doctest)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples write files (an ONNX export) where they run
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    scripts = [b for b in blocks if not b.lstrip().startswith(">>>")]
    assert scripts, "the README has no Python example"
    namespace: dict = {}
    for block in scripts:  # in order, sharing names, as a reader would run them
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["gates"].forget_gate.shape == (2, 50, 4, 32)
    assert (tmp_path / "lstm.onnx").stat().st_size > 0
