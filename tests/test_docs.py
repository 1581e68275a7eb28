"""Docs that cannot rot silently: README.md and every docs/*.md page are checked against the code.

Each checker is a plain function of a Markdown text that returns the problems it finds (empty: none), so the
tests of the real pages and the tests that plant errors in a small text call the same code:
- `command_problems`: every `python -m pipeline COMMAND --option` is a command of `pipeline.cli.cli` with that
  option, and every `python -m pipeline.a.b` / `benchmarks.x` module exists;
- `key_problems`: every params key named in inline code (`train.epochs`, `data.<name>.window`, or a `-S key=value`)
  exists in the params schema (pipeline.params and the dataset kinds' specs);
- `path_problems`: every repository path named alone in inline code exists, and every DVC output path matches an
  output of dvc.yaml;
- `link_problems`: every relative link resolves to a file, and its #anchor to a heading of that file.
Only text a reader would copy is checked: fenced code blocks and inline code for commands, inline code for keys
and paths, so prose and error messages quoted whole (which may show a typo on purpose) are left alone.
"""

import dataclasses
import fnmatch
import re
from pathlib import Path

import pytest
import yaml

from pipeline.cli import cli
from pipeline.data.generators import KINDS
from pipeline.params import DATA_ENTRY_KEYS, SECTIONS, EvalParams, ModelParams, TrainParams, VariantParams

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_LINES = 250
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]

# --- reading Markdown -----------------------------------------------------------------------------------------

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def split_code(text: str) -> tuple[list[str], str]:
    """The lines inside fenced code blocks, and the rest of the text with those blocks blanked (line numbers
    kept)."""
    code, rest, fence = [], [], None
    for line in text.splitlines():
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
            rest.append("")
        elif fence is not None and line.strip().startswith(fence):
            fence = None
            rest.append("")
        elif fence is not None:
            code.append(line)
            rest.append("")
        else:
            rest.append(line)
    return code, "\n".join(rest)


def inline_code(text: str) -> list[str]:
    """The inline code spans outside fenced blocks, whitespace collapsed (a span may wrap across lines, never
    across a blank one)."""
    _, prose = split_code(text)
    spans = []
    for match in INLINE_CODE.finditer(prose):
        content = match.group(2)
        if re.search(r"\n\s*\n", content):
            continue
        spans.append(" ".join(content.split()))
    return spans


def prose_without_code(text: str) -> str:
    _, prose = split_code(text)
    return INLINE_CODE.sub(lambda m: " " * len(m.group(0)), prose)


def headings(text: str) -> list[str]:
    _, prose = split_code(text)
    return [m.group(2) for m in map(HEADING.match, prose.splitlines()) if m]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text only
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for heading in headings(text):
        base = slug(heading)
        count = seen.get(base, 0)
        result.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return result


# --- 1. commands and their options --------------------------------------------------------------------------

PIPELINE_COMMAND = re.compile(r"python -m pipeline(?=\s|$)(.*)")
MODULE = re.compile(r"python -m ((?:pipeline|benchmarks|tools)\.[\w.]+)")
SHELL_END = re.compile(r"\s#|;|&&|\|\||\s\|\s|`")
HELP_OPTIONS = {"-h", "--help"}


def _options(command) -> set[str]:
    names = set(HELP_OPTIONS)
    for param in command.params:
        names.update(getattr(param, "opts", ()))
        names.update(getattr(param, "secondary_opts", ()))
    return names


def _command_lines(text: str) -> list[str]:
    code, _ = split_code(text)
    return code + inline_code(text)


