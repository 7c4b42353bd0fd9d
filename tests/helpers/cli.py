"""The one helper module for CLI tests: the reference layer's options, a runner, and the one-line error check."""

from click.testing import CliRunner

from ttplan.cli.main import cli

#: ResNet-18 layer3.0.conv1
GEOMETRY = ["--in-channels", "128", "--out-channels", "256", "--kernel-size", "3", "--stride", "2",
            "--padding", "1", "--input-size", "28"]


def run(args: list[str], **kwargs):
    """Invoke `ttplan ARGS` in-process (stdout and stderr kept apart); exceptions other than exits propagate."""
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, **kwargs)


def one_line_error(result, *needles: str) -> str:
    """Assert exit code 2 and exactly one `Error: ...` line on stderr (progress labels aside) containing every
    needle; return it."""
    assert result.exit_code == 2, result.output
    lines = [x for x in result.stderr.splitlines() if x.strip() and x.strip() != "planning"]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
