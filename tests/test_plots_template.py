"""tools/plots_template.py: the offline HTML template for `dvc plots show --html-template` (no browser, no
network). Skipped where vl-convert-python is absent: only `make plots` installs it."""

import importlib.util
import re
from pathlib import Path

import pytest

pytest.importorskip("vl_convert", reason="vl-convert-python is not installed (`make plots` installs it)")

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "plots_template.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("plots_template", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def template(tool, tmp_path_factory) -> str:
    path = tool.write_template(tmp_path_factory.mktemp("plots") / "build" / "plots-template.html")
    return path.read_text(encoding="utf-8")


def test_template_has_the_plots_placeholder_once_and_not_the_cdn_one(template):
    assert template.count("{plot_divs}") == 1
    # dvc_render fills {scripts} with the CDN <script src="https://cdn.jsdelivr.net/..."> tags.
    assert "{scripts}" not in template


def test_template_loads_no_script_from_the_network(template):
    srcs = re.findall(r"<script[^>]*\bsrc\s*=\s*['\"]?([^'\" >]+)", template, flags=re.IGNORECASE)
    assert not [src for src in srcs if src.lower().startswith(("http://", "https://", "//"))]
    assert "cdn.jsdelivr" not in template


def test_template_inlines_vega_embed_as_a_global(template):
    # dvc_render's inline scripts call the global vegaEmbed('#id', spec) while the page is parsed, so the
    # bundle must come before the plots.
    before_plots = template[: template.index("{plot_divs}")]
    assert "window.vegaEmbed=" in before_plots
    assert "window.vega=" in before_plots and "window.vegaLite=" in before_plots
    assert len(before_plots) > 500_000  # the whole bundle, not a reference to it


def test_dvc_render_fills_the_template_without_cdn_tags(tool, tmp_path):
    from dvc_render import VegaRenderer, render_html

    template_path = tool.write_template(tmp_path / "t.html")
    points = [{"step": i, "loss": 1.0 / (i + 1), "rev": "workspace"} for i in range(5)]
    renderer = VegaRenderer(points, "loss.csv", x="step", y="loss")
    page = Path(render_html([renderer], tmp_path / "out" / "index.html", html_template=template_path))
    text = page.read_text(encoding="utf-8")
    assert "vegaEmbed('#loss_csv', spec)" in text
    assert "cdn.jsdelivr" not in text and "{plot_divs}" not in text
    assert text.index("window.vegaEmbed=") < text.index("vegaEmbed('#loss_csv'")
