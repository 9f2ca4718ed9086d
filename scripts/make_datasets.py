"""Rebuild src/lstmkit/datasets/ from the packages they come from (see its README.md).

Not run by the tests or CI: it needs the wheels of statsmodels 0.15.0, scikit-learn 1.9.1 and
bible-cli 1.0.3 unpacked under SOURCE (pip download --no-deps, then unzip each into SOURCE).

    python scripts/make_datasets.py /path/to/unpacked/wheels
"""

from __future__ import annotations

import gzip
import io
import json
import re
import sys
from pathlib import Path

import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "src" / "lstmkit" / "datasets"


def _gzip(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as stream:  # mtime=0: reproducible bytes
        stream.write(data)
    return buffer.getvalue()


def co2(source: Path) -> None:
    weekly = pd.read_csv(source / "statsmodels/datasets/co2/co2.csv")
    weekly["date"] = pd.to_datetime(weekly["date"].astype(str), format="%Y%m%d")
    monthly = weekly.set_index("date")["co2"].resample("MS").mean()["1965-01-01":].round(2)
    assert not monthly.isna().any()
    table = pd.DataFrame({"month": monthly.index.strftime("%Y-%m"), "co2": monthly.to_numpy()})
    table.to_csv(OUT / "co2_monthly.csv", index=False)


def digits(source: Path) -> None:
    table = pd.read_csv(source / "sklearn/datasets/data/digits.csv.gz", header=None)
    table.columns = [f"r{r}c{c}" for r in range(8) for c in range(8)] + ["digit"]
    (OUT / "digits.csv.gz").write_bytes(_gzip(table.to_csv(index=False).encode()))


def genesis(source: Path) -> None:
    books = json.loads((source / "bible_cli/dataset.json").read_text())
    book = next(b for b in books if b["abbrev"] == "gn")

    def clean(verse: str) -> str:
        verse = re.sub(r"\{[^}]*:[^}]*\}", "", verse)  # translators' notes
        verse = re.sub(r"\{([^}]*)\}", r"\1", verse)  # italic (supplied) words
        return re.sub(r"\s+", " ", verse).strip()

    text = "\n\n".join("\n".join(clean(v) for v in chapter) for chapter in book["chapters"]) + "\n"
    (OUT / "genesis.txt.gz").write_bytes(_gzip(text.encode()))


if __name__ == "__main__":
    root = Path(sys.argv[1])
    co2(root)
    digits(root)
    genesis(root)
