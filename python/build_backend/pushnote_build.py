"""The package's build backend: maturin's, which builds the `pushnote._native` extension, with
the commands `pushnote-server`, `pushnote-mq` and `pushnote` added to the wheel.

They are the Rust binaries of this repository, built by cargo in the release profile (into the
same target directory as the extension, so the dependencies they share are compiled once) and
put in the wheel's scripts directory: installing the wheel puts them on the environment's PATH,
beside its `python`, as the original pushnote's package did with its two commands."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import maturin
from maturin import *  # noqa: F401,F403 (the hooks not overridden here are maturin's own)

PACKAGE = Path(__file__).resolve().parents[1]
WORKSPACE = PACKAGE.parent
# pyproject.toml's `[tool.maturin] data`: its scripts/ go into the wheel's `.data/scripts/`.
DATA = PACKAGE / "wheel-data"
SCRIPTS = DATA / "scripts"
COMMANDS = ("pushnote-server", "pushnote-mq", "pushnote")

# maturin wants the data directory to exist for every hook (metadata and sdist too); it is empty
# except while a wheel is built.
SCRIPTS.mkdir(parents=True, exist_ok=True)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    with _commands():
        return maturin.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    with _commands():
        return maturin.build_editable(wheel_directory, config_settings, metadata_directory)


class _commands:
    """Builds the binaries into SCRIPTS for the time maturin packs the wheel; removes them after,
    so that no sdist or later build takes stale ones."""

    def __enter__(self):
        _empty()
        for name in COMMANDS:
            shutil.copy2(_build(name), SCRIPTS / name)

    def __exit__(self, *exc):
        _empty()


def _empty():
    for path in SCRIPTS.iterdir():
        path.unlink()


def _build(name):
    """The path of binary `name`, built stripped (as maturin strips the extension)."""
    command = [
        os.environ.get("CARGO", "cargo"), "rustc", "--release", "--bin", name,
        "--manifest-path", str(WORKSPACE / "Cargo.toml"),
        "--message-format=json-render-diagnostics", "--", "-C", "strip=symbols",
    ]
    print(f"Running `{' '.join(command)}`", flush=True)
    built = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    for line in built.stdout.splitlines():
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message.get("executable"):
            return message["executable"]
    raise RuntimeError(f"cargo built no executable for {name}")
