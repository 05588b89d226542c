"""--log tensorboard|mlflow|wandb: each tracker's own reader (TensorBoard's EventAccumulator, MlflowClient, the
wandb offline run file) returns exactly the per-epoch values of metrics.json, the per-step train loss and the
params; a sweep logs each trial as its own run; a tracker whose extra is missing is one line, exit 2."""

from __future__ import annotations

import importlib.util
import json
import math
import struct

import pytest
from conftest import FAST, run_cli

LIMIT = ["--limit", 300]
EPOCHS = 2
QUICK_SWEEP = [
    "--set",
    "sweep.epochs=2",
    "--set",
    "sweep.startup_trials=2",
    "--set",
    "sweep.prune_startup_trials=2",
    "--set",
    "head.hidden=64",
    "--set",
    "space.head.hidden={choices=[32, 64]}",
]


def need(module: str, extra: str):
    return pytest.importorskip(module, reason=f"needs the [{extra}] extra: pip install 'vqa-cache[{extra}]'")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """(cache root, work folder, train(name, *args) -> run dir): one cache; a run per tracker, made once."""
    root = tmp_path_factory.mktemp("cache")
    base = tmp_path_factory.mktemp("work")
    run_cli("--cache-dir", root, "extract", *LIMIT, *FAST, "--workers", 0)
    made = {}

    def train(name, *args):
        if name not in made:
            with pytest.MonkeyPatch.context() as mp:
                mp.chdir(base)  # ./mlruns, mlflow's default here, lands in `base`
                mp.delenv("MLFLOW_TRACKING_URI", raising=False)
                mp.setenv("WANDB_MODE", "offline")
                mp.setenv("WANDB_CONFIG_DIR", str(base / "wandb-config"))
                mp.setenv("WANDB_CACHE_DIR", str(base / "wandb-cache"))
                run_cli("--cache-dir", root, "train", *LIMIT, *FAST, "--epochs", EPOCHS, "--out", base / name, *args)
            made[name] = base / name
        return made[name]

    return root, base, train


def metrics(run):
    return json.loads((run / "metrics.json").read_text())


def expected(run) -> dict:
    """{tag: [(epoch, value)]} of every number in metrics.json's epoch rows (as vqa_cache.tracking logs them)."""
    from vqa_cache.tracking import epoch_values

    out = {}
    for row in metrics(run)["epochs"]:
        for tag, value in epoch_values(row).items():
            out.setdefault(tag, []).append((row["epoch"], value))
    return out


def check_steps(run, steps: list[tuple[int, float]]):
    """Optimizer steps 1..N, the same number each epoch, each epoch's train loss within its steps' range."""
    numbers = [s for s, _ in steps]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) % EPOCHS == 0
    per = len(numbers) // EPOCHS
    for row in metrics(run)["epochs"]:
        values = [v for s, v in steps if (row["epoch"] - 1) * per < s <= row["epoch"] * per]
        assert all(math.isfinite(v) for v in values)
        assert min(values) - 1e-6 <= row["train_loss"] <= max(values) + 1e-6


def check_params(run, params: dict):
    config = json.loads((run / "config.json").read_text())
    assert str(params["optim.lr"]) == str(config["recipe"]["optim"]["lr"])
    assert params["head.name"] == "concat" and params["mode"] == "train"
    assert params["cache_keys.image"] == config["cache_keys"]["image"]
    assert params["cache_keys.question"] == config["cache_keys"]["question"]
    assert params["encoders.image"] == "resnet18" and params["encoders.image_weights"] == "random:0"
    assert params["encoders.text"] == "bow"


def test_tensorboard_event_files_hold_the_metrics_exactly(work):
    need("tensorboard", "tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.util import tensor_util

    run = work[2]("tb", "--log", "tensorboard")
    acc = EventAccumulator(str(run), size_guidance={"tensors": 0})  # 0: every event, not a sample
    acc.Reload()

    def series(tag):
        return [(e.step, tensor_util.make_ndarray(e.tensor_proto).item()) for e in acc.Tensors(tag)]

    want = expected(run)
    assert {"train_loss", "val_loss", "val_accuracy", "val_accuracy_per_type/yes/no", "lr", "seconds"} <= set(want)
    for tag, values in want.items():
        assert series(tag) == values, tag  # exact: double-precision scalars
    check_steps(run, series("step/train_loss"))
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    params = {
        k: v.string_value or v.number_value if v.WhichOneof("kind") != "bool_value" else v.bool_value
        for k, v in hparams.items()
    }
    check_params(run, params)


def test_mlflow_metric_history_equals_metrics_json(work):
    need("mlflow", "mlflow")
    from mlflow import MlflowClient

    _, base, train = work
    run = train("ml", "--log", "mlflow")
    client = MlflowClient(tracking_uri=(base / "mlruns").as_uri())  # the default, ./mlruns
    experiment = client.get_experiment_by_name("vqa-cache")
    [found] = client.search_runs([experiment.experiment_id], filter_string="tags.mlflow.runName = 'ml'")
    run_id = found.info.run_id
    assert found.info.status == "FINISHED"
    for tag, values in expected(run).items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, tag))
        assert history == values, tag
    check_steps(run, sorted((m.step, m.value) for m in client.get_metric_history(run_id, "step/train_loss")))
    check_params(run, found.data.params)