def command_problems(text: str, source: str = "<text>") -> list[str]:
    problems = []
    for line in _command_lines(text):
        for match in PIPELINE_COMMAND.finditer(line):
            words = SHELL_END.split(match.group(1), maxsplit=1)[0].split()
            if not words or words[0][0] in "<[.":  # `python -m pipeline`, `python -m pipeline <command>`
                continue
            if words[0].startswith("-"):
                command, name, given = cli, "", words
            else:
                name, given = words[0], words[1:]
                command = cli.commands.get(name)
                if command is None:
                    problems.append(f"{source}: `python -m pipeline {name}` is not a command; the commands are: "
                                    f"{', '.join(sorted(cli.commands))}")
                    continue
            known = _options(command)
            for word in given:
                option = word.split("=", 1)[0]
                if re.fullmatch(r"--?[A-Za-z][\w-]*", option) and option not in known:
                    problems.append(f"{source}: `python -m pipeline {name}` has no option {option}; its options "
                                    f"are: {', '.join(sorted(known))}")
        for match in MODULE.finditer(line):
            module = match.group(1).rstrip(".")
            base = ROOT.joinpath(*module.split("."))
            if not (base.with_suffix(".py").is_file() or (base / "__main__.py").is_file()):
                problems.append(f"{source}: `python -m {module}`: no module {module} in the repository")
    return problems


# --- 2. params keys -----------------------------------------------------------------------------------------


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


TRAIN_KEYS = _fields(TrainParams)
SECTION_KEYS = {"train": TRAIN_KEYS, "model": _fields(ModelParams), "evaluate": _fields(EvalParams)}
VARIANT_KEYS = _fields(VariantParams) | {"train", "datasets"}
KIND_KEYS = {name: _fields(KINDS.get(name).spec) | set(DATA_ENTRY_KEYS) for name in KINDS.names()}
DATA_KEYS = set().union(*KIND_KEYS.values())
FILE_SUFFIXES = {"py", "yaml", "yml", "json", "csv", "npz", "md", "png", "lock", "toml", "txt", "log", "html"}
KEY = r"[A-Za-z_]\w*(?:\.(?:[\w*]+|<\w+>))+"
KEY_SPAN = re.compile(rf"'?({KEY})'?(?:\s*[=:].*)?")
SET_PARAM = re.compile(r"-S\s+['\"]?([\w.<>]+?)=")


def _data_kinds() -> dict[str, str]:
    data = (yaml.safe_load((ROOT / "params.yaml").read_text()) or {}).get("data") or {}
    return {name: entry.get("kind") for name, entry in data.items() if isinstance(entry, dict)}


def _matches(part: str, keys: set[str]) -> bool:
    return part == "*" or (bool(fnmatch.filter(keys, part)) if "*" in part else part in keys)


def _train_problem(rest: list[str]) -> str | None:
    if rest and not _matches(rest[0], TRAIN_KEYS):
        return f"no train key '{rest[0]}'"
    return "nothing is below a train key" if len(rest) > 1 else None


def key_problem(key: str) -> str | None:
    """Why the dotted params path `key` is not in the schema, or None if it is. `<name>` stands for any entry
    name and `*` for any key."""
    section, *rest = key.split(".")
    if section not in SECTIONS:
        return f"no top-level section '{section}'"
    if section in SECTION_KEYS:
        if rest and not _matches(rest[0], SECTION_KEYS[section]):
            return f"no {section} key '{rest[0]}'"
        return f"nothing is below {section}.{rest[0]}" if len(rest) > 1 else None
    if section in ("models", "data"):
        if len(rest) < 2:
            return None
        name, sub, below = rest[0], rest[1], rest[2:]
        if section == "models":
            keys = VARIANT_KEYS
        else:
            keys = KIND_KEYS.get(_data_kinds().get(name), DATA_KEYS)
        if not _matches(sub, keys):
            return f"no {section}.<name> key '{sub}'"
        if sub == "train":
            return _train_problem(below)
        return f"nothing is below {section}.{name}.{sub}" if below else None
    return f"{section} has no keys below it" if rest else None


def key_mentions(text: str) -> list[str]:
    """The params paths a page names: inline code that is a dotted path under a params section (optionally
    `= value` or `: value`), and every `-S key=value` in code blocks and inline code."""
    found = []
    for span in inline_code(text):
        match = KEY_SPAN.fullmatch(span)
        if match and match.group(1).split(".")[0] in SECTIONS \
                and match.group(1).rsplit(".", 1)[-1] not in FILE_SUFFIXES:
            found.append(match.group(1))
    for line in _command_lines(text):
        found.extend(key for key in SET_PARAM.findall(line) if not key.isupper())  # `-S KEY=VALUE`: a placeholder
    return found


