"""Which model bundle a command uses when none is named, and the line that names it.

The default is the shipped ``saved_models/default`` unless the user chose another. Choosing writes a
small pointer file, ``config.MODELS_DIR / config.DEFAULT_MODEL_POINTER`` (git-ignored), naming the
bundle: ``train --make-default``, the menu's question after training, and the ``default``
subcommand write it. Training never changes the default unasked, so a quick trial run cannot
replace the model ``caption`` uses. A pointer whose bundle is gone (or an unreadable pointer) falls
back to the shipped model, with a one-line note saying so.

Every command that uses a model prints ``model_line`` first, e.g.
``model: saved_models/default (efficientnet_lite1 + 4 x attention ensemble, shipped default)``.
Only ``config.json`` is read, so nothing here needs TensorFlow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from captioning import config
from captioning.bundles import store as bundle
from captioning.bundles.schema import BundleConfig
from captioning.errors import BundleError, CaptioningError, InputFileError
from captioning.storage.atomic import write_json_atomic
from captioning.storage.safe_json import read_json_file

# A pointer holds one path; anything larger is not one of ours (and is never read whole).
POINTER_MAX_BYTES = 64 * 1024
CHOOSE_HINT = "choose one with `python image_captioning.py default MODEL_DIR`"


@dataclass(frozen=True)
class ModelChoice:
    """The bundle a command will use.

    Attributes:
        path: the bundle folder.
        note: one line to show after the model line (the chosen default is gone, ...), or None.
    """

    path: Path
    note: str | None = None


def pointer_path() -> Path:
    """The pointer file naming the user's default model (read at call time; tests move it)."""
    return Path(config.MODELS_DIR) / config.DEFAULT_MODEL_POINTER


