import json

import pytest
import torch

from robustres import data as D
from robustres import engine
from robustres.models import init_model, steps_per_epoch
from robustres.spec import make_run_spec
from robustres.units import Options

CPU = torch.device("cpu")


EVERY_EPOCH = Options(checkpoint_seconds=0)


def run(spec, checkpoint=None, **kwargs):
    """One run alone: a pack of one."""
    return engine.train([spec], D.load(spec, "."), CPU, [checkpoint], options=EVERY_EPOCH, **kwargs)[0]


def test_two_moons_reaches_95_percent_at_h_0_1():
    spec = make_run_spec(dataset="two-moons", h=0.1)
    outcome = run(spec)
    assert outcome.status == "completed" and len(outcome.history) == spec.epochs
    assert outcome.final_test_acc > 0.95


def test_tiny_h_over_smooths_a_deep_mlp():
    # "Small, but not too small": h -> 0 leaves a near-linear classifier.
    tiny = run(make_run_spec(dataset="two-moons", depth=30, h=0.001, epochs=10))
    good = run(make_run_spec(dataset="two-moons", depth=30, h=0.1, epochs=10))
    assert tiny.final_test_acc < good.final_test_acc - 0.03


def test_divergence_is_a_result_with_epoch_and_step():
    outcome = run(make_run_spec(dataset="two-moons", depth=30, h=20.0, epochs=5))
    assert outcome.status == "diverged"
    assert outcome.diverged_epoch == 1 and 1 <= outcome.diverged_step <= 16
    assert outcome.final_test_acc is None and outcome.history == []