def key_problems(text: str, source: str = "<text>") -> list[str]:
    problems = []
    for key in key_mentions(text):
        reason = key_problem(key)
        if reason:
            problems.append(f"{source}: params key `{key}` is not in the schema: {reason}")
    return problems


# --- 3. repository paths ------------------------------------------------------------------------------------

REPO_FOLDERS = ("pipeline/", "tests/", "benchmarks/", "docs/", "data/raw/", "tools/", ".ci/")
REPO_FILES = ("dvc.yaml", "params.yaml", "Makefile", "requirements.lock", "pyproject.toml", "dvc.lock",
              "README.md")
OUTPUT_FOLDERS = ("metrics/", "plots/", "data/datasets/", "data/models/", "data/predictions/")
PATH_SPAN = re.compile(r"[\w.][\w./-]*")


def _dvc_patterns() -> list[list[re.Pattern]]:
    """Every path dvc.yaml names (outs, metrics, plots, deps), as one regex per path component."""
    stages = (yaml.safe_load((ROOT / "dvc.yaml").read_text()) or {}).get("stages") or {}
    paths = []
    for stage in stages.values():
        body = stage.get("do", stage)
        for field in ("outs", "metrics", "plots", "deps"):
            for entry in body.get(field) or []:
                paths.extend(entry if isinstance(entry, dict) else [entry])
    return [[re.compile(re.sub(r"\\\$\\\{[^}]*\\\}", "[^/]+", re.escape(part))) for part in p.split("/")]
            for p in paths]


def _is_output(path: str, patterns: list[list[re.Pattern]]) -> bool:
    """`path` is an output of dvc.yaml, a folder above one, or a file inside an output folder."""
    parts = path.strip("/").split("/")
    for pattern in patterns:
        common = min(len(parts), len(pattern))
        if all(pattern[i].fullmatch(parts[i]) for i in range(common)):
            return True
    return False


def path_mentions(text: str) -> list[str]:
    """Inline code that is exactly one path of the repository or of its DVC outputs; placeholders (`<dataset>`)
    and globs are not paths."""
    return [span for span in inline_code(text)
            if PATH_SPAN.fullmatch(span)
            and (span.startswith(REPO_FOLDERS + OUTPUT_FOLDERS) or span in REPO_FILES)]


def path_problems(text: str, source: str = "<text>") -> list[str]:
    problems, patterns = [], None
    for path in path_mentions(text):
        if path.startswith(OUTPUT_FOLDERS):
            patterns = patterns if patterns is not None else _dvc_patterns()
            if not _is_output(path, patterns):
                problems.append(f"{source}: `{path}` is no output of dvc.yaml")
        elif not (ROOT / path).exists():
            problems.append(f"{source}: `{path}` does not exist in the repository")
    return problems


# --- 4. links -----------------------------------------------------------------------------------------------

LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def links(text: str) -> list[str]:
    return LINK.findall(prose_without_code(text))


def link_problems(text: str, where: Path) -> list[str]:
    """`where` is the file the text is (or would be) in: relative links resolve from its folder."""
    problems = []
    for target in links(text):
        if SCHEME.match(target):
            continue
        path, _, anchor = target.partition("#")
        file = (where.parent / path).resolve() if path else where
        if path and not file.exists():
            problems.append(f"{where.name}: link ({target}) points to {path}, which does not exist")
            continue
        if anchor and file.suffix == ".md":
            page = file.read_text() if path else text
            if anchor not in anchors(page):
                problems.append(f"{where.name}: link ({target}): {file.name} has no heading #{anchor}")
    return problems


def linked_pages(text: str, where: Path) -> set[Path]:
    return {(where.parent / t.partition("#")[0]).resolve() for t in links(text)
            if not SCHEME.match(t) and t.partition("#")[0]}


# --- the real pages -----------------------------------------------------------------------------------------


