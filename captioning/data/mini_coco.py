"""Mini-COCO from Kaggle through kagglehub, and one line on what to do when that fails.

kagglehub keeps each dataset version in its cache (``KAGGLEHUB_CACHE``, by default
``~/.cache/kagglehub``) and asks Kaggle for the current version number on every call, so a
second run downloads nothing but still needs the network; without one, ``download_mini_coco``
falls back to the newest complete version in that cache. kagglehub's failures are raw HTTP and
urllib3 errors; ``download_failure`` turns each kind into what happened and what the user can do.
"""

from __future__ import annotations

import errno
import socket
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from captioning import config
from captioning.data.layouts import LAYOUTS_HELP
from captioning.errors import DatasetError

__all__ = ["Download", "download_mini_coco", "download_failure"]

TOKEN_PAGE = "https://www.kaggle.com/settings"
TOKEN_HELP = (f"create an API token at {TOKEN_PAGE} (API, Create New Token) and save it as "
              "~/.kaggle/kaggle.json, or set KAGGLE_USERNAME and KAGGLE_KEY")
LOCAL_FOLDER_HELP = f"or pass a local folder with --dataset PATH ({LAYOUTS_HELP})"
NO_NETWORK = "no network connection to Kaggle"


@dataclass(frozen=True)
class Download:
    """Where the dataset is, and a note for the user when it is not what a download gives."""

    path: Path
    note: str = ""


def download_mini_coco(handle: str = config.MINI_COCO_HANDLE) -> Download:
    """Download Mini-COCO with kagglehub (its cache is reused) and return the local folder.

    Offline, the newest complete version kagglehub downloaded before is used, with a note.

    Args:
        handle: The Kaggle dataset, ``owner/slug``.

    Returns:
        The folder kagglehub unpacked the dataset into.

    Raises:
        DatasetError: One line saying what went wrong and what to do: kagglehub missing,
            credentials unusable, missing or refused, no such dataset, no network, a download cut
            midway, a damaged archive, a full disk.
    """
    what = f"could not download Mini-COCO ({handle}) from Kaggle"
    try:
        import kagglehub  # lazily: it is slow to import and only needed for this source
    except ImportError:
        raise DatasetError(f"{what}: kagglehub is not installed; install the packages in "
                           f"requirements.txt, {LOCAL_FOLDER_HELP}") from None
    has_credentials = _credentials_found(what)
    try:
        path = kagglehub.dataset_download(handle)
    except Exception as error:  # noqa: BLE001 - every kagglehub failure becomes one line
        reason, action = download_failure(error, handle, has_credentials)
        cached = _newest_cached_version(handle) if reason == NO_NETWORK else None
        if cached:
            path, version = cached
            return Download(path, f"Kaggle is unreachable ({reason}); using version {version} of "
                                  f"{handle}, downloaded earlier to {path}")
        raise DatasetError(f"{what}: {reason}; {action}, {LOCAL_FOLDER_HELP}") from None
    return Download(Path(path))


def _newest_cached_version(handle: str) -> tuple[Path, int] | None:
    """The newest version of ``handle`` that kagglehub's cache holds complete, and its number.

    Uses kagglehub's own cache object, so "complete" means what it means to kagglehub (its
    completion marker is written only after the archive is unpacked).
    """
    from kagglehub.cache import Cache
    from kagglehub.handle import parse_dataset_handle

    cache, unversioned = Cache(), parse_dataset_handle(handle)
    versions = Path(cache.get_path(unversioned)) / "versions"
    numbers = sorted((int(p.name) for p in versions.glob("*") if p.name.isdigit()), reverse=True)
    for number in numbers:
        path = cache.load_from_cache(unversioned.with_version(number))
        if path:
            return Path(path), number
    return None


