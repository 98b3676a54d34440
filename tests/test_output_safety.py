"""Output folders: nothing of the user's is replaced, a complete bundle is at the path at every
instant, a killed final save is finished by --resume, one writer at a time, and a full disk is one
line (issue 15, items 1-4).

The kill tests SIGKILL real processes at the moment the test watches for (a staging folder
appearing), or have a driver script kill itself right after a chosen rename.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from captioning import config
from captioning.bundles import store as bundle
from captioning.bundles.schema import BundleConfig
from captioning.errors import BundleError
from captioning.storage import disk_space, output_folder
from captioning.storage.output_folder import OutputFolderError, check_output_folder, claim

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENTRY = str(PROJECT_ROOT / "image_captioning.py")
# config.json of a small merge bundle; its weights are fake.
BUNDLE_SETTINGS = {"vocab_size": 14, "max_length": 8, "feature_shape": [1280], "format_version": 1,
                   "encoder": {"name": "efficientnet_lite0", "weights_id": "none", "random_weights": True},
                   "decoder": {"kind": "merge", "embedding_dim": 16, "units": 16}}
# A quick training run: random encoder weights, tiny decoder.
TINY_TRAIN = ["--encoder", "efficientnet_lite0", "--decoder", "merge", "--encoder-weights", "none", "--batch-size", "16",
              "--min-count", "1", "--embedding-dim", "8", "--units", "8"]


def _fake_bundle(folder: Path, marker: str = "old") -> Path:
    """A folder that passes for a bundle (this tool's config.json), written the way bundles are."""

    def fill(staging: Path) -> None:
        (staging / "model.weights.h5").write_text(marker)

    return bundle.write_bundle_folder(folder, BundleConfig.from_json(BUNDLE_SETTINGS, "test"), fill)


def _marker(folder: Path) -> str:
    return (folder / "model.weights.h5").read_text()


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "CAPTIONING_MODELS_DIR": str(tmp_path / "saved_models"),
            "CAPTIONING_DATA_DIR": str(tmp_path / "data"), "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


# ------------------------------------------------------------------ 1. what may be replaced


def test_an_absent_path_an_empty_folder_a_bundle_or_an_interrupted_run_may_be_written(tmp_path):
    check_output_folder(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    check_output_folder(tmp_path / "empty")
    check_output_folder(_fake_bundle(tmp_path / "bundle"))
    (tmp_path / "interrupted" / ".checkpoint").mkdir(parents=True)
    (tmp_path / "interrupted" / ".checkpoint" / "state.json").write_text("{}")
    check_output_folder(tmp_path / "interrupted")


def _folder_with_a_file_and_photos(path: Path) -> Path:
    (path / "photos").mkdir(parents=True)
    (path / "notes.txt").write_text("mine")
    (path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 not really")
    return path


@pytest.mark.parametrize("make, expected", [
    (_folder_with_a_file_and_photos, r"holds 2 files or folders that are not a model bundle \(notes.txt, photos/\)"),
    (lambda p: (_fake_bundle(p / "a"), _fake_bundle(p / "b"), p)[-1], r"\(a/, b/\)"),  # a parent of bundles
    (lambda p: (p.mkdir(), (p / "config.json").write_text('{"name": "another tool"}'), p)[-1],
     r"\(config.json\)"),
    (lambda p: (p.mkdir(), (p / "config.json").write_text("[" * 100_000 + "]" * 100_000), p)[-1],
     r"\(config.json\)"),
    (lambda p: (p.mkdir(), os.mkfifo(p / "config.json"), p)[-1], r"\(config.json\)"),  # never opened: no hang
    (lambda p: (p.write_text("mine"), p)[-1], r"is a file, not a folder"),
    (lambda p: (os.mkfifo(p), p)[-1], r"is a FIFO \(named pipe\), not a folder"),
    (lambda p: (os.symlink(_fake_bundle(p.parent / "real"), p), p)[-1], r"is a symbolic link \(to .*real\)"),
], ids=["a file and photos", "a parent of bundles", "another tool's config.json", "config.json nested 100,000 deep",
        "config.json a FIFO", "a regular file", "a FIFO", "a symbolic link"])
def test_anything_else_is_refused_in_one_line_and_left_alone(tmp_path, make, expected):
    path = make(tmp_path / "out")
    before = os.lstat(path).st_mtime_ns, _snapshot(path) if path.is_dir() and not path.is_symlink() else None
    with pytest.raises(OutputFolderError, match=f"{path} .*{expected}.*pass --output a new folder") as caught:
        check_output_folder(path)
    assert "\n" not in str(caught.value)
    assert (os.lstat(path).st_mtime_ns, _snapshot(path) if path.is_dir() and not path.is_symlink() else None) == before


def test_the_dataset_folder_the_current_folder_and_home_are_refused(tmp_path, monkeypatch):
    from tests.support.shapes_dataset import write_shapes_dataset

    dataset = write_shapes_dataset(tmp_path / "shapes", n_images=2, seed=0)
    with pytest.raises(OutputFolderError, match=r"\(Images/, captions.txt\)"):
        check_output_folder(dataset)
    work = _folder_with_a_file_and_photos(tmp_path / "work")
    monkeypatch.chdir(work)
    with pytest.raises(OutputFolderError, match=f"^{work} holds 2 files"):
        check_output_folder(".")
    home = _folder_with_a_file_and_photos(tmp_path / "home")
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(OutputFolderError, match=rf"^{home} holds 2 files.*\(e.g. {home / 'model'}\)$"):
        check_output_folder("~")


def test_a_path_under_a_file_is_refused(tmp_path):
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(OutputFolderError, match=r"afile/x cannot be created \(.*afile is a file\)"):
        check_output_folder(tmp_path / "afile" / "x")


def _everything_a_bundle_holds(path: Path) -> Path:
    """A bundle with every file and folder the tool writes into one, and what killed writes leave."""
    _fake_bundle(path)
    for name in ("vocab.json", "history.json", "loss_curve.png", "trained_photos.json", "metrics.json",
                 "evaluation_samples.png", "model-2.weights.h5", "model-12.weights.h5",
                 ".metrics.json.ab3d_f78.tmp", ".evaluation_samples.png.k2j4h6g8.png", ".model-2.weights.h5.x1y2z3w4.tmp"):
        (path / name).write_bytes(b"the tool's")
    for name in ("exported", ".checkpoint/epoch-0002", ".checkpoint/.epoch-0003-x1_2y3z4", ".exported.new-abcd1234",
                 ".exported.old-a_cd1234"):
        (path / name).mkdir(parents=True)
    for name in ("exported/manifest.json", "exported/encoder.tflite", "exported/member-1.tflite",
                 "exported/member-12.tflite", ".checkpoint/state.json", ".checkpoint/.state.json.a1b2c3d4.tmp",
                 ".checkpoint/epoch-0002/model.keras", ".checkpoint/epoch-0002/best.weights.h5",
                 ".checkpoint/.epoch-0003-x1_2y3z4/model.keras",
                 ".checkpoint/.epoch-0003-x1_2y3z4/.best.weights.h5.k9j8h7g6.tmp"):
        (path / name).write_text("{}")
    return path


def test_a_bundle_holding_only_what_bundles_are_made_of_may_be_replaced(tmp_path):
    path = _everything_a_bundle_holds(tmp_path / "b")
    check_output_folder(path)
    _fake_bundle(path, "new")  # retraining into the same --output, as the README says users do
    assert _marker(path) == "new" and (path / ".checkpoint" / "epoch-0002").is_dir()  # the run's checkpoint is kept


def test_every_file_a_real_save_writes_is_listed_as_part_of_a_bundle(tmp_path):
    """bundles.layout is the one list of what a bundle folder holds: a file a save adds must be in it,
    or retraining into that bundle would be refused."""
    from captioning.bundles import layout
    from tests.support.bundles import make_tiny_bundle

    path = make_tiny_bundle(tmp_path / "m", seed=0)
    (path / "exported").mkdir()  # the export is written on first use (tests turn it off at save)
    written = sorted(os.listdir(path))
    assert {"config.json", "model.weights.h5", "vocab.json", "history.json", "loss_curve.png"} <= set(written)
    assert all(layout.is_part_of_bundle(name, (path / name).is_dir()) for name in written), written
    shipped = config.PROJECT_ROOT / "saved_models" / "default"  # a 10-member ensemble, evaluated: only read
    assert len(bundle.read_bundle_config(shipped).weights_files) == 10
    assert [name for name in os.listdir(shipped) if not layout.is_part_of_bundle(name, (shipped / name).is_dir())
            and not name.startswith(".")] == ["MODEL_CARD.md"]  # hand-written: the tool never writes one
    check_output_folder(path)


def _bundle_with(*names: str):
    """A maker of a bundle holding, besides its own files, ``names`` (a trailing / makes a folder)."""

    def make(path: Path) -> Path:
        _everything_a_bundle_holds(path)
        for name in names:
            if name.endswith("/"):
                (path / name / "inside.txt").parent.mkdir(parents=True)
                (path / name / "inside.txt").write_text("mine")
            else:
                (path / name).write_text("mine")
        return path

    return make


def _interrupted_run_with_notes(path: Path) -> Path:
    (path / ".checkpoint").mkdir(parents=True)
    (path / ".checkpoint" / "state.json").write_text("{}")
    (path / "NOTES.md").write_text("mine")
    return path


def _interrupted_run_with_checkpoint_notes(path: Path) -> Path:
    (path / ".checkpoint" / "epoch-0003").mkdir(parents=True)
    (path / ".checkpoint" / "state.json").write_text("{}")
    (path / ".checkpoint" / "notes").mkdir()
    return path


def _bundle_with_linked_export(path: Path) -> Path:
    _everything_a_bundle_holds(path)
    shutil.move(path / "exported", path.parent / "elsewhere")
    (path / "exported").symlink_to(path.parent / "elsewhere")
    return path


@pytest.mark.parametrize("make, expected", [
    (_bundle_with("NOTES.md"), r"is a model bundle but also holds 1 file or folder that is not part of one "
                               r"\(NOTES.md\); replacing it would delete it, so move it out first or pass --output "
                               r"a new folder \(e.g. .*/out-model\)$"),
    (_bundle_with("MODEL_CARD.md", "cat.jpg", "photos/", "vocab.txt"),
     r"is a model bundle but also holds 4 files or folders that are not part of one \(MODEL_CARD.md, cat.jpg, "
     r"photos/, \.\.\.\); replacing it would delete them, so move them out first or pass --output"),
    (_bundle_with("exported.zip"), r".* not part of one \(exported.zip\)"),
    (_bundle_with(".notes"), r".* not part of one \(.notes\)"),  # a hidden file of the user's, not a leftover of the tool's writes
    (_bundle_with("model-3.weights.h5/"), r".* not part of one \(model-3.weights.h5/\)"),  # a folder where the tool writes a file
    (_interrupted_run_with_notes, r"holds an interrupted training run \(.checkpoint/\) and 1 file or "
                                  r"folder that is not part of it \(NOTES.md\); replacing it would delete it"),
    # Hidden names shaped like the tool's temp files but not the exact shapes it makes are the user's.
    (_bundle_with(".config.json.orig", ".vocab.json.mynotes", ".metrics.json.keep/"),
     r".* 3 files or folders that are not part of one \(.config.json.orig, .metrics.json.keep/, .vocab.json.mynotes\)"),
    (_bundle_with(".exported.new-notes/", ".exported.old-wxyz1234"),  # a file where the tool makes a folder
     r".* 2 files or folders that are not part of one \(.exported.new-notes/, .exported.old-wxyz1234\)"),
    (_bundle_with(".metrics.json.ab3d_f78.tmp.bak", ".metrics.json.abc.tmp"),
     r".* 2 files or folders that are not part of one \(.metrics.json.ab3d_f78.tmp.bak, .metrics.json.abc.tmp\)"),
    (_bundle_with("exported/MYNOTE", "exported/member-2.tflite/"),
     r".* 2 files or folders that are not part of one \(exported/MYNOTE, exported/member-2.tflite/\)"),
    (_bundle_with(".checkpoint/NOTES.md", ".checkpoint/epoch-0002/mine.txt", ".checkpoint/epoch-0002/model.keras"),
     r".* 2 files or folders that are not part of one \(.checkpoint/NOTES.md, .checkpoint/epoch-0002/mine.txt\)"),
    (_interrupted_run_with_checkpoint_notes,
     r"holds an interrupted training run \(.checkpoint/\) and 1 file or folder that is not part of it "
     r"\(.checkpoint/notes/\)"),
    (_bundle_with_linked_export, r".* 1 file or folder that is not part of one \(exported \(a link\)\)"),
], ids=["notes", "a model card, a photo, a folder and more", "a file named like exported/", "a hidden file",
        "a folder named like a bundle file", "an interrupted run with notes", "names like temp files",
        "names like export temp folders", "near-miss temp files", "a file in exported/", "files in .checkpoint/",
        "an interrupted run with notes in .checkpoint/", "a linked exported/"])
def test_a_bundle_holding_anything_else_is_refused_and_left_alone(tmp_path, make, expected):
    path = make(tmp_path / "out")
    before = _snapshot(path)
    with pytest.raises(OutputFolderError, match=f"^{path} {expected}") as caught:
        check_output_folder(path)
    assert "\n" not in str(caught.value)
    with pytest.raises(OutputFolderError, match=f"^{path} {expected}"):
        _fake_bundle(path, "new")  # the writer itself refuses it too (train, scst and ensemble all save so)
    assert _snapshot(path) == before and not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder, no lock


def test_the_tool_choosing_the_folder_changes_only_the_advice(tmp_path):
    path = _bundle_with("NOTES.md")(tmp_path / "out")
    with pytest.raises(OutputFolderError, match=r"so move it out first or train with --output naming a new "
                                                rf"folder \(e.g. {tmp_path / 'out-model'}\)$"):
        check_output_folder(path, default=True)


def test_the_export_on_first_use_still_writes_into_a_bundle_holding_other_files(tmp_path):
    """Adding exported/ replaces nothing, so it claims the bundle as before (not the export cache)."""
    path = _bundle_with("NOTES.md")(tmp_path / "out")
    with claim(path, replace_whole=False):
        pass
    check_output_folder(config.DEFAULT_BUNDLE_DIR, replace_whole=False)


@pytest.fixture
def shipped_copy(tmp_path, monkeypatch) -> Path:
    """A stand-in for the shipped bundle (``config.DEFAULT_BUNDLE_DIR``), so no test can replace the real one."""
    shipped = _fake_bundle(tmp_path / "repo" / "saved_models" / "default", "shipped")
    (shipped / "MODEL_CARD.md").write_text("hand-written")
    monkeypatch.setattr(config, "DEFAULT_BUNDLE_DIR", shipped)
    return shipped


def test_the_shipped_bundle_is_never_replaced_by_any_name(tmp_path, shipped_copy):
    (shipped_copy / "MODEL_CARD.md").unlink()  # even holding nothing but a bundle's files
    before = _snapshot(shipped_copy)
    link = tmp_path / "models-link"
    os.symlink(shipped_copy.parent, link)
    for name, shown in ((shipped_copy, shipped_copy), (link / "default", link / "default"),
                        (shipped_copy.parent / "." / "default", shipped_copy)):
        with pytest.raises(OutputFolderError, match=rf"^{re.escape(str(shown))} is the shipped model \(tracked in "
                                                    r"git\), which train, scst and ensemble never replace; pass "
                                                    rf"--output a new folder \(e\.g\. {re.escape(str(link.parent))}"
                                                    r"/.*my-model\)$"):
            _fake_bundle(name, "new")
    assert _snapshot(shipped_copy) == before


def test_the_real_shipped_bundle_is_refused(tmp_path):
    shipped = config.PROJECT_ROOT / "saved_models" / "default"
    os.symlink(config.PROJECT_ROOT, tmp_path / "project-link")
    for name in (shipped, tmp_path / "project-link" / "saved_models" / "default"):
        with pytest.raises(OutputFolderError, match="is the shipped model"):
            check_output_folder(name)  # only read, so a failure here cannot cost the real one


def _run_cli(argv: list[str], env: dict, cwd: Path, shipped: Path | None = None) -> subprocess.CompletedProcess:
    """The CLI in a fresh process, reporting whether TensorFlow got imported.

    ``shipped``: a stand-in for the shipped bundle (``config.DEFAULT_BUNDLE_DIR``) in that process.
    """
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(PROJECT_ROOT)!r})
        from pathlib import Path
        from captioning import config
        if {str(shipped) if shipped else None!r}:
            config.DEFAULT_BUNDLE_DIR = Path({str(shipped)!r})
        from captioning.cli.main import main
        status = main({argv!r})
        print("tensorflow imported:", "tensorflow" in sys.modules)
        sys.exit(status)
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=120)



