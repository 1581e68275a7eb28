"""A user's CSV file read into series, the way researchers keep their data.

One file may hold one series (a value column, rows in time order) or many in long format: an id column says
which series a row belongs to, as in Nixtla's statsforecast and darts' `TimeSeries.from_group_dataframe`. A
series may have several value columns, modelled jointly. An optional time column orders the rows of each
series; a repeated time is an error, uneven steps are reported. Gaps (missing cells) are an error unless
`missing:` says how to fill them. Every problem is one DataError that names the file, the series and the
file's line, so that a user can go straight to it.
"""

import dataclasses
from pathlib import Path

import numpy as np

from pipeline.errors import DataError

MISSING = ("error", "interpolate", "ffill", "drop")
# Cells that mean "no value": empty, and the spellings R, pandas and spreadsheets write for it.
NA_CELLS = frozenset({"", "na", "n/a", "nan", "null", "none", "#n/a"})


@dataclasses.dataclass(frozen=True)
class Series:
    """One series: its values (L, F) in file order after sorting by time, and each row's line in the file."""

    name: str
    values: np.ndarray
    lines: np.ndarray


@dataclasses.dataclass(frozen=True)
class Table:
    series: list[Series]
    filled: int = 0           # cells filled by `interpolate` or `ffill`
    dropped: int = 0          # rows removed by `drop`
    notes: tuple[str, ...] = ()  # what a user should know but need not fix (uneven time steps)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Which columns mean what; `key` is the params entry (`data.<name>`) that messages tell the user to fix."""

    columns: tuple[str, ...]
    key: str = "data.<name>"
    column_key: str = "column"
    id_column: str | None = None
    time_column: str | None = None
    missing: str = "error"


def read(path: Path, layout: Layout) -> Table:
    """The file's series, or a DataError that says what is wrong and where."""
    frame = _read_frame(path, layout.key)
    _require_columns(path, frame, layout)
    lines = np.arange(len(frame)) + 2  # the header is line 1; blank lines were kept as rows
    if layout.id_column is None:
        groups = [("", np.arange(len(frame)))]
    else:
        ids = frame[layout.id_column].astype(str).str.strip()
        empty = np.flatnonzero((ids == "").to_numpy())
        if len(empty):
            raise DataError(f"{path}: line {lines[empty[0]]} has no value in the id column "
                            f"'{layout.id_column}'; fill it or delete the row")
        codes, names = ids.factorize(sort=True)  # series in order of their id, whatever the order of rows
        groups = [(str(name), np.flatnonzero(codes == i)) for i, name in enumerate(names)]
    series, filled, dropped, notes = [], 0, 0, []
    for name, rows in groups:
        label = f" in series '{name}'" if layout.id_column else ""
        part = frame.iloc[rows]
        part_lines = lines[rows]
        if layout.time_column is not None:
            order, note = _time_order(path, part[layout.time_column], part_lines, label, name)
            part, part_lines = part.iloc[order], part_lines[order]
            if note:
                notes.append(note)
        values, missing = _numbers(path, part, part_lines, layout.columns, label)
        if missing.any():
            values, part_lines, count = _fill(path, values, missing, part_lines, layout, label)
            filled += count if layout.missing != "drop" else 0
            dropped += count if layout.missing == "drop" else 0
        series.append(Series(name, values, part_lines))
    return Table(series, filled, dropped, tuple(notes))


def _read_frame(path: Path, key: str):
    import pandas as pd  # only user data needs pandas

    if not path.is_file():
        raise DataError(f"{path} does not exist; put your CSV file there or fix {key}.path")
    try:
        # Blank lines are kept as rows (of empty cells) so that reported line numbers match the file.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path} cannot be read as CSV: {reason}") from None
    filled = np.flatnonzero((frame.fillna("").astype(str).apply(lambda c: c.str.strip()) != "").any(axis=1))
    return frame.iloc[:filled[-1] + 1] if len(filled) else frame.iloc[:0]  # blank lines at the end are no data


def _require_columns(path: Path, frame, layout: Layout) -> None:
    wanted = [(c, layout.column_key) for c in layout.columns]
    wanted += [(c, k) for c, k in ((layout.id_column, "id_column"), (layout.time_column, "time_column")) if c]
    for column, key in wanted:
        if column not in frame.columns:
            raise DataError(f"{path} has no column '{column}' ({layout.key}.{key}); columns are: "
                            f"{', '.join(map(str, frame.columns))}")