def _credentials_found(what: str) -> bool | None:
    """Whether kagglehub finds Kaggle credentials (None when this kagglehub cannot say).

    Checked before the download so that a broken ``kaggle.json`` is named as such (kagglehub
    would raise the same bare ValueError as for a damaged archive), and so that a 401/403 can
    tell "no token" from "a token Kaggle refused".
    """
    try:
        from kagglehub.config import get_kaggle_credentials
    except ImportError:
        return None
    try:
        return get_kaggle_credentials() is not None
    except (ValueError, OSError) as error:
        raise DatasetError(f"{what}: the Kaggle credentials cannot be used ({_one_line(error)}); fix "
                           f"the file or replace it with a new token from {TOKEN_PAGE}, or set "
                           f"KAGGLE_USERNAME and KAGGLE_KEY, {LOCAL_FOLDER_HELP}") from None


def download_failure(error: BaseException, handle: str, has_credentials: bool | None) -> tuple[str, str]:
    """What went wrong in ``kagglehub.dataset_download`` and what the user can do about it.

    Args:
        error: What kagglehub raised.
        handle: The dataset handle asked for (for links and cache paths).
        has_credentials: Whether Kaggle credentials were set up (None: unknown).

    Returns:
        ``(reason, action)``, each a short phrase without a newline.
    """
    # kagglehub's errors are those of requests, its HTTP client (installed with it).
    import requests
    from kagglehub.config import get_cache_folder
    from kagglehub.exceptions import DataCorruptionError

    page = f"https://www.kaggle.com/datasets/{handle}"
    status = _http_status(error)
    if status in (401, 403) and not has_credentials:
        return f"Kaggle asks for an API token (HTTP {status}) and none is set up", TOKEN_HELP
    if status == 401:
        return ("Kaggle rejected the API credentials (HTTP 401)",
                f"create a new token at {TOKEN_PAGE} and put it in ~/.kaggle/kaggle.json or "
                "KAGGLE_USERNAME/KAGGLE_KEY, wherever the old one is")
    if status == 403:
        return ("Kaggle refused this account access to the dataset (HTTP 403)",
                f"open {page} signed in as the owner of your API token, accept the dataset's terms "
                "if asked, and run again")
    if status == 404:
        return ("Kaggle has no such dataset (HTTP 404: renamed, removed or made private)",
                f"check {page} (the handle is MINI_COCO_HANDLE in captioning/config.py)")
    if status == 429:
        return "Kaggle is limiting requests (HTTP 429)", "wait a few minutes and run again"
    if status is not None:
        kind = "a server error" if status >= 500 else "an unexpected answer"
        return f"Kaggle gave {kind} (HTTP {status})", "run again later"
    if isinstance(error, requests.exceptions.ReadTimeout):
        return "Kaggle stopped answering (timed out)", "run the same command again"
    if isinstance(error, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                          ConnectionError, socket.gaierror)):
        return NO_NETWORK, "connect to the internet and run again"
    if isinstance(error, (requests.exceptions.ChunkedEncodingError,
                          requests.exceptions.ContentDecodingError)):
        return ("the download was cut off midway",
                "run the same command again to finish it (an incomplete download is never used "
                "as the dataset)")
    if isinstance(error, DataCorruptionError):  # the X-Goog-Hash MD5 did not match
        return ("the download did not match Kaggle's checksum and was deleted",
                "run the same command again")
    cache = Path(get_cache_folder(), "datasets", *handle.split("/"))  # versions and partial archive
    if _is_damaged_archive(error):
        return "the downloaded archive is damaged", f"delete {cache} and run again"
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return (f"the disk holding kagglehub's cache ({cache}) is full",
                "free space there, or set KAGGLEHUB_CACHE to a folder on a disk with room, and run again")
    return f"{type(error).__name__}: {_one_line(error)}", "run again later"


def _http_status(error: BaseException) -> int | None:
    """The HTTP status of an HTTP error answer (kagglehub's KaggleApiHTTPError and the like)."""
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) and status >= 400 else None


def _is_damaged_archive(error: BaseException) -> bool:
    """An archive kagglehub cannot unpack: it keeps the file and would reuse it on every run."""
    if isinstance(error, (zipfile.BadZipFile, tarfile.TarError, EOFError)):
        return True
    return isinstance(error, ValueError) and "archive" in str(error).lower()  # "Unsupported archive type."


def _one_line(error: BaseException, limit: int = 160) -> str:
    text = " ".join(str(error).split())
    return text[:limit] + ("..." if len(text) > limit else "")