def _assert_refused_before_tensorflow(argv: list[str], tmp_path: Path, out: Path, error_line: str) -> None:
    """Run the CLI on ``argv``: one ``error_line``, exit 1, TensorFlow never imported, ``out``
    unchanged and nothing (a lock, a staging folder) left beside it in ``tmp_path``."""
    before, beside = _snapshot(out), sorted(p.name for p in tmp_path.iterdir())
    done = _run_cli(argv, _env(tmp_path), tmp_path)
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [error_line]
    assert "tensorflow imported: False" in done.stdout
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == beside


@pytest.mark.parametrize("command", [
    ["train", "--dataset", "{dataset}", "--encoder", "efficientnet_lite0", "--output", "{out}"],
    ["ensemble", "{dataset}/a", "{dataset}/b", "--output", "{out}"],
])
def test_train_and_ensemble_refuse_a_folder_with_a_file_before_tensorflow_loads(tmp_path, command):
    from tests.support.shapes_dataset import write_shapes_dataset

    dataset = write_shapes_dataset(tmp_path / "shapes", n_images=4, seed=0)
    out = _folder_with_a_file_and_photos(tmp_path / "mine")
    _assert_refused_before_tensorflow(
        [part.format(dataset=dataset, out=out) for part in command], tmp_path, out,
        f"error: {out} holds 2 files or folders that are not a model bundle (notes.txt, photos/); the tool "
        f"replaces its output folder whole, so pass --output a new folder (e.g. {out / 'model'})")


