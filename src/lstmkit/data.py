"""Reading user data and the bundled datasets, with one clear error per problem.

Every problem a user's file can have (missing, unreadable, a missing column, non-numeric values,
NaN gaps, too few rows) raises ``DataError`` with one line naming it, before any training.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd


class DataError(ValueError):
    """A problem with the user's data or arguments, stated in one line for the command line."""


@dataclass(frozen=True)
class Bundled:
    """A dataset shipped inside the package, with the settings that suit it."""

    file: str
    task: str
    description: str
    defaults: dict


BUNDLED = {
    "co2": Bundled(
        "co2_monthly.csv",
        "forecast",
        "monthly mean CO2 at Mauna Loa, 1965-2001 (444 months)",
        {"targets": ["co2"], "time_column": "month", "season": 12, "window": 36, "horizon": 12},
    ),
    "digits": Bundled(
        "digits.csv.gz",
        "classify",
        "1,797 handwritten digits, 8x8 images read as 8 steps of 8 pixels",
        {"targets": ["digit"], "steps": 8},
    ),
    "genesis": Bundled(
        "genesis.txt.gz",
        "language-model",
        "the Book of Genesis (King James Version), 196,842 characters",
        {"window": 128},
    ),
}


def bundled(name: str) -> Bundled:
    """The bundled dataset ``name``; DataError naming the choices for an unknown one."""
    if name not in BUNDLED:
        raise DataError(f"unknown bundled dataset {name!r}; choose from: {', '.join(BUNDLED)}")
    return BUNDLED[name]


def bundled_path(name: str) -> Path:
    return Path(str(resources.files("lstmkit.datasets") / bundled(name).file))


def _suffixes(path: Path) -> str:
    return "".join(path.suffixes[-2:]).lower()


def read_table(path: Path) -> pd.DataFrame:
    """A CSV (optionally gzipped) or Parquet file as a DataFrame."""
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist")
    suffix = _suffixes(path)
    try:
        if suffix.endswith((".parquet", ".pq")):
            try:
                return pd.read_parquet(path)
            except ImportError as error:
                raise DataError("reading Parquet needs pyarrow: pip install 'lstmkit[parquet]'") from error
        if suffix.endswith((".csv", ".csv.gz", ".txt", ".tsv")):
            return pd.read_csv(path, sep="\t" if ".tsv" in suffix else ",")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as error:
        raise DataError(f"cannot read {str(path)!r} as a table: {str(error).splitlines()[0]}") from error
    raise DataError(f"{str(path)!r}: expected a .csv, .csv.gz, .tsv or .parquet file")


def read_text(path: Path, column: str | None = None) -> str:
    """Text for a language model: a .txt(.gz) file, or a table's text column joined by newlines."""
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist")
    suffix = _suffixes(path)
    if suffix.endswith((".txt", ".txt.gz")) and column is None:
        try:
            raw = gzip.decompress(path.read_bytes()) if suffix.endswith(".gz") else path.read_bytes()
            return raw.decode("utf-8")
        except (UnicodeDecodeError, OSError, EOFError) as error:
            raise DataError(f"cannot read {str(path)!r} as UTF-8 text: {error}") from error
    table = read_table(path)
    if column is None:
        raise DataError(f"{str(path)!r} is a table: name its text column with --target")
    require_columns(table, [column], path)
    return "\n".join(table[column].astype(str))


def require_columns(table: pd.DataFrame, columns: list[str], path: Path | str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(
            f"column {missing[0]!r} not found in {str(path)!r}; its columns are: {', '.join(map(str, table.columns))}"
        )


def numeric(table: pd.DataFrame, columns: list[str], path: Path | str) -> np.ndarray:
    """The columns as a float64 array (rows, columns): numeric, without gaps."""
    require_columns(table, columns, path)
    for column in columns:
        values = pd.to_numeric(table[column], errors="coerce")
        bad = values.isna() & table[column].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"column {column!r} in {str(path)!r} has non-numeric values, e.g. {table[column].iloc[row]!r} "
                f"at row {row + 1}"
            )
        gaps = table[column].isna()
        if gaps.any():
            rows = np.flatnonzero(gaps.to_numpy())
            raise DataError(
                f"column {column!r} in {str(path)!r} has {len(rows)} missing value(s) (NaN gaps), first at row "
                f"{rows[0] + 1}; fill or drop them first"
            )
    return table[columns].apply(pd.to_numeric).to_numpy(dtype=np.float64)


def spans(rows: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """(train, validation, test) row counts of a time-ordered split: test last, validation before it."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise DataError(f"{name} must lie in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1:
        raise DataError(f"val_fraction + test_fraction must be below 1, got {val_fraction + test_fraction}")
    test = round(rows * test_fraction)
    val = round(rows * val_fraction)
    return rows - val - test, val, test
