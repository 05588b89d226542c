"""--threads and its default (vqa_cache/threads.py): the CPUs this process may use (affinity, cgroup quota)
less its worker processes; the choice on the run line; OpenMP threads that wait passively."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST, run_cli

from vqa_cache import threads

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "cpus, quota, workers, expected",
    [
        (2, None, 0, 2),  # a 2-core machine, no quota
        (2, None, 2, 1),  # ... with 2 DataLoader workers beside: never 0
        (64, 2.0, 0, 2),  # a container on a 64-core host with a quota of 2 CPUs
        (64, 1.5, 0, 2),  # 1.5 CPUs: 2 threads may each run half the time
        (64, 0.5, 0, 1),
        (8, None, 3, 5),
        (4, 16.0, 1, 3),  # a quota above the affinity does not raise it
        (1, None, 0, 1),
    ],
)
def test_default_threads_from_affinity_quota_and_workers(cpus, quota, workers, expected):
    n, why = threads.default_threads(workers, cpus=cpus, quota=quota, read_quota=False)
    assert n == expected
    assert "usable CPU" in why and (("worker" in why) == bool(workers))


def test_cgroup_quota_v2_and_v1(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert threads.cgroup_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_quota(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cgroup_quota(tmp_path) == 2.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # v1: no quota
    assert threads.cgroup_quota(tmp_path) is None
    assert threads.cgroup_quota(tmp_path / "absent") is None


def test_usable_cpus_reads_the_affinity_mask_and_the_quota(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(threads, "cgroup_quota", lambda root=None: 2.5)
    assert threads.usable_cpus() == 3
    monkeypatch.setattr(threads, "cgroup_quota", lambda root=None: None)
    assert threads.usable_cpus() == 4
    assert threads.default_threads(workers=2) == (2, "4 usable CPUs less 2 workers")


def test_set_threads_as_asked_or_by_default(monkeypatch):
    import torch

    monkeypatch.setattr(threads, "usable_cpus", lambda *a, **k: 3)
    assert threads.set_threads(None, workers=1) == 2 and torch.get_num_threads() == 2
    assert threads.describe() == "2 threads (3 usable CPUs less 1 worker)"
    assert threads.set_threads(1) == 1 and torch.get_num_threads() == 1
    assert threads.describe() == "1 thread (--threads)"


@pytest.mark.slow  # a subprocess: not in `make test-fast`
def test_passive_wait_is_set_before_torch_loads_and_never_overrides_the_user():
    code = (
        "import os, vqa_cache.threads as t; t.prefer_passive_wait(); "
        "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("GOMP_SPINCOUNT", None)

    def said(**given):
        out = subprocess.run([sys.executable, "-c", code], env={**env, **given}, capture_output=True, text=True)
        assert out.returncode == 0, out
        return out.stdout.split()

    assert said() == ["PASSIVE", "10000"]  # sleep after a short spin (about 0.1 ms)
    assert said(OMP_WAIT_POLICY="ACTIVE") == ["ACTIVE", "None"]  # (a spin count would cut the user's policy short)
    assert said(GOMP_SPINCOUNT="0") == ["PASSIVE", "0"]


@pytest.mark.slow  # a subprocess: not in `make test-fast`
def test_denormals_are_flushed_on_this_thread_and_on_the_threads_started_after():
    """flush_denormals(): a denormal float reads as zero on the calling thread and on OpenMP's threads started
    after it (a 2-thread op over a large tensor); $VQA_CACHE_DENORMALS=keep leaves them as they are."""
    code = (
        "import torch, vqa_cache.threads as t; on = t.flush_denormals(); torch.set_num_threads(2); "
        "x = torch.full((1 << 20,), 1e-39); print(on, int((x * 1.0).count_nonzero()), float(x[:1] * 1.0))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("VQA_CACHE_DENORMALS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "0", "0.0"], out
    kept = {**env, "VQA_CACHE_DENORMALS": "keep"}
    out = subprocess.run([sys.executable, "-c", code], env=kept, capture_output=True, text=True, check=True)
    on, nonzero, first = out.stdout.split()
    assert on == "False" and int(nonzero) == 1 << 20 and 0 < float(first) < 1.2e-38, out


def test_train_and_sweep_flush_denormals(cli, tmp_path, monkeypatch):
    """Stage two flushes denormals (threads.flush_denormals) before its first torch op (docs/training.md)."""
    import vqa_cache.search.trials as trials

    calls = []
    monkeypatch.setattr(threads, "flush_denormals", lambda: calls.append("train"))
    monkeypatch.setattr(trials, "flush_denormals", lambda: calls.append("sweep"))
    root = tmp_path / "cache"
    run_cli("--cache-dir", root, "extract", "--limit", 200, *FAST, "--threads", 1)
    r = cli("--cache-dir", root, "train", "--limit", 200, *FAST, "--epochs", 1, "--out", tmp_path / "run")
    assert r.code == 0, r
    assert calls == ["train"]
    args = ["--limit", 200, *FAST, "--trials", 1, "--set", "sweep.epochs=1", "--out", tmp_path / "sweep"]
    r = cli("--cache-dir", root, "sweep", "train/easyvqa-sweep.toml", *args)
    assert r.code == 0, r
    assert calls[:2] == ["train", "sweep"], calls


def test_train_threads_option_on_the_run_line_and_bad_values(cli, tmp_path):
    root = tmp_path / "cache"
    run_cli("--cache-dir", root, "extract", "--limit", 200, *FAST, "--threads", 1)
    r = cli(
        "--cache-dir", root, "train", "--limit", 200, *FAST, "--epochs", 1, "--threads", 1, "--out", tmp_path / "run"
    )
    assert r.code == 0, r
    assert any(line.startswith("run ") and "1 thread (--threads)" in line for line in r.out.splitlines()), r.out
    r = cli("--cache-dir", root, "train", "--limit", 200, *FAST, "--epochs", 1, "--out", tmp_path / "run2")
    assert r.code == 0, r
    assert any(line.startswith("run ") and "usable CPU" in line for line in r.out.splitlines()), r.out
    r = cli("--cache-dir", root, "train", "--limit", 200, *FAST, "--threads", 0, "--out", tmp_path / "run3")
    assert r.code == 2 and "--threads 0: expected at least 1" in r.err


def test_api_takes_threads(tmp_path):
    import vqa_cache

    with pytest.raises(vqa_cache.BadInput, match="--threads -1"):
        vqa_cache.train(cache_dir=tmp_path, threads=-1, verbose=False)
