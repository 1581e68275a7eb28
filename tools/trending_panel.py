"""Write data/raw/trending_panel.csv: a synthetic weekly panel whose series trend, the case that window
normalisation (data.<name>.normalise) is for.

Eight series of 208 weeks (four years), each a level plus its own linear trend (slopes from -0.6 to 2.4 a week, so
the test part of most series lies outside the range of its training part), a yearly season of its own amplitude
and phase, and AR(1) noise; about 2% of the values are left empty (gaps, for `missing: interpolate`). Deterministic
from SEED: running it again writes the same bytes, so the committed file can be checked against it
(tests/test_normalisation.py does).

    python tools/trending_panel.py            # rewrites data/raw/trending_panel.csv
"""

import argparse
import datetime
from pathlib import Path

import numpy as np

SEED = 31
SERIES = 8
WEEKS = 208
PERIOD = 52.0  # weeks in a season
GAP_FRACTION = 0.02
OUT = Path(__file__).resolve().parents[1] / "data" / "raw" / "trending_panel.csv"


def panel(seed: int = SEED) -> list[tuple[str, str, float | None]]:
    """Rows (series, week, value or None for a gap), in long format, series by series."""
    rng = np.random.default_rng(seed)
    slopes = np.linspace(-0.6, 2.4, SERIES)[rng.permutation(SERIES)]
    levels = rng.uniform(80.0, 160.0, SERIES)
    amplitudes = rng.uniform(4.0, 15.0, SERIES)
    phases = rng.uniform(0.0, 2 * np.pi, SERIES)
    start = datetime.date(2019, 1, 6)
    t = np.arange(WEEKS, dtype=np.float64)
    rows = []
    for i in range(SERIES):
        noise = np.zeros(WEEKS)
        shocks = rng.normal(0.0, 3.0, WEEKS)
        for k in range(WEEKS):  # AR(1), phi 0.5: noise that lingers a few weeks, as real series' does
            noise[k] = (0.5 * noise[k - 1] if k else 0.0) + shocks[k]
        values = levels[i] + slopes[i] * t + amplitudes[i] * np.sin(2 * np.pi * t / PERIOD + phases[i]) + noise
        gaps = rng.random(WEEKS) < GAP_FRACTION
        gaps[[0, -1]] = False  # a series starts and ends with a value: interpolation needs both ends
        for k in range(WEEKS):
            week = (start + datetime.timedelta(weeks=k)).isoformat()
            rows.append((f"s{i + 1}", week, None if gaps[k] else round(float(values[k]), 2)))
    return rows


def text(rows: list[tuple[str, str, float | None]]) -> str:
    lines = ["series,week,value"] + [f"{s},{w},{'' if v is None else f'{v:.2f}'}" for s, w, v in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=OUT)
    args = parser.parse_args()
    args.output.write_text(text(panel()))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