SCST_TRAIN_ENSEMBLE = [
    ["train", "--dataset", "{dataset}", "--encoder", "efficientnet_lite0", "--output", "{out}"],
    ["scst", "--model", "{source}", "--dataset", "{dataset}", "--output", "{out}"],
    ["ensemble", "{source}", "{dataset}/b", "--output", "{out}"],
]


@pytest.mark.parametrize("command", SCST_TRAIN_ENSEMBLE, ids=["train", "scst", "ensemble"])
def test_train_scst_and_ensemble_refuse_a_bundle_holding_a_users_file_before_tensorflow_loads(tmp_path, command):
    from tests.support.shapes_dataset import write_shapes_dataset

    dataset = write_shapes_dataset(tmp_path / "shapes", n_images=4, seed=0)
    source = _fake_bundle(tmp_path / "m3")
    out = _fake_bundle(tmp_path / "m5")  # cp -r m3 m5; echo notes > m5/NOTES.md
    (out / "NOTES.md").write_text("notes")
    _assert_refused_before_tensorflow(
        [part.format(dataset=dataset, out=out, source=source) for part in command], tmp_path, out,
        f"error: {out} is a model bundle but also holds 1 file or folder that is not part of one (NOTES.md); "
        f"replacing it would delete it, so move it out first or pass --output a new folder (e.g. {out}-model)")


