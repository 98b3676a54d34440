"""``serve``: the captioning web page and HTTP API (captioning/web/), until Ctrl-C."""

from __future__ import annotations

import argparse
import dataclasses

from captioning import config
from captioning.cli.runtime import EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C.

    Args:
        args: Parsed ``serve`` options (model, host, port, max_batch, batch_wait_ms).

    Returns:
        0 after a clean shutdown. Problems found before serving raise ``CaptioningError``
        (one line, exit 1 through ``cli.run_command``).
    """
    from captioning.web.server import serve

    settings = dataclasses.replace(config.ServeConfig(), batch_max_images=args.max_batch,
                                   batch_wait_ms=args.batch_wait_ms)
    serve(args.model, host=args.host, port=args.port, log=lambda line: print(line, flush=True),
          settings=settings)
    return EXIT_OK
