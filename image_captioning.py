#!/usr/bin/env python3
"""Image captioning tool: run without arguments for the menu, or with a subcommand (--help)."""

import sys

from captioning.cli.main import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