@pytest.mark.parametrize("command", SCST_TRAIN_ENSEMBLE, ids=["train", "scst", "ensemble"])
def test_train_scst_and_ensemble_refuse_the_shipped_bundle_before_tensorflow_loads(tmp_path, shipped_copy, command):
    from tests.support.shapes_dataset import write_shapes_dataset

    dataset = write_shapes_dataset(tmp_path / "shapes", n_images=4, seed=0)
    source = _fake_bundle(tmp_path / "m3")
    before = _snapshot(shipped_copy)
    argv = [part.format(dataset=dataset, out=shipped_copy, source=source) for part in command]
    done = _run_cli(argv, _env(tmp_path), shipped_copy.parent, shipped=shipped_copy)
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        f"error: {shipped_copy} is the shipped model (tracked in git), which train, scst and ensemble never replace; "
        f"pass --output a new folder (e.g. {shipped_copy.parent / 'my-model'})"]
    assert "tensorflow imported: False" in done.stdout
    assert _snapshot(shipped_copy) == before and sorted(p.name for p in shipped_copy.parent.iterdir()) == ["default"]


def test_resuming_into_a_bundle_with_its_checkpoint_is_still_allowed(tmp_path):
    """Ctrl-C after an epoch leaves the bundle of the best epoch plus .checkpoint/: --resume claims it."""
    path = _fake_bundle(tmp_path / "run")
    (path / ".checkpoint").mkdir()
    (path / ".checkpoint" / "state.json").write_text("{}")
    with claim(path) as claimed:
        _fake_bundle(claimed, "resumed")  # the save at the end of the resumed run, under the same claim
    assert _marker(path) == "resumed" and (path / ".checkpoint" / "state.json").is_file()


