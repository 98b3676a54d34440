"""The project's own files agree with each other: install metadata, pins, CI and the README."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Only the tests and CI's checks use these; the tool itself never imports them.
TEST_ONLY = ("pytest", "pytest-xdist", "pexpect", "scikit-image", "httpx2", "selenium", "ruff", "mypy")


def _requirements(name: str) -> dict[str, str]:
    lines = (PROJECT_ROOT / name).read_text().splitlines()
    pins = [line for line in lines if line.strip() and not line.startswith("#")]
    return {re.split(r"[<>=!~]", pin, maxsplit=1)[0].strip().lower(): pin for pin in pins}


def test_pyproject_reads_the_pins_from_the_requirements_files_and_names_the_command():
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    dynamic = project["tool"]["setuptools"]["dynamic"]
    assert dynamic["dependencies"] == {"file": ["requirements.txt"]}
    assert dynamic["optional-dependencies"] == {"test": {"file": ["requirements-test.txt"]}}
    assert project["project"]["scripts"] == {"image-captioning": "captioning.cli.main:main"}
    from captioning.cli.main import main

    assert callable(main)


def test_every_data_file_in_the_package_ships_with_it():
    # setuptools installs only the .py files of a package unless package-data names the rest.
    package_data = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    root = PROJECT_ROOT / "captioning"
    data_files = [path for path in root.rglob("*") if path.is_file() and path.suffix not in (".py", ".pyc")
                  and "__pycache__" not in path.parts]
    assert any(path.name == "imagenet_words.json" for path in data_files)
    for path in data_files:
        package = ".".join(("captioning", *path.parent.relative_to(root).parts))
        owners = {name: globs for name, globs in package_data.items() if package == name or package.startswith(name + ".")}
        assert any(path.relative_to(PROJECT_ROOT / name.replace(".", "/")).match(glob)
                   for name, globs in owners.items() for glob in globs), f"{path} is not in package-data"


def test_runtime_and_test_requirements_are_apart_and_pinned():
    runtime, test = _requirements("requirements.txt"), _requirements("requirements-test.txt")
    assert not set(TEST_ONLY) & set(runtime), "test tools belong in requirements-test.txt"
    assert set(TEST_ONLY) <= set(test) and not set(test) & set(runtime)
    assert "h5py" in runtime  # imported directly (storage/model_files.py)
    for pin in [*runtime.values(), *test.values()]:
        assert re.search(r"==|<", pin), f"{pin}: pin a version (== or an upper bound)"


def test_ci_runs_the_readme_test_command_with_lint_and_type_check_before_the_tests():
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme.split("**Run the tests**", 1)[1]
    command = re.search(r"```bash\n(.+?)\n```", section, re.S).group(1).strip()
    assert command.index("ruff check") < command.index("mypy") < command.index("pytest")
    ci = (PROJECT_ROOT / ".ci" / "run").read_text()
    assert command in ci.splitlines()
    run = re.search(r"```bash\n(.+?)\n```", readme.split("**Run the tool**", 1)[1], re.S).group(1)
    assert "pip install -r requirements.txt" in run and "requirements.txt" in ci
