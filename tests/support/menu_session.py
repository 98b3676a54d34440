"""Driving the interactive menu as a person would: in a pseudo-terminal (pexpect), in its own folder.

Control keys go after the prompt they answer, as a person's would. Between prompts the terminal is
in line mode: a Ctrl-D typed then reaches readline as a NUL byte, so the menu never sees the end of
input and waits; and a Ctrl-C can land while readline sets the terminal up (see ``interrupt``).
"""

from __future__ import annotations

import io
import os
import signal
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
        PYTHONFAULTHANDLER="1",  # SIGABRT makes it print its Python stack (MenuSession's timeouts)
    )
    return env


class MenuSession(pexpect.spawn):
    """A pexpect child whose timeouts explain themselves.

    A TIMEOUT says how long after the start it came, what the process was doing (its state, the
    CPU time it had had, where it waited in the kernel), its Python stack (it is sent SIGABRT, so
    ``PYTHONFAULTHANDLER`` prints it) and the whole session, not only pexpect's last 100 characters.
    """

    def __init__(self, *args, **kwargs):
        self.started = time.monotonic()
        super().__init__(*args, **kwargs)

    def expect(self, *args, **kwargs):
        return self._explaining(super().expect, *args, **kwargs)

    def expect_exact(self, *args, **kwargs):
        return self._explaining(super().expect_exact, *args, **kwargs)

    def _explaining(self, wait, *args, **kwargs):
        try:
            return wait(*args, **kwargs)
        except pexpect.TIMEOUT as error:
            raise pexpect.TIMEOUT(f"{error}\n{self.explain_timeout()}") from None

    def explain_timeout(self) -> str:
        lines = [f"timed out {time.monotonic() - self.started:.1f} s after the menu was started; "
                 f"load average {os.getloadavg()}", process_state(self.pid)]
        if self.isalive():
            os.kill(self.pid, signal.SIGABRT)
            try:
                super().expect(pexpect.EOF, timeout=10)  # the stack it prints, into the session
            except pexpect.TIMEOUT:
                lines.append("(no stack within 10 s of SIGABRT)")
        session = self.logfile_read.getvalue() if isinstance(self.logfile_read, io.StringIO) else ""
        lines.append(f"the whole session, with the stack printed on SIGABRT last:\n{session}")
        return "\n".join(lines)


def process_state(pid: int) -> str:
    """What /proc says of the process: its state (R running, S sleeping, D disk wait, T stopped),
    the CPU time it has had, the kernel function it waits in, and its signal masks (a Ctrl-C that
    is pending, blocked or ignored shows there)."""
    proc = Path("/proc") / str(pid)
    try:
        fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        wchan = (proc / "wchan").read_text()
        status = (proc / "status").read_text().splitlines()
    except OSError as error:
        return f"process {pid}: no /proc entry ({error.strerror})"
    ticks = os.sysconf("SC_CLK_TCK")
    signals = " ".join(line.replace(":\t", " ") for line in status
                       if line.startswith(("SigPnd", "ShdPnd", "SigBlk", "SigIgn")))
    return (f"process {pid}: state {fields[0]}, CPU {int(fields[11]) / ticks:.2f} s user + "
            f"{int(fields[12]) / ticks:.2f} s system, {fields[17]} threads, waiting in {wchan or '-'}; {signals}")


def spawn_menu(workdir: Path, timeout: float = 30) -> MenuSession:
    """Start ``python image_captioning.py`` in a pseudo-terminal, in ``workdir``."""
    child = MenuSession(sys.executable, [ENTRY], cwd=str(workdir), env=menu_env(workdir),
                        encoding="utf-8", timeout=timeout, dimensions=(50, 200))
    child.logfile_read = io.StringIO()  # the whole session, for the no-traceback check and timeouts
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
    """Press Ctrl-C at the prompt just shown (wait for it first) and wait for ``expected``.

    A SIGINT landing while readline sets the terminal up for the prompt, just before writing it, is
    lost by CPython's ``input()`` (a window no person can hit, but a test can: 2 in 30 presses sent
    just before the prompt, none of 40 sent just after it); only then is Ctrl-C pressed again.
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
