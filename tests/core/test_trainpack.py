"""The training pack (core.trainpack): the torch build per machine, all-or-nothing installs, activation.

A real install (torch and all) runs in packaging/package_test.sh through the installed app; here pip
really runs, against an index that refuses connections, to prove a failed install leaves nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core import trainpack
from core.runtime import module_command
from tests.fixtures.dead_index import use_dead_pip_index


def test_torch_build_follows_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(trainpack.INDEX_ENV, raising=False)
    linux_cpu = trainpack.choose_torch(system="Linux", nvidia_driver=False)
    assert (linux_cpu.build, linux_cpu.index_url) == ("cpu", trainpack.CPU_INDEX)  # PyPI's Linux torch is CUDA
    linux_gpu = trainpack.choose_torch(system="Linux", nvidia_driver=True)
    assert (linux_gpu.build, linux_gpu.index_url) == ("cuda", None)
    windows_gpu = trainpack.choose_torch(system="Windows", nvidia_driver=True)
    assert (windows_gpu.build, windows_gpu.index_url) == ("cuda", trainpack.CUDA_INDEX)  # PyPI's is CPU only
    windows_cpu = trainpack.choose_torch(system="Windows", nvidia_driver=False)
    assert (windows_cpu.build, windows_cpu.index_url) == ("cpu", None)
    mac = trainpack.choose_torch(system="Darwin", nvidia_driver=False)
    assert mac.build == "default" and "MPS" in mac.reason
    monkeypatch.setenv(trainpack.INDEX_ENV, "")
    assert trainpack.choose_torch(system="Linux", nvidia_driver=False).index_url is None
    monkeypatch.setenv(trainpack.INDEX_ENV, "http://mirror.example/whl")
    assert trainpack.choose_torch(system="Linux", nvidia_driver=False).index_url == "http://mirror.example/whl"


def test_requirements_pin_torch_and_follow_the_train_extra() -> None:
    reqs = trainpack.requirements()
    assert reqs[0] == "torch==2.13.0"
    names = [r.split(">")[0].split("=")[0].split("<")[0] for r in reqs]
    assert names == list(trainpack.PACKAGES)
    # Each range is pyproject's train extra, whatever order the metadata writes its specifiers in.
    import tomllib
    from packaging.requirements import Requirement

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    extra = {Requirement(r).name: Requirement(r).specifier for r in pyproject["project"]["optional-dependencies"]["train"]}
    for req in map(Requirement, reqs[1:]):
        assert req.specifier == extra[req.name], req


def test_a_failed_install_leaves_nothing_and_says_why(monkeypatch: pytest.MonkeyPatch, hearth_home: Path) -> None:
    use_dead_pip_index(monkeypatch)
    monkeypatch.setenv(trainpack.ONLY_ENV, "1")
    root = trainpack.pack_root()
    leftover = root / ".partial-999999999"  # a killed install's folder (no such process)
    (leftover / "site" / "torch").mkdir(parents=True)
    assert trainpack.ready() is None and not trainpack.available()
    seen: list[trainpack.InstallProgress] = []
    with pytest.raises(trainpack.TrainingPackError) as caught:
        trainpack.install(seen.append, choice=trainpack.TorchChoice("cpu", None, "the CPU build"))
    message = str(caught.value)
    assert "could not be installed" in message and "try again" in message
    assert "torch" in message.lower() or "no matching distribution" in message.lower()
    assert seen and seen[0].stage == "resolve"
    assert not leftover.exists(), "the killed install's folder was not cleared"
    assert not list(root.glob(".partial-*")) and not trainpack.pack_dir().exists()
    with pytest.raises(trainpack.TrainingPackError, match="hearth training-pack install"):
        trainpack.require()


def _fake_pack(tag: str) -> Path:
    """A pack folder as an install leaves it, with one importable module instead of torch."""
    site = trainpack.pack_dir() / "site"
    site.mkdir(parents=True)
    (site / "hearth_pack_probe.py").write_text("VALUE = 42\n")
    (trainpack.pack_dir() / trainpack.READY).write_text(json.dumps({"python": tag, "versions": {}}))
    return site


def test_a_ready_pack_goes_on_sys_path_and_another_pythons_pack_does_not(
        monkeypatch: pytest.MonkeyPatch, hearth_home: Path) -> None:
    monkeypatch.setenv(trainpack.ONLY_ENV, "1")
    monkeypatch.setattr(sys, "path", list(sys.path))
    site = _fake_pack("cpython-2.7-vax")
    assert trainpack.ready() is None and trainpack.activate() is False  # built for another Python
    (trainpack.pack_dir() / trainpack.READY).write_text(json.dumps({"python": trainpack._python_tag()}))
    assert trainpack.activate() is True and sys.path[-1] == str(site)
    import hearth_pack_probe  # type: ignore[import-not-found]

    assert hearth_pack_probe.VALUE == 42
    assert trainpack.remove() and not trainpack.pack_dir().exists() and trainpack.ready() is None


def test_cli_reports_the_pack(monkeypatch: pytest.MonkeyPatch, hearth_home: Path) -> None:
    env = {**os.environ, trainpack.ONLY_ENV: "1", trainpack.INDEX_ENV: ""}
    run = subprocess.run(module_command("core", "training-pack", "--json"), capture_output=True, text=True,
                         env=env, check=True)
    status = json.loads(run.stdout)
    assert status["installed"] is False and status["builtin"] is False
    words = subprocess.run(module_command("core", "training-pack"), capture_output=True, text=True, env=env,
                           check=True).stdout
    assert "not installed" in words and "hearth training-pack install" in words
    _fake_pack(trainpack._python_tag())
    status = json.loads(subprocess.run(module_command("core", "training-pack", "--json"), capture_output=True,
                                       text=True, env=env, check=True).stdout)
    assert status["installed"] is True