def test_learning_rate_schedule_steps_at_the_milestones():
    spec = make_run_spec(dataset="cifar10")
    assert [engine.lr_at(spec, e) for e in (0, 39, 40, 59, 60, 79)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_runs_differing_only_in_h_start_from_the_same_weights():
    a = init_model(make_run_spec(dataset="cifar10", h=0.1, seed=3), 10, (3, 32, 32))
    b = init_model(make_run_spec(dataset="cifar10", h=1.0, seed=3), 10, (3, 32, 32))
    c = init_model(make_run_spec(dataset="cifar10", h=0.1, seed=4), 10, (3, 32, 32))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("kwargs", [
    dict(dataset="two-moons", epochs=6),
    dict(dataset="synthetic", n_train=96, n_test=32, depth=8, epochs=4, batch_size=32, train_noise=0.1,
         milestones=(2,)),
])
def test_resume_after_an_interruption_equals_the_uninterrupted_run_bitwise(tmp_path, kwargs):
    spec = make_run_spec(**kwargs)
    whole = run(spec, tmp_path / "whole.pt")

    def stop_after_two(i, record, saved):
        if record.epoch == 2:
            raise Interrupt()

    with pytest.raises(Interrupt):
        run(spec, tmp_path / "cut.pt", on_epoch=stop_after_two)
    assert len(torch.load(tmp_path / "cut.pt", weights_only=True)["history"]) == 2
    resumed = run(spec, tmp_path / "cut.pt")

    strip = lambda h: [(r.epoch, r.train_loss, r.train_acc, r.test_loss, r.test_acc, r.lr) for r in h]  # noqa: E731
    assert strip(resumed.history) == strip(whole.history)  # exact, not approximate
    a = torch.load(tmp_path / "whole.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_resumed_pack_keeps_the_execution_it_started_with(tmp_path, monkeypatch):
    """Fused and in turn differ by rounding, so a resumed pack must not re-time the choice (a
    loaded machine could flip it): it goes on as it started, and matches the uninterrupted run."""
    specs = [make_run_spec(dataset="two-moons", depth=4, h=h, seed=s, epochs=4) for h, s in ((0.5, 0), (1.0, 1))]
    data = D.load(specs[0], ".")
    in_turn = Options(checkpoint_seconds=0, fuse=False)
    whole = engine.train(specs, data, CPU, [tmp_path / f"w{i}.pt" for i in range(2)], options=in_turn)

    def stop_after_two(i, record, saved):
        if record.epoch == 2 and i == 1:
            raise Interrupt()

    cut = [tmp_path / f"c{i}.pt" for i in range(2)]
    with pytest.raises(Interrupt):
        engine.train(specs, data, CPU, cut, on_epoch=stop_after_two, options=in_turn)
    assert all(torch.load(c, weights_only=True)["fused"] is False for c in cut)
    timed = []
    monkeypatch.setattr(engine, "choose_fuse", lambda *a: timed.append(1) or True)  # a flipped timing
    resumed = engine.train(specs, data, CPU, cut, options=EVERY_EPOCH)
    assert timed == []  # not timed again: the checkpoints say in turn
    strip = lambda h: [(r.epoch, r.train_loss, r.test_acc) for r in h]  # noqa: E731
    assert [strip(o.history) for o in resumed] == [strip(o.history) for o in whole]
    assert [o.fused for o in resumed] == [False, False]  # and each outcome says so
    # A fresh pack has no checkpoint to follow: the (flipped) timing decides, and it trains fused.
    fresh = engine.train(specs, data, CPU, [tmp_path / f"f{i}.pt" for i in range(2)], options=EVERY_EPOCH)
    assert timed == [1] and torch.load(tmp_path / "f0.pt", weights_only=True)["fused"] is True
    assert [o.fused for o in fresh] == [True, True] and [len(o.history) for o in fresh] == [4, 4]


def test_a_damaged_checkpoint_means_training_from_scratch(tmp_path):
    spec = make_run_spec(dataset="two-moons", epochs=3)
    (tmp_path / "c.pt").write_bytes(b"\x00garbage")
    outcome = run(spec, tmp_path / "c.pt")
    assert outcome.status == "completed" and len(outcome.history) == 3


def test_training_noise_changes_training_but_not_the_test_data():
    clean = run(make_run_spec(dataset="two-moons", epochs=3))
    noisy = run(make_run_spec(dataset="two-moons", epochs=3, train_noise=0.5))
    assert clean.history[-1].train_loss != noisy.history[-1].train_loss


def test_the_text_model_trains_end_to_end_with_char_swap_noise():
    spec = make_run_spec(dataset="synthetic", synthetic_like="ag-news", depth=9, n_train=16, n_test=8,
                         batch_size=8, epochs=1, train_noise=0.1)
    outcome = run(spec)
    assert outcome.status == "completed" and 0 <= outcome.history[0].test_acc <= 1


def test_a_last_batch_of_one_is_dropped_for_batch_norm_models_only():
    mlp = make_run_spec(dataset="two-moons", depth=3, batch_size=128)
    mlp_bn = make_run_spec(dataset="two-moons", depth=3, bn=True, batch_size=128)
    resnet = make_run_spec(dataset="synthetic", depth=8, batch_size=128)
    assert [steps_per_epoch(s, 129) for s in (mlp, mlp_bn, resnet)] == [2, 1, 1]  # 128 + 1
    assert [steps_per_epoch(s, 130) for s in (mlp, mlp_bn, resnet)] == [2, 2, 2]  # 128 + 2 is kept
    assert steps_per_epoch(mlp_bn, 128) == 1 and steps_per_epoch(mlp_bn, 257) == 2


def test_an_mlp_with_batch_norm_and_a_last_batch_of_one_trains(cli, tmp_path):
    code, out, err = cli("train", "--depth", "3", "--bn", "--limit-train", "129", "--epochs", "2", "--json")
    assert code == 0, err
    (run,) = json.loads(out)["runs"]
    assert run["status"] == "completed" and run["epochs_done"] == 2 and 0 <= run["final_test_acc"] <= 1, run


def test_a_fused_pack_sheds_its_dead_models_and_the_others_go_on_unchanged(monkeypatch):
    specs = [make_run_spec(dataset="two-moons", depth=30, h=h, seed=s, epochs=12)
             for h, s in ((0.1, 0), (20.0, 0), (0.5, 1), (20.0, 1))]  # h = 20 diverges in the first epoch
    data = D.load(specs[0], ".")
    sizes = []
    real_unit = engine.Unit

    def counting_unit(members, *args, **kwargs):
        sizes.append(len(members))
        return real_unit(members, *args, **kwargs)

    monkeypatch.setattr(engine, "Unit", counting_unit)
    packed = engine.train(specs, data, CPU, options=Options(fuse=True, checkpoint_seconds=1e9))
    assert [o.status for o in packed] == ["completed", "diverged", "completed", "diverged"]
    assert sizes == [4, 2]  # built with all four, rebuilt once with the two living models
    monkeypatch.setattr(engine, "Unit", real_unit)
    # The same pack with the dead models left in (frozen, still computed): the same trajectories,
    # to float rounding (a fused pack of K is itself only rounding-close to its models alone).
    monkeypatch.setattr(engine, "shrink", lambda units, dead, specs, data, device, options, streams: (units, streams))
    kept = engine.train(specs, data, CPU, options=Options(fuse=True, checkpoint_seconds=1e9))
    for i in (0, 2):
        assert len(packed[i].history) == len(kept[i].history) == 12
        for a, b in zip(packed[i].history, kept[i].history):
            assert a.train_loss == pytest.approx(b.train_loss, rel=1e-5)
            assert a.test_acc == pytest.approx(b.test_acc, abs=0.002)
