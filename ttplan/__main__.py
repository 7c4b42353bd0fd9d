"""`python -m ttplan` runs the CLI (also under torchrun)."""

from ttplan.cli.main import cli

if __name__ == "__main__":
    cli(prog_name="ttplan")
