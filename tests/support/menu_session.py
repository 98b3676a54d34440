"""Driving the interactive menu as a person would: in a pseudo-terminal (pexpect), in its own folder."""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import pexpect

from captioning.cli import menu

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENTRY = str(PROJECT_ROOT / "image_captioning.py")
MENU_PROMPT = "Choose: "
MODEL_LIST = "Which model? (the default first, then newest first)"
QUIT = str(len(menu.STEPS))  # the last entry, whatever entries are added before it


def menu_env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CAPTIONING_MODELS_DIR=str(workdir / "saved_models"),
        CAPTIONING_DATA_DIR=str(workdir / "data"),
        TF_CPP_MIN_LOG_LEVEL="2",
        TERM="dumb",  # no readline escape sequences between us and the prompts
        PYTHONUNBUFFERED="1",
    )
    return env


def spawn_menu(workdir: Path, timeout: float = 30) -> pexpect.spawn:
    """Start ``python image_captioning.py`` in a pseudo-terminal, in ``workdir``."""
    child = pexpect.spawn(sys.executable, [ENTRY], cwd=str(workdir), env=menu_env(workdir),
                          encoding="utf-8", timeout=timeout, dimensions=(50, 200))
    child.logfile_read = io.StringIO()  # the whole session, for the no-traceback check
    child.expect_exact("What would you like to do?")
    child.expect_exact(MENU_PROMPT)
    return child


def expect_exit_ok(child: pexpect.spawn) -> None:
    """The menu ends (after its goodbye) with status 0, without a traceback."""
    child.expect(pexpect.EOF)
    child.close()
    assert "Traceback" not in child.logfile_read.getvalue()
    assert child.exitstatus == 0, (child.exitstatus, child.signalstatus)


def interrupt(child: pexpect.spawn, expected: str) -> None:
    """Press Ctrl-C at the prompt just shown and wait for ``expected``.

    A SIGINT landing between the prompt being written and the read starting is lost by CPython's
    ``input()`` (a window no person can hit, but a test can); only then is Ctrl-C pressed again.
    """
    time.sleep(0.2)
    child.sendintr()
    if child.expect_exact([expected, pexpect.TIMEOUT], timeout=5) == 1:
        child.sendintr()
        child.expect_exact(expected)


def answer(child: pexpect.spawn, text: str, then: str) -> None:
    """Type ``text`` + Enter and wait for ``then`` to appear."""
    child.sendline(text)
    child.expect_exact(then)
