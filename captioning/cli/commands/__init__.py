"""Subcommand handlers: each module has ``run(args) -> exit status``, imported when its command runs."""
