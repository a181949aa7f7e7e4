"""Split training on synthetic parties learns, matches central training and leaks no raw data.

The test entropy is pinned (tests/conftest.py), so every figure here reproduces exactly from run
to run. Each threshold is written as the figure it reproduces plus or minus a stated margin, at
least twice the spread of that figure over seven other PSI orders (other pinned values), so that
a change of machine or library that moves floating-point results does not fail it, and a change
that breaks learning does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from splitrec_core.channel.framing import ipc_bytes
from splitrec_core.config import Config
from splitrec_core.datasets.synthetic import write_parties
from splitrec_core.evaluate import evaluate
from splitrec_core.report import Report
from splitrec_core.training.epochs import Plan
from splitrec_core.training.wire import Wire
from tests.conftest import found_in, prepare_features, raw_values, with_training


def test_split_model_learns_both_tasks(trained):
    cfg, _, _, features, split, _ = trained
    metrics = evaluate(split.predictions, features[cfg.label_party].test,
                       cfg.task_names)
    # seven PSI orders: 0.900-0.905 / 0.913-0.915
    assert metrics["income_50k"]["auc"] > 0.9043 - 0.02
    assert metrics["never_married"]["auc"] > 0.9135 - 0.02
    assert metrics["income_50k"]["rows"] == len(pq.read_table(features["advertiser"].test))


def test_split_matches_central_training(trained):
    # Same seed, same batch order, same weights: the split computation is the central one
    _, _, _, _, split, central = trained
    a = pq.read_table(split.predictions).to_pandas()
    b = pq.read_table(central.predictions).to_pandas()
    assert a["position"].tolist() == b["position"].tolist()
    np.testing.assert_allclose(a.drop(columns="position"), b.drop(columns="position"), atol=1e-5)


def test_history_has_per_task_curves_and_gate_use(trained):
    cfg, _, _, _, split, central = trained
    for result in (split, central):
        history = json.loads(result.history.read_text())
        epochs = result.epochs_run
        assert len(history["loss"]) == epochs
        for task, kept_auc in (("income_50k", 0.8910), ("never_married", 0.9021)):
            assert len(history["task_loss"][task]) == epochs
            assert history["task_loss"][task][-1] < history["task_loss"][task][0]  # it learns
            assert len(history["val_auc"][task]) == epochs
            assert history["val_auc"][task][result.best_epoch - 1] > kept_auc - 0.03
            gates = np.array(history["gate_mean"][task])
            assert gates.shape == (epochs, cfg.model.num_experts)
            np.testing.assert_allclose(gates.sum(axis=1), 1.0, rtol=1e-5)
            assert len(history["gate_entropy"][task]) == epochs  # values: test_epochs.py
        total = [sum(history["task_loss"][t][e] for t in history["task_loss"])
                 for e in range(epochs)]
        np.testing.assert_allclose(history["loss"], total, rtol=1e-6)  # weights are 1 here


def test_early_stopping_keeps_the_best_validation_epoch(trained):
    cfg, _, _, _, split, central = trained
    for result in (split, central):
        history = json.loads(result.history.read_text())
        mean_auc = np.mean([history["val_auc"][t] for t in history["val_auc"]], axis=0)
        best = int(np.argmax(mean_auc)) + 1
        assert history["best_epoch"] == result.best_epoch == best
        # it ran until `patience` epochs brought nothing better, or out of epochs
        assert result.epochs_run == min(cfg.training.epochs, best + cfg.training.patience)
    assert split.best_epoch == central.best_epoch


def _embedding_bytes(rows: int, width: int, wire_dtype: str = "float32") -> int:
    """The size of one message carrying a [rows, width] embedding (or its gradient).

    The float32 array crosses as `wire_dtype`.
    """
    return ipc_bytes(Wire(wire_dtype).pack(np.zeros((rows, width), np.float32))).size


def test_traffic_is_counted_per_kind(trained):
    # Prepare: what the plan says crosses, message by message
    cfg, _, _, features, split, _ = trained
    train_rows = len(pq.read_table(features["advertiser"].train))
    test_rows = len(pq.read_table(features["advertiser"].test))
    plan = Plan.of(cfg.training, train_rows)
    epochs, followers, cut = split.epochs_run, len(cfg.feature_parties), cfg.model.cut_dim
    batch_sizes = [len(cats) for cats, in plan.batch_tensors(0, np.zeros((train_rows, 1)))]
    per_epoch = sum(_embedding_bytes(n, cut) for n in batch_sizes)

    # Assert: exact message and byte counts per kind (the fixture's hub carried its PSI too)
    assert {k: v["messages"] for k, v in split.channel.items()} == {
        "psi_blinded": 8, "psi_double_blinded": 4, "psi_positions": 2, "split_mask": 2,
        "embedding": epochs * len(batch_sizes) * followers,
        "gradient": epochs * len(batch_sizes) * followers,
        "validation_embedding": epochs * followers,  # one chunk of validation rows per epoch
        "early_stopping": epochs * followers,
        "eval_embedding": followers,  # one chunk of test rows
        "resume": 2 * followers,  # the epochs each holds, and the one all start from
    }
    assert split.channel["embedding"]["bytes"] == epochs * per_epoch * followers
    assert split.channel["gradient"]["bytes"] == split.channel["embedding"]["bytes"]
    assert split.channel["validation_embedding"]["bytes"] == (
        epochs * followers * _embedding_bytes(len(plan.validation), cut))
    assert split.channel["eval_embedding"]["bytes"] == followers * _embedding_bytes(test_rows, cut)


def test_no_raw_id_or_feature_value_crosses(trained):
    _, run, hub, _, _, _ = trained
    payload = b"".join(p for *_, p in hub.recorded)
    assert len(payload) > 100_000
    needles = raw_values(run / "data")

    # Assert
    assert len(needles) > 3000
    assert any(len(n) == 8 for n in needles)
    assert found_in(payload, needles) == []


def _train_variant(tmp_path, *, label_signal: float, privacy: dict | None = None, epochs: int = 8,
                   training: dict | None = None, task_weights: list[float] | None = None):
    """Split-train synthetic parties; also the label party alone; return both reports."""
    from splitrec_core.config import load_config
    from splitrec_core.datasets.synthetic import write_parties
    from splitrec_core.training.central import train_central
    from splitrec_core.training.local import train_split_local
    from splitrec_core.workspace import Workspace
    from tests.conftest import SYNTHETIC_TOML, prepare_features

    write_parties(tmp_path / "data", 4000, seed=7, label_signal=label_signal)
    cfg = load_config(SYNTHETIC_TOML)
    weights = task_weights or [t.weight for t in cfg.tasks]
    cfg = with_training(cfg, epochs=epochs, **(training or {}))
    cfg = cfg.model_copy(update={
        "privacy": cfg.privacy.model_copy(update=privacy or {}),
        "tasks": [t.model_copy(update={"weight": w})
                  for t, w in zip(cfg.tasks, weights, strict=True)]})
    features = prepare_features(cfg, tmp_path)
    space = Workspace(tmp_path)
    split = train_split_local(cfg, features, {p: space.trained(p) for p in features})
    alone = train_central(cfg, {"advertiser": features["advertiser"]},
                          space.label_only("advertiser"))
    tasks = cfg.task_names
    test = features["advertiser"].test
    return split, evaluate(split.predictions, test, tasks), evaluate(alone.predictions, test, tasks)


def test_federation_lifts_a_label_party_without_signal(tmp_path):
    # The label party's own columns carry nothing about either task
    _, split, alone = _train_variant(tmp_path, label_signal=0.0)
    # seven PSI orders: alone 0.483-0.519 / 0.492-0.516, lift 0.373-0.411 / 0.366-0.390
    for task, alone_auc, lift in (("income_50k", 0.5113, 0.3826),
                                  ("never_married", 0.5052, 0.3775)):
        assert alone[task]["auc"] < alone_auc + 0.08
        assert split[task]["auc"] - alone[task]["auc"] > lift - 0.08


def test_uncertainty_weighting_moves_each_weight_towards_one_over_its_loss(tmp_path):
    # Kendall et al.: for a loss L_t the optimum of exp(-s) L_t + s is exp(-s) = 1 / L_t, so with
    # BCE losses below 1 every task's weight climbs from 1, epoch after epoch
    result, metrics, _ = _train_variant(tmp_path, label_signal=0.3,
                                        training={"loss_weighting": "uncertainty"})
    history = json.loads(result.history.read_text())
    for task, weights in history["task_weight"].items():
        final_loss = history["task_loss"][task][-1]
        assert final_loss < 1
        assert 1.0 < weights[0] < weights[-1] < 1 / final_loss
        assert all(a < b for a, b in zip(weights, weights[1:]))
    assert metrics["income_50k"]["auc"] > 0.8910 - 0.03  # seven PSI orders: 0.888-0.895


def test_leakage_audit_sees_leaks_and_strong_noise_hides_them(tmp_path):
    # Built to leak: one epoch, so every audited gradient comes from a barely trained model, and
    # the income task's loss dominates the gradient
    dominated = [1.0, 0.001]
    leaky, _, _ = _train_variant(tmp_path / "plain", label_signal=0.3, epochs=1,
                                 task_weights=dominated)
    noisy, _, _ = _train_variant(tmp_path / "noisy", label_signal=0.3, epochs=1,
                                 task_weights=dominated, privacy={"gradient_noise": 1.0})
    # strongest attack, seven PSI orders: leaky 0.972-0.998; noisy 0.517-0.535 / 0.507-0.531
    assert max(leaky.leakage["income_50k"].values()) > 0.9914 - 0.06
    for task, strongest in (("income_50k", 0.5236), ("never_married", 0.5116)):
        assert max(noisy.leakage[task].values()) < strongest + 0.05


def test_a_label_party_without_features_trains_on_the_feature_parties_embeddings(
        tmp_path: Path, synthetic_cfg: Config):
    # Prepare: the synthetic federation, the advertiser declaring no feature columns
    from splitrec_core.psi import Alignment
    from splitrec_core.training.central import train_central, train_label_alone
    from splitrec_core.training.local import train_split_local
    from splitrec_core.workspace import Workspace

    write_parties(tmp_path / "data", 3000, seed=3)
    label = synthetic_cfg.label.model_copy(update={"categorical": [], "numeric": []})
    cfg = synthetic_cfg.model_copy(update={"parties": [label, *synthetic_cfg.feature_parties]})
    features = prepare_features(cfg, tmp_path)
    space, tasks = Workspace(tmp_path), cfg.task_names

    # Execute
    split = train_split_local(cfg, features, {p: space.trained(p) for p in features})
    central = train_central(cfg, features, space.central)
    alone = train_label_alone(cfg, features[cfg.label_party], space.label_only(cfg.label_party))

    # Assert: it learns from the others' columns, still exactly as central training does
    test = features[cfg.label_party].test
    metrics = evaluate(split.predictions, test, tasks)
    assert min(m["auc"] for m in metrics.values()) > 0.8
    a, b = (pq.read_table(r.predictions).to_pandas() for r in (split, central))
    np.testing.assert_allclose(a.drop(columns="position"), b.drop(columns="position"), atol=1e-5)
    # its own embedding has width 0 and its bottom no weights: the top sees the others' alone
    import keras

    top = keras.models.load_model(split.models["top"])
    cut = cfg.model.cut_dim
    assert [tuple(i.shape) for i in top.inputs] == [(None, 0), (None, cut), (None, cut)]
    assert keras.models.load_model(split.models[cfg.label_party]).weights == []
    # alone it can only predict the base rate, and the report says so
    baseline = evaluate(alone.predictions, test, tasks)
    assert {m["auc"] for m in baseline.values()} == {0.5}
    report = Report.of(metrics, Alignment({}, 1, 1, 1, {}), split, baseline,
                       label_has_features=False)
    assert any("holds no feature columns" in note for note in report.notes)
    assert report.lift["income_50k"]["lift"] == metrics["income_50k"]["auc"] - 0.5


@pytest.mark.parametrize("xla", [False, True], ids=["graph", "xla"])
def test_embedding_ahead_pipelines_with_stale_bottoms(trained, tmp_path, xla):
    # One batch ahead, each feature party embeds batch i+1 before batch i's gradient is back:
    # no longer the central computation, but the same messages and nearly the same model (with
    # XLA too, its steps compiled before the first batch for the full and the remainder batch)
    from splitrec_core.training.local import train_split_local

    cfg, _, _, features, _, _ = trained
    # Both keep their last epoch: early stopping choosing different epochs adds its own spread
    # to the staleness's (against the fixture's early-stopped run, 0.024 AUC apart once in ~12)
    cfg = with_training(cfg, validation_fraction=0.0)
    split = train_split_local(cfg, features, {p: tmp_path / "sequential" / p for p in features})
    cfg = with_training(cfg, embed_ahead=1, xla=xla)
    ahead = train_split_local(cfg, features, {p: tmp_path / "ahead" / p for p in features})
    tasks = cfg.task_names
    label_test = features[cfg.label_party].test
    sequential = evaluate(split.predictions, label_test, tasks)
    pipelined = evaluate(ahead.predictions, label_test, tasks)
    a = pq.read_table(ahead.predictions).to_pandas().drop(columns="position")
    b = pq.read_table(split.predictions).to_pandas().drop(columns="position")
    # the stale steps changed the model (largest change of a prediction 0.059-0.122 over seven PSI
    # orders), but not its quality (AUC moved by at most 0.0051 / 0.0009 over those orders)
    assert np.abs(a.to_numpy() - b.to_numpy()).max() > 0.0828 - 0.05
    for task, moved in (("income_50k", 0.0026), ("never_married", 0.0008)):
        assert abs(pipelined[task]["auc"] - sequential[task]["auc"]) < moved + 0.015
    plan = Plan.of(cfg.training, len(pq.read_table(features["advertiser"].train)))
    batches = ahead.epochs_run * -(-len(plan.fit) // cfg.training.batch_size)
    for kind in ("embedding", "gradient"):
        assert ahead.channel[kind]["messages"] == batches * len(cfg.feature_parties)


def test_float16_on_the_wire_halves_the_cut_layer_bytes_and_keeps_the_model(trained, tmp_path):
    from splitrec_core.training.local import train_split_local

    cfg, _, _, features, split, _ = trained
    cfg = with_training(cfg, wire_dtype="float16")
    half = train_split_local(cfg, features, {p: tmp_path / p for p in features})
    tasks = cfg.task_names
    label_test = features[cfg.label_party].test
    full, halved = (evaluate(r.predictions, label_test, tasks) for r in (split, half))

    for kind in ("embedding", "gradient", "validation_embedding", "eval_embedding"):
        assert half.channel[kind]["messages"] == split.channel[kind]["messages"]
        payload = split.channel[kind]["bytes"] - half.channel[kind]["bytes"]  # float32 - float16
        assert 0.45 < payload / split.channel[kind]["bytes"] < 0.5
    for task in tasks:  # rounding to float16 moves the model a little, not its quality
        assert abs(halved[task]["auc"] - full[task]["auc"]) < 0.005


def test_int8_on_the_wire_cuts_the_cut_layer_bytes_and_keeps_the_model(trained, tmp_path):
    # Prepare: what the plan says crosses, each message int8 with a float32 scale per row
    from splitrec_core.training.local import train_split_local

    cfg, _, _, features, split, _ = trained
    cfg = with_training(cfg, wire_dtype="int8")
    train_rows = len(pq.read_table(features["advertiser"].train))
    test_rows = len(pq.read_table(features["advertiser"].test))
    plan, cut = Plan.of(cfg.training, train_rows), cfg.model.cut_dim
    followers = len(cfg.feature_parties)

    # Execute
    packed = train_split_local(cfg, features, {p: tmp_path / p for p in features})

    # Assert: exact bytes per kind; with a cut of 8, a row's 8 int8 and its 4-byte scale are
    # 12 bytes against float32's 32, plus each message's framing
    batch_bytes = sum(_embedding_bytes(len(cats), cut, "int8")
                      for cats, in plan.batch_tensors(0, np.zeros((train_rows, 1))))
    expected = {"embedding": packed.epochs_run * followers * batch_bytes,
                "validation_embedding": packed.epochs_run * followers
                * _embedding_bytes(len(plan.validation), cut, "int8"),
                "eval_embedding": followers * _embedding_bytes(test_rows, cut, "int8")}
    expected["gradient"] = expected["embedding"]
    for kind, size in expected.items():
        assert packed.channel[kind]["bytes"] == size
    per_epoch = [r.channel["embedding"]["bytes"] / r.epochs_run for r in (packed, split)]
    assert 0.375 < per_epoch[0] / per_epoch[1] < 0.42  # census's cut of 32: 0.28 (test_wire.py)
    tasks = cfg.task_names
    label_test = features[cfg.label_party].test
    full, rounded = (evaluate(r.predictions, label_test, tasks) for r in (split, packed))
    # int8 AUC less float32's: here -0.0006 / -0.0000; over five other PSI orders -0.0040 to
    # +0.0012 / -0.0006 to +0.0249 (in that order float32 itself fell short, 0.890). Rounding
    # moves the model a little: the margin is twice the worst loss seen
    for task in tasks:
        assert rounded[task]["auc"] > full[task]["auc"] - 0.008


def test_batches_per_message_cuts_the_messages_and_keeps_the_model(trained, tmp_path):
    # Three batches' embeddings (and gradients) per message, one message ahead: the feature
    # parties' bottoms up to five batches stale, a third of the training messages
    from splitrec_core.training.local import train_split_local

    cfg, _, _, features, split, _ = trained
    cfg = with_training(cfg, batches_per_message=3, embed_ahead=1)
    bundled = train_split_local(cfg, features, {p: tmp_path / p for p in features})
    tasks = cfg.task_names
    label_test = features[cfg.label_party].test
    one, three = (evaluate(r.predictions, label_test, tasks) for r in (split, bundled))

    plan = Plan.of(cfg.training, len(pq.read_table(features["advertiser"].train)))
    batches = -(-len(plan.fit) // cfg.training.batch_size)
    for kind in ("embedding", "gradient"):
        per_epoch = bundled.channel[kind]["messages"] / bundled.epochs_run
        assert per_epoch == -(-batches // 3) * len(cfg.feature_parties)
        # the same floats each epoch, in fewer messages (each has its own IPC framing)
        floats = split.channel[kind]["bytes"] / split.epochs_run
        assert 0.9 < bundled.channel[kind]["bytes"] / bundled.epochs_run / floats <= 1.0
    for task in tasks:
        assert abs(three[task]["auc"] - one[task]["auc"]) < 0.015


@pytest.mark.parametrize(("rows", "sizes"), [(2500, [1024, 452]), (2048, [1024]), (700, [700])])
def test_plan_names_every_batch_size_an_epoch_has(rows, sizes):
    # XLA compiles a step per batch size before training: these must be all the sizes there are
    from splitrec_core.config import TrainingConfig

    plan = Plan.of(TrainingConfig(batch_size=1024, validation_fraction=0.0), rows)
    assert plan.batch_sizes == sizes
    met = {len(cats) for cats, in plan.batch_tensors(0, np.zeros((rows, 1)))}
    assert sorted(met, reverse=True) == sizes