def test_the_must_show_command_leaves_the_file_and_fails(tmp_path, coco_mini):
    """`train --output <folder with a file in it>` on the real dataset, as a user types it."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    started = time.monotonic()
    done = subprocess.run([sys.executable, ENTRY, "train", "--output", str(out), "--dataset", str(coco_mini),
                           "--encoder", "efficientnet_lite0"], capture_output=True, text=True, env=_env(tmp_path),
                          timeout=120)
    print(f"refused in {time.monotonic() - started:.2f} s")  # measured for the report, not asserted
    assert done.returncode == 1 and done.stderr.startswith(f"error: {out} holds 1 file or folder that is not")
    assert (out / "thesis.tex").read_text() == "years of work" and [p.name for p in out.iterdir()] == ["thesis.tex"]


def test_the_default_output_holding_user_files_is_refused_too(tmp_path, capsys):
    from captioning.cli.main import main
    from tests.support.shapes_dataset import write_shapes_dataset

    dataset = write_shapes_dataset(tmp_path / "shapes", n_images=4, seed=0)
    default = config.MODELS_DIR / "shapes-efficientnet_lite0-merge"
    default.mkdir(parents=True)
    (default / "notes.txt").write_text("mine")
    assert main(["train", "--dataset", str(dataset), *TINY_TRAIN]) == 1
    assert capsys.readouterr().err == (
        f"error: {default} holds 1 file or folder that is not a model bundle (notes.txt); move what is there "
        f"elsewhere, or train with --output naming a new folder (e.g. {default / 'model'})\n")
    assert [p.name for p in default.iterdir()] == ["notes.txt"]


# ------------------------------------------------------------------ 2. the swap and leftovers


def test_a_complete_bundle_is_at_the_path_at_every_step_of_a_replacement(tmp_path, monkeypatch):
    from captioning.storage import atomic

    target = _fake_bundle(tmp_path / "m", "old")
    (target / ".checkpoint").mkdir()
    (target / ".checkpoint" / "state.json").write_text('{"epoch": 1}')
    seen = []

    def watched(function):
        def call(*args, **kwargs):
            result = function(*args, **kwargs)
            seen.append((function.__name__, output_folder.is_this_tools_bundle(target)))
            return result
        return call

    monkeypatch.setattr(bundle.atomic, "exchange", watched(atomic.exchange))
    monkeypatch.setattr(bundle.os, "rename", watched(os.rename))
    monkeypatch.setattr(bundle.shutil, "rmtree", watched(bundle.shutil.rmtree))
    _fake_bundle(target, "new")
    assert ("exchange", True) in seen and all(complete for _, complete in seen), seen
    assert _marker(target) == "new" and (target / ".checkpoint" / "state.json").read_text() == '{"epoch": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


SWAP_DRIVER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from pathlib import Path
    from captioning.bundles import store as bundle
    from captioning.storage import atomic
    target, moment = Path(sys.argv[1]), sys.argv[2]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    real_exchange, real_rename = atomic.exchange, os.rename
    if moment == "after-exchange":
        def exchange(first, second):
            real_exchange(first, second)
            die()
        atomic.exchange = exchange
    else:  # a system without an atomic exchange, killed between the two renames
        atomic.exchange = lambda first, second: False
        def rename(source, destination):
            real_rename(source, destination)
            if Path(source) == target:
                die()
        os.rename = rename
    from captioning.bundles.schema import BundleConfig
    bundle.write_bundle_folder(target, BundleConfig.from_json({settings!r}, "test"),
                               lambda staging: (staging / "model.weights.h5").write_text("new"))
""")


def _kill_during_swap(tmp_path: Path, target: Path, moment: str) -> None:
    script = tmp_path / "driver.py"
    script.write_text(SWAP_DRIVER.format(root=str(PROJECT_ROOT), settings=BUNDLE_SETTINGS))
    done = subprocess.run([sys.executable, str(script), str(target), moment], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]