def _time_order(path: Path, cells, lines: np.ndarray, label: str, name: str) -> tuple[np.ndarray, str]:
    """The rows sorted by time (stably), and a note when the steps between times are uneven. A time that cannot
    be read or that repeats is an error naming its line(s)."""
    import pandas as pd

    text = cells.fillna("").astype(str).str.strip()
    numeric = pd.to_numeric(text, errors="coerce")
    if numeric.notna().all():
        times = numeric.to_numpy(dtype=float)
    else:
        parsed = pd.to_datetime(text, errors="coerce", format="mixed")
        bad = np.flatnonzero(parsed.isna().to_numpy())
        if len(bad):
            raise DataError(f"{path}: time {text.iloc[bad[0]]!r} on line {lines[bad[0]]}{label} is neither a "
                            "number nor a date")
        times = parsed.to_numpy().astype("datetime64[ns]").astype(np.int64).astype(float)
    order = np.argsort(times, kind="stable")
    repeated = np.flatnonzero(np.diff(times[order]) == 0)
    if len(repeated):
        first, second = order[repeated[0]], order[repeated[0] + 1]
        raise DataError(f"{path}: time {text.iloc[second]!r}{label} appears twice (lines {lines[first]} and "
                        f"{lines[second]}); each time must appear once per series")
    steps = np.diff(times[order])
    note = ""
    if len(steps) and not np.allclose(steps, np.median(steps), rtol=1e-9, atol=0):
        usual = np.median(steps)
        uneven = int(np.sum(~np.isclose(steps, usual, rtol=1e-9, atol=0)))
        who = f"series '{name}'" if label else "the series"
        note = (f"{who}: {uneven} of {len(steps)} time steps differ from the usual one (gaps or uneven "
                "sampling); the models see one row per step")
    return order, note


def _numbers(path: Path, part, lines: np.ndarray, columns: tuple[str, ...], label: str
             ) -> tuple[np.ndarray, np.ndarray]:
    """(L, F) float64 values with NaN where a cell is missing, and the missing mask; text is an error."""
    import pandas as pd

    values, missing = [], []
    for column in columns:
        cells = part[column].fillna("").astype(str).str.strip()
        gap = cells.str.lower().isin(NA_CELLS).to_numpy()
        numbers = pd.to_numeric(cells.where(~gap, "nan"), errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(numbers) & ~gap)
        if len(bad):
            raise DataError(f"{path}: column '{column}' has a non-numeric value {cells.iloc[bad[0]]!r} "
                            f"on line {lines[bad[0]]}{label}")
        values.append(numbers)
        missing.append(gap)
    return np.stack(values, axis=1), np.stack(missing, axis=1)


def _fill(path: Path, values: np.ndarray, missing: np.ndarray, lines: np.ndarray, layout: Layout, label: str
          ) -> tuple[np.ndarray, np.ndarray, int]:
    """Apply `missing:` to one series: (values, their lines, how many cells were filled or rows dropped)."""
    if layout.missing == "error":
        rows = np.flatnonzero(missing.any(axis=1))
        column = layout.columns[int(np.argmax(missing[rows[0]]))]
        raise DataError(f"{path}: column '{column}' has {int(missing[:, layout.columns.index(column)].sum())} "
                        f"missing cell(s), first on line {lines[rows[0]]}{label}; fill those cells, or set "
                        f"{layout.key}.missing to interpolate, ffill or drop")
    if layout.missing == "drop":
        keep = ~missing.any(axis=1)
        return values[keep], lines[keep], int((~keep).sum())
    import pandas as pd

    empty = np.flatnonzero(missing.all(axis=0))
    if len(empty):
        raise DataError(f"{path}: column '{layout.columns[empty[0]]}' has no value at all{label}; "
                        f"{layout.missing} needs at least one")
    frame = pd.DataFrame(values)
    if layout.missing == "interpolate":  # straight lines between neighbours; the ends take the nearest value
        frame = frame.interpolate(limit_direction="both")
    else:  # ffill: the last value seen; cells before the first value take that first value
        frame = frame.ffill().bfill()
    return frame.to_numpy(dtype=float), lines, int(missing.sum())
