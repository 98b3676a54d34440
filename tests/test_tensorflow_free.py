"""TensorFlow is imported only where needed: the CLI's cheap paths answer before it loads.

Each check runs in a fresh interpreter (this one may have TensorFlow loaded by other tests).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Everything but the modules that build or run a network: the encoders' CNNs, the decoders and their
# loss, and the fit loop with its checkpoints and distribution strategies the self-critical loop and the exporter, which import TensorFlow at
# the top. (TF_CONFIG is read by training.cluster, which does not.)
NEEDS_TENSORFLOW = ("captioning.encoders.keras_applications", "captioning.encoders.efficientnet_lite",
                    "captioning.models.merge", "captioning.models.attention", "captioning.models.loss", "captioning.training.fit",
                    "captioning.training.checkpoints", "captioning.training.distribution",
                    "captioning.training.keras_multi_worker", "captioning.training.self_critical",
                    "captioning.export.graphs", "captioning.export.litert", "captioning.export.writer")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=120)


def test_every_module_but_the_networks_imports_without_tensorflow():
    done = _run(f"""
        import importlib, pkgutil, sys
        import captioning
        names = [m.name for m in pkgutil.walk_packages(captioning.__path__, "captioning.")
                 if m.name not in {NEEDS_TENSORFLOW!r}]
        for name in names:
            importlib.import_module(name)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
        assert not heavy, heavy[:5]
        print(len(names), "modules")
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[0]) > 60


def test_info_help_and_the_menu_answer_without_tensorflow():
    done = _run("""
        import contextlib, io, sys
        from captioning.cli import menu
        from captioning.cli.main import main

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["info", "--model", "saved_models/default"]) == 0
            for argv in (["--help"], ["caption", "--help"], ["train", "--help"], ["evaluate", "--help"]):
                try:
                    main(argv)
                except SystemExit as exit:
                    assert exit.code == 0, argv
            sys.stdin = io.StringIO(f"{len(menu.STEPS)}\\n")  # the menu's first screen, then Quit
            assert main([]) == 0
        text = out.getvalue()
        assert "model bundle: saved_models/default" in text and "ensemble of 10 decoders" in text
        assert "usage: image_captioning.py" in text and "What would you like to do?" in text
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
        assert not heavy, heavy[:5]
    """)
    assert done.returncode == 0, done.stderr[-2000:]


def test_train_and_extract_refuse_a_mistyped_dataset_before_tensorflow_loads():
    done = _run("""
        import contextlib, io, sys
        from captioning.cli.main import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            assert main(["train", "--dataset", "/nonexistent/flickr"]) == 1
            assert main(["extract", "--dataset", "/nonexistent/flickr"]) == 1
        lines = out.getvalue().splitlines()
        assert lines[0].startswith("training: efficientnet_lite0 + attention decoder on dataset /nonexistent/flickr")
        assert lines[1].startswith("extracting: efficientnet_lite0 pooled features"), lines
        assert err.getvalue().count("error: dataset folder /nonexistent/flickr does not exist") == 2
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
        assert not heavy, heavy[:5]
    """)
    assert done.returncode == 0, done.stderr[-2000:]