def test_a_kill_right_after_the_exchange_leaves_the_new_bundle_and_the_next_save_tidies(tmp_path):
    target = _fake_bundle(tmp_path / "m", "old")
    _kill_during_swap(tmp_path, target, "after-exchange")
    assert _marker(target) == "new" and output_folder.is_this_tools_bundle(target)
    left = output_folder.leftovers(target)
    assert len(left) == 1 and _marker(left[0]) == "old"
    lines = []
    with claim(target, lines.append):
        pass
    assert lines == [f"removed 1 unfinished save folder(s) a killed run left beside {target}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["driver.py", "m"]


def test_without_an_atomic_exchange_a_reader_puts_back_the_bundle_a_kill_moved_aside(tmp_path):
    target = _fake_bundle(tmp_path / "m", "old")
    _kill_during_swap(tmp_path, target, "between-renames")
    assert not target.exists()  # the moment a kill between two renames hits
    assert sorted(p.name.split("-")[0] for p in output_folder.leftovers(target)) == [".m.new", ".m.old"]
    assert bundle.read_bundle_config(target).vocab_size == 14  # the reader put it back
    assert _marker(target) == "old"
    _fake_bundle(target, "newer")  # the next writer removes the unfinished save
    assert _marker(target) == "newer" and sorted(p.name for p in tmp_path.iterdir()) == ["driver.py", "m"]


def test_list_bundles_puts_back_bundles_moved_aside(tmp_path):
    target = _fake_bundle(config.MODELS_DIR / "trained", "old")
    os.rename(target, target.parent / ".trained.old-abcd1234")
    assert bundle.list_bundles()[0] == target and _marker(target) == "old"


def test_a_reader_leaves_a_moved_bundle_alone_while_a_writer_holds_the_lock(tmp_path):
    target = _fake_bundle(tmp_path / "m", "old")
    with _lock_held_elsewhere(target):
        os.rename(target, tmp_path / ".m.old-abcd1234")
        with pytest.raises(BundleError, match="no model bundle there"):
            bundle.read_bundle_config(target)
        assert not target.exists()
    bundle.read_bundle_config(target)
    assert _marker(target) == "old"


def test_the_next_writer_moves_a_stranded_checkpoint_home_and_removes_only_its_own_leftovers(tmp_path):
    target = _fake_bundle(tmp_path / "m", "old")
    staging = tmp_path / ".m.new-abcd1234"  # killed after the checkpoint moved into it, before the swap
    (staging / ".checkpoint").mkdir(parents=True)
    (staging / ".checkpoint" / "state.json").write_text('{"epoch": 3}')
    (tmp_path / ".m.old-xyz_0987").mkdir()
    foreign = tmp_path / ".m.new-abcd1234.new-12345678"  # a leftover of a bundle named "m.new-abcd1234"
    foreign.mkdir()
    lines = []
    with claim(target, lines.append):
        pass
    assert (target / ".checkpoint" / "state.json").read_text() == '{"epoch": 3}' and _marker(target) == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.new-abcd1234.new-12345678", "m"]
    assert len(lines) == 2 and "moved the training checkpoint" in lines[0]


# ------------------------------------------------------------------ 4. one writer, free space


HOLDER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from captioning.storage.output_folder import claim
    with claim(sys.argv[1]):
        print("held", flush=True)
        time.sleep(300)
""")


class _lock_held_elsewhere:
    """Another process holding ``target``'s lock (``claim``) until the block ends, then SIGKILLed."""

    def __init__(self, target: Path):
        self.target = target

    def __enter__(self) -> subprocess.Popen:
        self.process = subprocess.Popen([sys.executable, "-c", HOLDER.format(root=str(PROJECT_ROOT)), str(self.target)],
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline() == "held\n"
        return self.process

    def __exit__(self, *exc) -> None:
        self.process.send_signal(signal.SIGKILL)  # the kernel drops a killed holder's lock
        self.process.wait()


def test_a_second_writer_is_refused_naming_the_first_and_a_killed_ones_lock_is_free(tmp_path, capsys):
    from captioning.cli.main import main

    target = tmp_path / "run"
    with _lock_held_elsewhere(target) as holder:
        with pytest.raises(OutputFolderError, match=rf"^{target} is being written by another run \(pid {holder.pid}, "
                                                    rf"started 20\d\d-.*: -c {target}\); wait for it to finish"):
            with claim(target):
                pass
        assert main(["train", "--dataset", str(tmp_path / "nowhere"), "--output", str(target), *TINY_TRAIN]) == 1
        assert capsys.readouterr().err.startswith(f"error: {target} is being written by another run (pid {holder.pid}")
        with pytest.raises(OutputFolderError, match="being written by another run"):
            _fake_bundle(target)  # ensemble's writer too
    assert output_folder.lock_file(target).exists()  # the killed holder's file stays, unlocked
    with claim(target):
        with claim(target):  # re-entrant within a process: a save inside a training run
            _fake_bundle(target)
    assert not output_folder.lock_file(target).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_bundle_too_big_for_the_disk_is_refused_before_writing(tmp_path, monkeypatch):
    from tests.support.bundles import make_tiny_bundle

    target = make_tiny_bundle(tmp_path / "m", seed=0)
    before = _snapshot(target)
    usage = disk_space.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(disk_space.shutil, "disk_usage", lambda path: usage._replace(free=500_000))
    with pytest.raises(OutputFolderError, match=rf"^not enough disk space for the model bundle in {tmp_path}: "
                                                r"needs about 1\.\d MB, 500\.0 KB free; free some space$"):
        make_tiny_bundle(target, seed=1)
    assert _snapshot(target) == before and sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_a_disk_that_fills_during_the_bundle_write_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    from tests.support.bundles import make_tiny_bundle

    target = make_tiny_bundle(tmp_path / "m", seed=0)
    before = _snapshot(target)
    real = bundle.write_bytes_atomic

    def fills_up(path, data):
        real(path, data[: len(data) // 2])  # half of it reached the disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(bundle, "write_bytes_atomic", fills_up)
    with pytest.raises(OutputFolderError, match=r"could not write the model bundle .*/m \(the disk is full\); "
                                                r"what was there is unchanged$"):
        make_tiny_bundle(target, seed=1)
    assert _snapshot(target) == before and sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_a_checkpoint_without_room_is_one_line_and_the_previous_one_stays(tmp_path, monkeypatch):
    from dataclasses import replace

    from captioning.training import checkpoints, fit
    from tests.support.toy_training import CONFIG, FINGERPRINT, toy_data, toy_model

    data = toy_data()
    fit.fit(toy_model(seed=1), data, replace(CONFIG, epochs=1), tmp_path, FINGERPRINT, log=lambda line: None)
    checkpoint = tmp_path / ".checkpoint"
    before = _snapshot(checkpoint)
    real_disk_usage = disk_space.shutil.disk_usage
    usage = real_disk_usage(tmp_path)
    monkeypatch.setattr(disk_space.shutil, "disk_usage", lambda path: usage._replace(free=100_000))
    with pytest.raises(OutputFolderError, match=r"^not enough disk space for the checkpoint of epoch 2 in .*: needs "
                                                r"about .* free; free some space; then run the same command with "
                                                r"--resume \(it continues after epoch 1\)$"):
        fit.fit(toy_model(seed=1), data, replace(CONFIG, epochs=2), tmp_path, FINGERPRINT, resume=True,
                     log=lambda line: None)
    assert _snapshot(checkpoint) == before  # epoch 1's checkpoint, and no partial epoch-0002 folder

    real = checkpoints.write_bytes_atomic

    def fills_up(path, data):
        real(path, data[:100])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(disk_space.shutil, "disk_usage", real_disk_usage)
    monkeypatch.setattr(checkpoints, "write_bytes_atomic", fills_up)
    with pytest.raises(OutputFolderError, match=r"could not write the checkpoint of epoch 2 in .* \(the disk is full\)"):
        fit.fit(toy_model(seed=1), data, replace(CONFIG, epochs=2), tmp_path, FINGERPRINT, resume=True,
                     log=lambda line: None)
    assert _snapshot(checkpoint) == before
    fresh = tmp_path / "fresh"  # a first checkpoint that fails leaves no folder behind
    with pytest.raises(OutputFolderError, match=r"epoch 1 .*\(the disk is full\); then run the same command again$"):
        fit.fit(toy_model(seed=1), data, replace(CONFIG, epochs=1), fresh, FINGERPRINT, log=lambda line: None)
    assert not fresh.exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs (needs root); skipped where it cannot be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def _fill(disk: Path, leave_bytes: int) -> None:
    """Fill ``disk`` with a file until about ``leave_bytes`` are free."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(disk / "filler", "ab") as handle:
        handle.write(b"\0" * max(free - leave_bytes, 0))


FULL_DISK_DRIVER = textwrap.dedent("""
    import json, sys
    from dataclasses import replace
    sys.path.insert(0, {root!r})
    from pathlib import Path
    from captioning.training import checkpoints, fit
    from captioning.errors import CaptioningError
    from tests.support.bundles import make_tiny_bundle
    from tests.support.toy_training import CONFIG, FINGERPRINT, toy_data, toy_model

    # No free-space check: the writes themselves must meet the full disk and fail cleanly.
    checkpoints.ensure_free_space = lambda *args, **kwargs: None
    import captioning.bundles.store
    captioning.bundles.store.ensure_free_space = checkpoints.ensure_free_space
    errors = {{}}
    for name, write in (("bundle", lambda: make_tiny_bundle(Path(sys.argv[1]) / "m", seed=1)),
                        ("checkpoint", lambda: fit.fit(toy_model(seed=1), toy_data(), replace(CONFIG, epochs=1),
                                                            Path(sys.argv[1]) / "run", FINGERPRINT))):
        try:
            write()
        except CaptioningError as error:
            errors[name] = str(error)
    print(json.dumps(errors))
""")


@pytest.mark.slow  # a fresh TensorFlow process
def test_a_really_full_disk_is_one_line_never_a_crash(tmp_path, small_disk):
    from tests.support.bundles import make_tiny_bundle

    target = make_tiny_bundle(small_disk / "m", seed=0)
    before = _snapshot(target)
    _fill(small_disk, leave_bytes=20_000)  # less than the bundle, more than nothing: it fails mid-write
    script = tmp_path / "driver.py"
    script.write_text(FULL_DISK_DRIVER.format(root=str(PROJECT_ROOT)))
    done = subprocess.run([sys.executable, str(script), str(small_disk)], capture_output=True, text=True,
                          timeout=300, cwd=PROJECT_ROOT, env=_env(tmp_path))
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])  # h5py's crash was exit 139
    errors = json.loads(done.stdout.strip().splitlines()[-1])
    assert errors["bundle"].endswith("(the disk is full); what was there is unchanged")
    assert "could not write the checkpoint of epoch 1" in errors["checkpoint"] and "the disk is full" in errors["checkpoint"]
    assert _snapshot(target) == before
    assert sorted(p.name for p in small_disk.iterdir()) in (["filler", "m"], ["filler", "m", "run"])
    run = small_disk / "run"
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) in ([], [".checkpoint"])  # nothing partial


# ------------------------------------------------------------------ 3. a killed final save, resumed


def _wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended (status {process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.005)


@pytest.mark.slow  # two training runs on 30 images, one of them a fresh TensorFlow process
def test_a_run_killed_during_its_final_save_is_finished_by_resume_without_training(tmp_path, capsys, monkeypatch):
    from captioning.cli.main import main
    from tests.support.shapes_dataset import write_shapes_dataset

    dataset = write_shapes_dataset(tmp_path / "shapes", n_images=30, seed=4)
    output = tmp_path / "models" / "run"
    argv = ["train", "--dataset", str(dataset), "--epochs", "2", "--output", str(output), *TINY_TRAIN]
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen([sys.executable, ENTRY, *argv], stdout=log, stderr=subprocess.STDOUT,
                             env=_env(tmp_path), cwd=tmp_path)
    try:
        lock = output_folder.lock_file(output)
        _wait_for(lock.exists, first, "lock file")
        # 4. A second run with the same --output is refused at once, naming the first.
        assert main(argv) == 1
        assert capsys.readouterr().err.startswith(f"error: {output} is being written by another run "
                                                  f"(pid {first.pid}, started ")
        _wait_for(lambda: output_folder.leftovers(output), first, "final save")  # the staging folder appeared
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
        log.close()
    printed = (tmp_path / "first.log").read_text()
    assert "epoch 2/2:" in printed and "saved model bundle" not in printed
    assert not (output / "config.json").exists()  # killed before the new bundle was swapped in
    assert len(output_folder.leftovers(output)) == 1

    # The same command with --resume, in this process (TensorFlow already loaded), same caches.
    monkeypatch.setattr(config, "FEATURE_CACHE_DIR", tmp_path / "data" / "features")
    assert main(argv + ["--resume"]) == 0
    out = capsys.readouterr().out
    assert "that run finished 2 of 2 epochs: nothing left to train, writing its model from the checkpoint" in out
    assert "epoch 1/2" not in out and "epoch 2/2" not in out  # no epoch retrained
    assert f"removed 1 unfinished save folder(s) a killed run left beside {output}" in out
    loaded = bundle.load_bundle(output)
    assert len(loaded.history["loss"]) == 2 and loaded.config.training.epochs_run == 2
    assert sorted(p.name for p in output.parent.iterdir()) == ["run"]  # no staging, no lock
    assert not (output / ".checkpoint").exists()


@pytest.mark.slow  # two training runs, one of them a fresh TensorFlow process
def test_a_disk_that_fills_at_the_final_save_is_one_line_and_resume_writes_the_bundle(tmp_path, small_disk,
                                                                                         capsys, monkeypatch):
    from captioning.cli.main import main
    from tests.support.shapes_dataset import write_shapes_dataset

    dataset = write_shapes_dataset(tmp_path / "shapes", n_images=30, seed=4)
    output = small_disk / "run"
    argv = ["train", "--dataset", str(dataset), "--epochs", "2", "--output", str(output), *TINY_TRAIN]
    first = subprocess.Popen([sys.executable, ENTRY, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=_env(tmp_path), cwd=tmp_path)
    state = output / ".checkpoint" / "state.json"
    _wait_for(lambda: state.exists() and json.loads(state.read_text() or "{}").get("fit", {}).get("epoch") == 2,
              first, "the last checkpoint")
    _fill(small_disk, leave_bytes=0)
    stdout, stderr = first.communicate(timeout=240)
    assert first.returncode == 1, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith(("error:", "Traceback"))]
    assert len(errors) == 1 and "the checkpoint of epoch 2 is kept: run the same command with --resume to write " \
                                "the bundle without training again" in errors[0], stderr[-3000:]
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "run"]  # no partial bundle folder
    assert [p.name for p in output.iterdir()] == [".checkpoint"]

    (small_disk / "filler").unlink()
    monkeypatch.setattr(config, "FEATURE_CACHE_DIR", tmp_path / "data" / "features")
    assert main(argv + ["--resume"]) == 0
    out = capsys.readouterr().out
    assert "nothing left to train" in out and "epoch 2/2" not in out
    assert len(bundle.load_bundle(output).history["loss"]) == 2
