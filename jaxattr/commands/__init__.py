"""CLI subcommands, one module each (see jaxattr/cli.py)."""