def test_there_are_docs_pages():
    assert DOCS, "docs/ holds no .md page"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_commands_are_real(page):
    assert command_problems(page.read_text(), page.name) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_params_keys_are_real(page):
    assert key_problems(page.read_text(), page.name) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_paths_exist(page):
    assert path_problems(page.read_text(), page.name) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_resolve(page):
    assert link_problems(page.read_text(), page) == []


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_docs_page_opens_with_an_example(page):
    """Each page: its title, then a fenced block of commands to run, before any prose."""
    lines = [line for line in page.read_text().splitlines() if line.strip()]
    assert lines[0].startswith("# "), f"{page.name} does not start with a '# ' title"
    assert FENCE.match(lines[1]), f"{page.name}: the first thing after the title is not a code block"


def test_readme_is_short_and_links_every_page():
    text = README.read_text()
    count = len(text.splitlines())
    assert count <= README_MAX_LINES, f"README.md has {count} lines, more than {README_MAX_LINES}"
    missing = {p.resolve() for p in DOCS} - linked_pages(text, README)
    assert not missing, f"README.md does not link {sorted(p.name for p in missing)}"


# --- the checkers find planted errors -----------------------------------------------------------------------

PLANTED = """# Planted

```bash
python -m pipeline trian sine gru
python -m pipeline diff HEAD --jsn
python -m pipeline.nope STAGE
dvc exp run -S model.hiddn=20
```

Set `train.epoch` or `data.sine.windw` or `models.<name>.dataset` or `evaluate.horizons.x` (not `nope.key`),
see `pipeline/nope.py` and `plots/nope.md`, [a page](nope.md), [a heading](#no-such-heading) and
[another](../README.md#no-such-heading).
"""

CLEAN = """# Clean

```bash
python -m pipeline diff HEAD --json    # a comment --not-an-option
python -m pipeline sweep -S 'model.hidden=8,16' --no-diff && python -m pipeline check --params params.yaml
python -m pipeline.cli
dvc exp run -S 'datasets=[sine]' -S data.sine.train.epochs=300
```

`python -m pipeline repro --workers 2`, `python -m pipeline <command>`, `train.epochs`, `train.rollout_*`,
`train.*`, `model.hidden=20`, `data.<name>.window`, `data.sine.train`, `models.<name>.datasets`,
`models.rnn_fr.train.rollout_steps`, `evaluate.horizons`, `pipeline/cli.py`, `pipeline/files/`, `dvc.yaml`,
`metrics/eval/sine/gru.json`, `plots/leaderboard.md`, `plots/images/<dataset>/<model>.png`, `rollout.rmse`,
`params.yaml: unknown key 'model.hiden'` and [a heading](#clean), [the README](../README.md).
"""


def test_planted_command_and_option_are_reported():
    problems = command_problems(PLANTED)
    assert any("pipeline trian" in p for p in problems)
    assert any("--jsn" in p for p in problems)
    assert any("pipeline.nope" in p for p in problems)
    assert len(problems) == 3, problems


def test_planted_keys_are_reported():
    problems = "\n".join(key_problems(PLANTED))
    for key in ("train.epoch", "data.sine.windw", "models.<name>.dataset", "evaluate.horizons.x", "model.hiddn"):
        assert f"`{key}`" in problems
    assert len(key_problems(PLANTED)) == 5, problems  # `nope.key` names no params section: prose, not a key


def test_planted_paths_are_reported():
    problems = path_problems(PLANTED)
    assert any("pipeline/nope.py" in p for p in problems)
    assert any("plots/nope.md" in p for p in problems)
    assert len(problems) == 2, problems


def test_planted_links_are_reported():
    problems = link_problems(PLANTED, ROOT / "docs" / "planted.md")
    assert any("nope.md" in p and "does not exist" in p for p in problems)
    assert any("(#no-such-heading)" in p for p in problems)
    assert any("README.md#no-such-heading" in p for p in problems)
    assert len(problems) == 3, problems


def test_correct_text_is_not_reported():
    where = ROOT / "docs" / "clean.md"
    assert command_problems(CLEAN) == []
    assert key_problems(CLEAN) == []
    assert path_problems(CLEAN) == []
    assert link_problems(CLEAN, where) == []


def test_slug_follows_github():
    assert slug("The stages of one pipeline on the cluster: `python -m pipeline repro`") == \
        "the-stages-of-one-pipeline-on-the-cluster-python--m-pipeline-repro"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}
