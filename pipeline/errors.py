"""Errors a user can meet, each printed by the CLI as one line with a non-zero exit and no traceback.

Library code raises these instead of calling `sys.exit` so that it stays testable; they subclass
`click.ClickException` so that click prints `Error: <message>` and exits with status 1.
"""

import click


class PipelineError(click.ClickException):
    """Base class: a problem the user can fix, described in one line."""


class ParamsError(PipelineError):
    """params.yaml has a missing, unknown, mistyped or out-of-range value."""


class DataError(PipelineError):
    """A user's data file (a CSV series) cannot be used."""


class ArtifactError(PipelineError):
    """A file an earlier stage should have written is missing or corrupt."""


class DeviceError(PipelineError):
    """The configured device does not exist on this machine."""


class Interrupted(PipelineError):
    """The stage was stopped (Ctrl-C or SIGTERM) before it finished; it wrote nothing, since outputs are atomic."""

    exit_code = 130  # the shell's convention for a process ended by SIGINT


class SweepError(PipelineError):
    """A sweep that cannot start (bad -S, unclean or unpushed repository, no DVC remote, no scheduler)."""


class ClusterReproError(SweepError):
    """A cluster repro that cannot start (unclean or unpushed repository, no DVC remote, no scheduler, a cycle)."""
