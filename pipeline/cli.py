"""Command-line interface: one command per DVC stage, each a thin wrapper that loads params.yaml once.

Errors the user can fix (PipelineError) print as one line with exit status 1; nothing prints a traceback.
"""

import signal
from typing import Any

import click

from pipeline import params as params_module
from pipeline.files.artifacts import Paths
from pipeline.errors import Interrupted, ParamsError

PARAMS_OPTION = click.option("--params", "params_path", default="params.yaml", show_default=True,
                             type=click.Path(dir_okay=False), help="The params file to read.")


def _load(params_path: str, dataset: str | None = None, model: str | None = None) -> params_module.Params:
    """Load params once and check that the names on the command line are configured, before any heavy import."""
    params = params_module.load(params_path)
    if dataset is not None and dataset not in params.datasets:
        raise ParamsError(f"dataset '{dataset}' is not listed in params.yaml `datasets:` "
                          f"({', '.join(params.datasets)})")
    if model is not None:
        params.variant(model)
    return params


class StageGroup(click.Group):
    """Ctrl-C and SIGTERM (`dvc queue kill`, a job scheduler) end a stage with one line instead of a traceback.

    Every output is renamed into place only once complete, so a stopped stage leaves its old outputs or none."""

    def invoke(self, ctx: click.Context) -> Any:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted("interrupted before the stage finished; nothing was written. "
                              "Run `dvc repro` to run it again") from None
        finally:
            signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@click.group(cls=StageGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rnn-dvc-pipeline")
def cli() -> None:
    """RNN experiment pipeline: the commands behind each DVC stage (run them through `dvc repro`)."""


@cli.command()
@click.argument("dataset")
@PARAMS_OPTION
def generate(dataset: str, params_path: str) -> None:
    """Generate DATASET (a `data:` entry) into data/datasets/DATASET.npz, with a preview PNG."""
    from pipeline.stages import generate as stage

    stage.run(_load(params_path, dataset), dataset, Paths())


@cli.command()
@click.argument("dataset")
@click.argument("model")
@PARAMS_OPTION
def train(dataset: str, model: str, params_path: str) -> None:
    """Train MODEL (a `models:` entry) on DATASET; writes its checkpoint, metrics and loss curve."""
    params = _load(params_path, dataset, model)
    from pipeline.stages import train as stage  # torch is imported only once the arguments are known to be good

    stage.run(params, dataset, model, Paths())


@cli.command()
@click.argument("dataset")
@click.argument("model", required=False)
@PARAMS_OPTION
def evaluate(dataset: str, model: str | None, params_path: str) -> None:
    """Evaluate every trained model of DATASET (or only MODEL) on its held-out data, including the free-running
    rollout."""
    params = _load(params_path, dataset, model)
    from pipeline.stages import evaluate as stage

    if model is None:
        stage.run_dataset(params, dataset, Paths())
    else:
        stage.run(params, dataset, model, Paths())


@cli.command()
@click.argument("dataset")
@PARAMS_OPTION
def compare(dataset: str, params_path: str) -> None:
    """Overlay every model of DATASET: comparison CSVs for `dvc plots` and a comparison PNG."""
    params = _load(params_path, dataset)
    from pipeline.stages import compare as stage

    stage.compare(params, dataset, Paths())


@cli.command()
@PARAMS_OPTION
def report(params_path: str) -> None:
    """Summarize every dataset and model: metrics/summary.json and the leaderboard."""
    params = _load(params_path)
    from pipeline.stages import report as stage

    stage.summarize(params, Paths())


@cli.command()
@PARAMS_OPTION
def check(params_path: str) -> None:
    """Validate params.yaml without running anything (`make repro` runs this before `dvc repro`).

    Every stage validates the whole file too, but by then DVC has already deleted that stage's old outputs."""
    params = _load(params_path)
    if params.device not in ("auto", "cpu"):  # an absent device fails the first train stage, after DVC deleted
        from pipeline.learning.runtime import resolve_device  # its outputs: say it here (torch only for this)

        resolve_device(params.device)
    pairs = sum(len(params.models_on(ds)) for ds in params.datasets)
    click.echo(f"{params_path}: OK ({len(params.datasets)} datasets, {len(params.models)} models, "
               f"{pairs} pairs, device {params.device})")
    for name in params.runs_nowhere():
        click.echo(f"note: models.{name} runs on none of the listed datasets (its datasets: "
                   f"{', '.join(params.models[name].datasets)}); its train stages write a not-run record")


@cli.command()
@click.argument("a", default="HEAD", required=False)
@click.argument("b", default="workspace", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of rows instead of the table.")
@click.option("--fdr", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05, show_default=True,
              help="False discovery rate over the whole diff (Benjamini-Hochberg q-values).")
@click.option("--per-comparison", is_flag=True,
              help="Judge each row by its own p at 0.05 instead (one pre-planned question).")
@click.option("--suggest", is_flag=True, help="Print the -S settings that would settle the undecided rows.")
def diff(a: str, b: str, as_json: bool, fdr: float, per_comparison: bool, suggest: bool) -> None:
    """Compare the eval metrics of A (default HEAD) with B (default the workspace), pair by pair.

    A and B are git revisions, experiment names or `workspace`. Each headline metric gets the two medians over
    replicas, the Hodges-Lehmann effect with its interval, and a verdict, better / worse / within seed noise /
    unchanged, from an exact rank test over replicas with the false discovery rate controlled over the diff."""
    from pipeline.experiments import diff as stage

    click.echo(stage.run(a, b, as_json, fdr=None if per_comparison else fdr, suggestion=suggest))


@cli.command()
@click.option("-S", "--set-param", "specs", multiple=True, metavar="KEY=V1,V2,...",
              help="A param and its values, as `dvc exp run -S`; several -S give the cartesian product.")
@click.option("--workers", type=int, default=None,
              help="Start a Dask LocalCluster of this many worker processes (default: this machine's cores).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Use an existing Dask cluster instead (e.g. tcp://host:8786).")
@click.option("--threads", type=int, default=None,
              help="Torch threads (and cores) per experiment (default: cores / workers; 1 with --scheduler).")
@click.option("--git-remote", default="origin", show_default=True, help="The git remote workers clone and push to.")
@click.option("--prefix", default="sweep", show_default=True, help="Experiment names start with this.")
@click.option("--diff/--no-diff", default=True, show_default=True,
              help="Summarize `python -m pipeline diff BASE EXPERIMENT` for each experiment.")
def sweep(specs: tuple[str, ...], workers: int | None, scheduler: str | None, threads: int | None, git_remote: str,
          prefix: str, diff: bool) -> None:
    """Run a parameter sweep as DVC experiments on a Dask cluster, one fresh clone per experiment.

    Workers exchange everything through the git remote (base commit, experiment refs) and the default DVC remote
    (outputs, run-cache); the experiments are then pulled here and shown. Exit status 1 if any failed; running the
    same sweep again redoes only those."""
    from pipeline.cluster import sweep as stage

    failed = stage.run(list(specs), workers, scheduler, threads, git_remote, prefix, diff, echo=click.echo)
    if failed:
        raise SystemExit(1)


@cli.command()
@click.option("--workers", type=int, default=None,
              help="Start a Dask LocalCluster of this many worker processes (default: this machine's cores).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Use an existing Dask cluster instead (e.g. tcp://host:8786).")
@click.option("--threads", type=int, default=None,
              help="Torch threads (and cores) per stage job (default: cores / workers; 1 with --scheduler).")
@click.option("--git-remote", default="origin", show_default=True, help="The git remote workers clone.")
def repro(workers: int | None, scheduler: str | None, threads: int | None, git_remote: str) -> None:
    """Reproduce the pipeline's stages on a Dask cluster, in dependency waves, one fresh clone per stage.

    Each job runs `dvc repro --pull STAGE` and pushes its outputs and run-cache; then `dvc repro --pull` here
    restores every output from the run-cache and writes dvc.lock. Exit status 1 if a stage failed; running the
    same command again restores the finished stages and runs the rest."""
    from pipeline.cluster import repro as stage

    if stage.run(workers, scheduler, threads, git_remote, echo=click.echo):
        raise SystemExit(1)


def main() -> None:
    cli(prog_name="python -m pipeline")
