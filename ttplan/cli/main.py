"""The `ttplan` command group; every user error ends as one line on stderr and exit code 2."""

from __future__ import annotations

import sys

import click

from ttplan import __version__
from ttplan.errors import TTPlanError


class TTPlanGroup(click.Group):
    """A click group that prints user errors as one line (no usage block, no traceback)."""

    def main(self, *args, **kwargs):  # noqa: D401 - click's signature
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except TTPlanError as err:
            click.echo(f"Error: {err}", err=True)
            sys.exit(2)
        except click.exceptions.NoArgsIsHelpError as err:
            click.echo(err.ctx.get_help() if err.ctx else str(err))
            sys.exit(0)
        except click.ClickException as err:
            click.echo(f"Error: {err.format_message()}", err=True)
            sys.exit(err.exit_code)
        except click.exceptions.Exit as err:
            sys.exit(err.exit_code)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)


@click.group(cls=TTPlanGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, message="ttplan %(version)s")
def cli() -> None:
    """Plan, cost and run contraction orders for tensor-train (TT) decomposed conv layers.

    Costs are in MACs (one multiply-accumulate); FLOPs = 2 x MACs.
    """


def _register() -> None:
    """Attach the commands (one module each)."""
    from ttplan.cli.layer import layer

    cli.add_command(layer)
    from ttplan.cli.plan import plan

    cli.add_command(plan)
    from ttplan.cli.sweep import sweep

    cli.add_command(sweep)
    from ttplan.cli.plot import plot

    cli.add_command(plot)
    from ttplan.cli.train import train_command

    cli.add_command(train_command)
    from ttplan.cli.emit import emit

    cli.add_command(emit)
    from ttplan.cli.bench import bench

    cli.add_command(bench)
    from ttplan.cli.calibrate import calibrate

    cli.add_command(calibrate)


_register()