def wandb_records(path):
    """The records of a wandb offline run file (run-ID.wandb: a LevelDB-style log of protobuf Records: a
    7-byte header, then 32 KiB blocks of chunks, each crc32 (4 bytes), length (2), type (1: whole,
    2/3/4: first/middle/last part) and data)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def test_wandb_offline_run_holds_the_metrics(work):
    need("wandb", "wandb")
    run = work[2]("wb", "--log", "wandb")
    [path] = run.glob("wandb/offline-run-*/run-*.wandb")
    rows, params = [], {}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            rows.append(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            )
        elif kind == "run":
            params = {item.key: json.loads(item.value_json) for item in record.run.config.update}
    for tag, values in expected(run).items():
        assert [(r["epoch"], r[tag]) for r in rows if tag in r] == values, tag
    check_steps(run, [(r["step"], r["step/train_loss"]) for r in rows if "step/train_loss" in r])
    assert {r["step"] for r in rows if "step" in r} and params
    check_params(run, params)


def test_sweep_logs_each_trial_as_its_own_run(work, monkeypatch):
    need("mlflow", "mlflow")
    from mlflow import MlflowClient

    root, base, _ = work
    uri = (base / "sweep-mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for it for a file: URI given
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "sweep-test")
    run_cli(
        "--cache-dir",
        root,
        "sweep",
        "train/easyvqa-sweep.toml",
        *LIMIT,
        *FAST,
        *QUICK_SWEEP,
        "--trials",
        2,
        "--out",
        base / "sw",
        "--log",
        "mlflow",
    )
    client = MlflowClient(tracking_uri=uri)
    found = client.search_runs([client.get_experiment_by_name("sweep-test").experiment_id])
    by_name = {r.info.run_name: r for r in found}
    assert sorted(by_name) == ["sw/trials/0000", "sw/trials/0001"]
    for number in ("0000", "0001"):
        trial, run_id = base / "sw" / "trials" / number, by_name[f"sw/trials/{number}"].info.run_id
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "val_accuracy"))
        assert history == expected(trial)["val_accuracy"]
        assert by_name[f"sw/trials/{number}"].data.params["head.hidden"] == str(
            json.loads((trial / "config.json").read_text())["recipe"]["head"]["hidden"]
        )


@pytest.mark.parametrize("name", ["tensorboard", "mlflow", "wandb"])
def test_a_missing_extra_is_one_line_naming_the_install_command(cli, monkeypatch, tmp_path, name):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda module, *a: None if module == name else real(module, *a))
    r = cli("--cache-dir", tmp_path, "train", *FAST, "--log", name, "--out", tmp_path / "run")
    assert r.code == 2 and r.out == "", r
    assert r.err.strip() == (
        f"vqa-cache: error: --log {name}: {name} is not installed; install it with pip "
        f"install 'vqa-cache[{name}]' (or pip install {name})"
    )
    assert not (tmp_path / "run").exists()


def test_the_api_checks_log_too(tmp_path):
    import vqa_cache

    with pytest.raises(vqa_cache.BadInput, match="--log 'neptune': expected one of tensorboard, mlflow, wandb"):
        vqa_cache.train(log="neptune", out=tmp_path / "run", verbose=False)


def test_a_finetune_run_logs_its_epochs_and_both_learning_rates(tmp_path):
    need("tensorboard", "tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    run = tmp_path / "ft"
    run_cli(
        "finetune",
        "--limit",
        40,
        *FAST,
        "--epochs",
        1,
        "--set",
        "finetune.workers=0",
        "--set",
        "head.hidden=32",
        "--out",
        run,
        "--log",
        "tensorboard",
    )
    acc = EventAccumulator(str(run), size_guidance={"tensors": 0})
    acc.Reload()
    want = expected(run)
    assert {"encoder_lr", "train_seconds", "val_accuracy"} <= set(want)
    for tag, values in want.items():
        assert [(e.step, tensor_util.make_ndarray(e.tensor_proto).item()) for e in acc.Tensors(tag)] == values, tag
