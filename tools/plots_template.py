"""Write an HTML template for `dvc plots show --html-template` that renders every chart offline.

Why this exists: the page `dvc plots show` writes by default loads vega, vega-lite and vega-embed from
cdn.jsdelivr.net (hard-coded in dvc_render/vega.py). Without internet access those scripts never load and
every vega chart stays blank; only the PNG plots show. No package installed with DVC ships that JavaScript.

This script takes one self-contained bundle of the three libraries from the PyPI package vl-convert-python
(`vl_convert.javascript_bundle()`, a classic script of about 0.9 MB, no imports, that sets `window.vegaEmbed`,
`window.vega` and `window.vegaLite`) and inlines it in the page's <head>. dvc_render fills the template by plain
string replacement: `{plot_divs}` receives one `<div>` per plot whose inline script calls
`vegaEmbed('#id', spec)` while the page is parsed, so the bundle must already have run by then, which a
synchronous script in <head> guarantees. The template leaves out `{scripts}`, the placeholder dvc_render fills
with the CDN <script> tags, so the page references no CDN at all.

Usage (what `make plots` runs):

    python tools/plots_template.py -o build/plots-template.html
    dvc plots show --html-template build/plots-template.html -o dvc_plots
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_OUTPUT = Path("build/plots-template.html")

# DVC's plot templates declare Vega-Lite v5 ("$schema": ".../vega-lite/v5.json"); bundling the newest v5 that
# vl-convert ships keeps vega-embed from warning about a major-version mismatch. Must be one of
# vl_convert.get_vegalite_versions().
VEGA_LITE_VERSION = "5.21"

# The placeholders dvc_render's HTML.embed() replaces (dvc_render/html.py). The bundle must contain none of
# them, or its text would be rewritten, and the template must not contain "{scripts}" (the CDN tags).
PLOTS_PLACEHOLDER = "{plot_divs}"
CDN_PLACEHOLDER = "{scripts}"
REFRESH_PLACEHOLDER = "{refresh_tag}"

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
    <!-- vega __VEGA__, vega-lite __VEGA_LITE__, vega-embed __VEGA_EMBED__, inlined from vl-convert-python
         by tools/plots_template.py so that the page renders offline -->
    <script type="text/javascript">
__BUNDLE__
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def build_template(vl_version: str = VEGA_LITE_VERSION) -> str:
    """The template text, with the vega, vega-lite and vega-embed bundle inlined."""
    try:
        import vl_convert
    except ImportError:
        raise SystemExit(
            "Error: vl-convert-python is not installed; `make plots` installs the pinned version"
        ) from None

    bundle = vl_convert.javascript_bundle(vl_version=vl_version)
    # Text that would end the inline <script> early, or that dvc_render would replace inside the bundle.
    lowered = bundle.lower()
    for bad in ("</script", "<!--", PLOTS_PLACEHOLDER, CDN_PLACEHOLDER, REFRESH_PLACEHOLDER):
        if bad in lowered or bad in bundle:
            raise SystemExit(f"Error: the vl-convert JavaScript bundle contains {bad!r}; cannot inline it")
    if "window.vegaEmbed" not in bundle:
        raise SystemExit("Error: the vl-convert JavaScript bundle does not define window.vegaEmbed")

    page = (
        PAGE.replace("__VEGA__", vl_convert.get_vega_version())
        .replace("__VEGA_LITE__", vl_version)
        .replace("__VEGA_EMBED__", vl_convert.get_vega_embed_version())
    )
    # Insert the bundle last, so that no replacement above can touch its text.
    return page.replace("__BUNDLE__", bundle)


def write_template(output: Path = DEFAULT_OUTPUT, vl_version: str = VEGA_LITE_VERSION) -> Path:
    """Write the template to `output` (parent folders created) and return the path."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(build_template(vl_version), encoding="utf-8")
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-o", "--output", type=Path, default=DEFAULT_OUTPUT, help=f"where to write (default {DEFAULT_OUTPUT})"
    )
    parser.add_argument(
        "--vl-version", default=VEGA_LITE_VERSION, help=f"Vega-Lite version to bundle (default {VEGA_LITE_VERSION})"
    )
    args = parser.parse_args(argv)
    path = write_template(args.output, args.vl_version)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