def shown(path: str | Path) -> str:
    """A path as the user should see it: relative to the current folder when inside it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) or "."
    except (ValueError, OSError):
        return str(path)


def _same(first: Path, second: Path) -> bool:
    try:
        return first.resolve() == second.resolve()
    except OSError:
        return False


def _read_pointer() -> tuple[Path | None, str | None]:
    """The bundle folder the pointer names (not checked), and why it cannot be used if so.

    Returns:
        ``(None, None)`` without a pointer; ``(path, None)`` for a readable one; ``(None, problem)``
        when the file is not a small JSON object with a ``"model"`` path.
    """
    pointer = pointer_path()
    if not os.path.lexists(pointer):
        return None, None
    try:
        data = read_json_file(pointer, POINTER_MAX_BYTES)
    except InputFileError as error:
        return None, f"{shown(pointer)} is unreadable ({error.reason})"
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, str) or not model or "\x00" in model:
        return None, f'{shown(pointer)} is unreadable (no "model" path in it)'
    target = Path(model)
    return (target if target.is_absolute() else pointer.parent / target), None


def default_model() -> ModelChoice:
    """The bundle to use when none is named: the user's chosen default, else the shipped one.

    Returns:
        The ModelChoice; its ``note`` says when a chosen default could not be used.

    Raises:
        BundleError: neither a usable chosen default nor the shipped bundle exists; the message
            says how to train or choose one.
    """
    target, problem = _read_pointer()
    if target is not None:
        if bundle.is_bundle(target):
            return ModelChoice(target)
        problem = f"your default model {shown(target)} (named in {shown(pointer_path())}) is gone"
    shipped = Path(config.DEFAULT_BUNDLE_DIR)
    if bundle.is_bundle(shipped):
        note = None if problem is None else (f"{problem}; using the shipped {shown(shipped)} "
                                             f"({CHOOSE_HINT})")
        return ModelChoice(shipped, note)
    if problem is not None:
        raise BundleError(f"{problem} and the shipped {shown(shipped)} is missing; pass --model DIR or "
                          f"{CHOOSE_HINT}")
    trained = [path.name for path in bundle.list_bundles()]
    if not trained:
        raise BundleError(f"no model bundle in {config.MODELS_DIR} nor {shipped}; {bundle.TRAIN_HINT} "
                          "or pass --model DIR")
    raise BundleError(f"the shipped model {shown(shipped)} is missing and no default was chosen; pass "
                      f"--model DIR or {CHOOSE_HINT} (found: {', '.join(trained[:5])})")


def choose_model(model: str | Path | None) -> ModelChoice:
    """The bundle a command uses: ``--model`` when given, else ``default_model()``.

    Args:
        model: the ``--model`` value, or None.

    Returns:
        The ModelChoice (the folder is not checked here; ``model_line`` reads its config).
    """
    return ModelChoice(Path(model)) if model else default_model()


def is_default(path: str | Path) -> bool:
    """Whether ``path`` is the bundle used when none is named (False when there is none)."""
    try:
        return _same(Path(path), default_model().path)
    except BundleError:
        return False


def architecture(bundle_config: BundleConfig) -> str:
    """``efficientnet_lite0 + merge``, ``efficientnet_lite1 + 4 x attention ensemble``, or for an
    ensemble whose members read two encoders ``efficientnet_lite1 & efficientnet_lite0 + 10 x ...``."""
    kind = bundle_config.decoder.kind
    if bundle_config.members:
        kind = f"{len(bundle_config.members)} x {kind} ensemble"
    return f"{' & '.join(spec.name for spec in bundle_config.encoders)} + {kind}"


def role(path: str | Path) -> str | None:
    """``shipped default``, ``shipped``, ``your default`` or None (any other bundle)."""
    path = Path(path)
    shipped = _same(path, Path(config.DEFAULT_BUNDLE_DIR))
    default = is_default(path)
    if shipped:
        return "shipped default" if default else "shipped"
    return "your default" if default else None


def model_line(path: str | Path) -> str:
    """The line every command prints first: which bundle, what it is, whether it is the default.

    Args:
        path: the bundle folder.

    Returns:
        e.g. ``model: saved_models/default (efficientnet_lite1 + 4 x attention ensemble, shipped default)``.

    Raises:
        BundleError: not a bundle, or its config.json is unreadable or too new
            (``bundle.read_bundle_config``): the cheap check before anything loads.
    """
    details = architecture(bundle.read_bundle_config(path))
    tag = role(path)
    return f"model: {shown(path)} ({details}{', ' + tag if tag else ''})"


def set_default(path: str | Path, chosen_by: str) -> Path | None:
    """Make ``path`` the model used when none is named (the shipped one: remove the pointer).

    The pointer stores a bundle inside ``config.MODELS_DIR`` by its folder name, so moving the
    whole folder keeps the choice; any other bundle by its absolute path.

    Args:
        path: a bundle folder.
        chosen_by: what set it, recorded in the pointer (``"train --make-default"``, ...).

    Returns:
        The pointer file written, or None when the shipped model is the default again.

    Raises:
        BundleError: ``path`` is not a readable bundle.
        CaptioningError: the pointer cannot be written.
    """
    path = Path(path)
    bundle.read_bundle_config(path)  # only a usable bundle becomes the default
    if _same(path, Path(config.DEFAULT_BUNDLE_DIR)):
        reset_default()
        return None
    target = path.resolve()
    models_dir = Path(config.MODELS_DIR)
    stored = target.name if _same(target.parent, models_dir) else str(target)
    pointer = pointer_path()
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
        return write_json_atomic(pointer, {
            "model": stored, "chosen_by": chosen_by,
            "date": datetime.now(UTC).isoformat(timespec="seconds")})
    except OSError as error:
        raise CaptioningError(f"cannot write {pointer}: {error.strerror or error}; check that "
                              f"{models_dir} is writable") from None


def reset_default() -> None:
    """Go back to the shipped model as the default (remove the pointer, if any).

    Raises:
        CaptioningError: the pointer cannot be removed.
    """
    pointer = pointer_path()
    try:
        pointer.unlink(missing_ok=True)
    except OSError as error:
        raise CaptioningError(f"cannot remove {pointer}: {error.strerror or error}; delete it by hand") from None


def ordered_bundles() -> tuple[list[Path], ModelChoice | None]:
    """Bundles to offer in a list: the default first, then the rest newest first.

    Returns:
        (bundle folders, the default model's choice, or None when there is no default).
    """
    found = bundle.list_bundles()
    try:
        default = default_model()
    except BundleError:
        return found, None
    rest = [path for path in found if not _same(path, default.path)]
    return [default.path, *rest], default
