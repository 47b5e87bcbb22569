"""The Typer application every command registers on, and ``--version``."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import EXIT_OK
from ..version import __version__

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Make timm image classifiers robust to adversarial attacks, and measure it honestly.",
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"hardenctl {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit")
    ] = False,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help="On an internal error (exit 3) print the traceback too; "
            "accepted anywhere on the command line (or HARDENCTL_DEBUG=1)",
        ),
    ] = False,
) -> None:
    """Make timm image classifiers robust to adversarial attacks, and measure it honestly."""
