"""The `ttplan` command group; every user error ends as one line on stderr and exit code 2.

Commands are registered by name and imported only when run (or their own help is asked for), so
`ttplan --help` loads neither torch nor matplotlib; each command imports heavy modules inside its body.
"""

from __future__ import annotations

import importlib
import sys

import click

from ttplan import __version__
from ttplan.errors import TTPlanError

#: command name -> "module:attribute" of its click command, in the order `--help` lists them
COMMANDS = {
    "layer": "ttplan.cli.layer:layer",
    "plan": "ttplan.cli.plan:plan",
    "sweep": "ttplan.cli.sweep:sweep",
    "plot": "ttplan.cli.plot:plot",
    "train": "ttplan.cli.train:train_command",
    "emit": "ttplan.cli.emit:emit",
    "export": "ttplan.cli.export:export",
    "bench": "ttplan.cli.bench:bench",
    "calibrate": "ttplan.cli.calibrate:calibrate",
}

#: each command's first docstring paragraph (a test keeps them equal), so `ttplan --help` imports no command
SUMMARIES = {
    "layer": "Plan one TT-conv layer: MACs, parameters and memory of dense, the published order and the best order.",
    "plan": "Plan every conv layer of an architecture: per-layer costs, then model totals and FLOPs↓/params↓.",
    "sweep": "Sweep ranks for one layer: parameter reduction and MACs vs dense of the published and the best order, "
             "for classical (3 modes), hodec with 1 (tucker2), 2 and 3 modes a side, the tensor ring (3 modes) and CP.",
    "plot": "Draw figures, each saved as PNG and SVG: `sweep FILE`, `arch FILE`, `plan` (one layer), `admm RUN_DIR`.",
    "train": "Train with ADMM towards TT formats (a layer config, or plan's policy), decompose, fine-tune.",
    "emit": "Write a standalone PyTorch file whose layers run the planned contraction order.",
    "export": "Export a train run's TT model as a .pt2 (torch.export) or ONNX file whose TT layers are stock ops.",
    "bench": "Benchmarks; each writes a Markdown report under reports/.",
    "calibrate": "Time the ops plans lower to (mm, bmm, conv2d) and fit per-op overhead, bandwidth and throughput.",
}


class Interrupted(Exception):
    """Ctrl-C during a command; `message` says what was kept and how to continue."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use (names and summaries come from tables)."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, summaries: dict[str, str] | None = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})
        self.summaries = dict(summaries or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*self.lazy, *(name for name in super().list_commands(ctx) if name not in self.lazy)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, attribute = self.lazy[cmd_name].split(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the summaries table, so help imports no command module."""
        rows = [(name, self.summaries.get(name) or self.get_command(ctx, name).get_short_help_str(80))
                for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class TTPlanGroup(LazyGroup):
    """The top-level group: user errors as one line (no usage block, no traceback); Ctrl-C exits 130."""

    def main(self, *args, **kwargs):  # noqa: D401 - click's signature
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except TTPlanError as err:
            click.echo(f"Error: {err}", err=True)
            sys.exit(2)
        except Interrupted as err:
            click.echo(f"Interrupted: {err.message}", err=True)
            sys.exit(130)
        except click.exceptions.NoArgsIsHelpError as err:
            click.echo(err.ctx.get_help() if err.ctx else str(err))
            sys.exit(0)
        except click.ClickException as err:
            click.echo(f"Error: {err.format_message()}", err=True)
            sys.exit(err.exit_code)
        except click.exceptions.Exit as err:
            sys.exit(err.exit_code)
        except (click.Abort, KeyboardInterrupt) as err:
            if isinstance(err, KeyboardInterrupt) or isinstance(err.__context__, KeyboardInterrupt):
                click.echo("Interrupted: nothing was written (ttplan writes a file only once it is complete)",
                           err=True)
                sys.exit(130)
            click.echo("Aborted.", err=True)
            sys.exit(1)


@click.group(cls=TTPlanGroup, lazy=COMMANDS, summaries=SUMMARIES,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, message="ttplan %(version)s")
def cli() -> None:
    """Plan, cost and run contraction orders for tensor-train (TT) decomposed conv layers.

    Costs are in MACs (one multiply-accumulate); FLOPs = 2 x MACs.
    """
