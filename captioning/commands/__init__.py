"""Subcommand handlers: each module has run(args) -> exit status."""
