"""The contract of packs: K fused models compute exactly what the K models compute alone."""

import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from robustres import data as D
from robustres import engine, tuning
from robustres import transforms as T
from robustres.execution.plan import Pack, make_packs
from robustres.models import build_pack, init_model, unfuse
from robustres.spec import make_run_spec
from robustres.store import Store
from robustres.units import Options, Unit

CPU = torch.device("cpu")
EVERY_EPOCH = Options(checkpoint_seconds=0)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


FAMILIES = {
    "resnet": dict(dataset="synthetic", depth=8, n_train=64, n_test=16),
    "vdcnn": dict(dataset="synthetic", synthetic_like="ag-news", depth=9, n_train=16, n_test=8),
    "mlp": dict(dataset="two-moons", depth=6, hidden=8, bn=True),
}


def inputs_for(family: str, k: int, b: int, g: torch.Generator):
    """Each model's own batch, and the same batches as the fused network's input."""
    if family == "resnet":
        each = [torch.randn(b, 3, 32, 32, generator=g) for _ in range(k)]
        return each, torch.cat(each, dim=1)
    if family == "vdcnn":
        each = [torch.randint(0, 70, (b, 128), generator=g) for _ in range(k)]
        return each, torch.stack(each, dim=1)
    each = [torch.randn(b, 2, generator=g) for _ in range(k)]
    return each, torch.cat(each, dim=1)


def check_equivalence(family, specs, pack, b=8, grads=True):
    """Worst relative error of outputs, per-model losses and parameter gradients, pack vs alone.

    Gradients are compared per tensor. Biases that feed a BatchNorm have a gradient that is zero up
    to rounding; a tensor whose gradient is below 1e-3 of its model's whole gradient is therefore
    compared against that whole gradient (absolute error <= 1e-5 of it) instead of against itself.
    """
    num_classes = 4 if family == "vdcnn" else (10 if family == "resnet" else 2)
    shape = {"resnet": (3, 32, 32), "vdcnn": (1024,), "mlp": (2,)}[family]
    dtype = next(pack.parameters()).dtype
    singles = [unfuse(pack, specs, k, num_classes, shape).to(dtype) for k in range(len(specs))]
    for module in [pack, *singles]:
        for m in module.modules():
            if hasattr(m, "scale"):
                m.scale = m.scale.to(dtype)
    g = torch.Generator().manual_seed(1)
    each, fused_in = inputs_for(family, len(specs), b, g)
    if family != "vdcnn":
        each, fused_in = [e.to(dtype) for e in each], fused_in.to(dtype)
    labels = torch.randint(0, num_classes, (b, len(specs)), generator=g)

    pack.zero_grad()
    out = pack(fused_in)
    losses = F.cross_entropy(out.permute(0, 2, 1), labels, reduction="none").mean(0)
    losses.sum().backward()
    fused_grads = {name: p.grad.chunk(len(specs)) for name, p in pack.named_parameters()}
    worst = 0.0
    for k, single in enumerate(singles):
        single.train(pack.training)
        single.zero_grad()
        alone = single(each[k])[:, 0]
        loss = F.cross_entropy(alone, labels[:, k])
        loss.backward()
        worst = max(worst, rel_err(out[:, k], alone), abs(losses[k].item() - loss.item()) / loss.item())
        if not grads:
            continue
        whole = torch.cat([p.grad.flatten() for p in single.parameters()]).norm()
        for name, p in single.named_parameters():
            scale = p.grad.norm() if p.grad.norm() >= 1e-3 * whole else whole
            worst = max(worst, ((fused_grads[name][k] - p.grad).norm() / scale).item())
    return worst


def _train_a_little(family, specs, pack):
    opt = torch.optim.SGD(pack.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        _, x = inputs_for(family, len(specs), 8, g)
        x = x if family == "vdcnn" else x.to(next(pack.parameters()).dtype)
        y = torch.randint(0, 2, (8, len(specs)), generator=g)
        opt.zero_grad()
        F.cross_entropy(pack(x).permute(0, 2, 1), y, reduction="none").mean(0).sum().backward()
        opt.step()


@pytest.mark.parametrize("family", FAMILIES)
def test_fused_outputs_losses_and_gradients_equal_each_model_alone(family):
    # float32, at the paper's h values up to the plain ResNet (h = 1).
    specs = [make_run_spec(**FAMILIES[family], h=h, seed=s) for h, s in ((0.1, 0), (0.5, 1), (1.0, 2))]
    data = D.load(specs[0], ".")
    pack = build_pack(specs, data.num_classes, data.input_shape)
    # Fresh: the pack holds exactly the weights each run starts from alone.
    for k, spec in enumerate(specs):
        alone = init_model(spec, data.num_classes, data.input_shape).state_dict()
        mine = unfuse(pack, specs, k, data.num_classes, data.input_shape).state_dict()
        assert all(torch.equal(alone[n], mine[n]) for n in alone)
    assert check_equivalence(family, specs, pack) <= 1e-5
    # After training: a few SGD steps of the fused network, then the same check on its new state,
    # in training mode (batch statistics), and the outputs in evaluation mode (running statistics),
    # where gradients are never taken.
    _train_a_little(family, specs, pack)
    assert check_equivalence(family, specs, pack) <= 1e-5
    pack.eval()
    assert check_equivalence(family, specs, pack, grads=False) <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_fusion_is_exact_in_float64_at_any_h(family):
    """The structure is exact: in float64 pack and lone models agree to 1e-10 even at h = 2 and 20.

    (In float32 a ResNet at h = 2 is ill-conditioned: two correct float32 computations of one
    gradient differ by ~1e-3 there, which is the paper's point about large h, not a packing error.)
    """
    specs = [make_run_spec(**FAMILIES[family], h=h, seed=s) for h, s in ((0.1, 0), (2.0, 1), (20.0, 2))]
    data = D.load(specs[0], ".")
    pack = build_pack(specs, data.num_classes, data.input_shape).double()
    assert check_equivalence(family, specs, pack) <= 1e-10
    _train_a_little(family, specs, pack)
    assert check_equivalence(family, specs, pack) <= 1e-10


def _step_losses(units, data, steps, batch_size, specs):
    order = T.order(torch.tensor([s.seed for s in specs]), 0, len(data.train_y))
    losses = []
    for unit in units:
        unit.start_epoch()
    for step in range(steps):
        losses.append(torch.cat([u.train_step(data, order, 0, step % (len(data.train_y) // batch_size), batch_size)
                                 for u in units]))
    return torch.stack(losses)  # [steps, K]


def test_a_packed_run_follows_its_lone_trajectory_at_small_h():
    # Pack of four ResNets (h = 0.1, 0.5, 1, 2) against the h = 0.1 run alone: 20 SGD steps at
    # lr 0.1 on random data. For scale: on this CPU two lone runs that differ only in the
    # convolution library (oneDNN or PyTorch's own) drift apart by ~7e-4 over the same 20 steps.
    specs = [make_run_spec(dataset="synthetic", depth=8, n_train=640, n_test=16, batch_size=64, h=h, seed=0)
             for h in (0.1, 0.5, 1.0, 2.0)]
    data = D.load(specs[0], ".")
    packed = _step_losses([Unit([0, 1, 2, 3], specs, data, CPU, Options())], data, 20, 64, specs)
    alone = _step_losses([Unit([0], specs, data, CPU, Options())], data, 20, 64, specs)
    assert abs(packed[0, 0] - alone[0, 0]) <= 1e-6 * alone[0, 0]  # same weights, same first batch
    drift = ((packed[:, 0] - alone[:, 0]).abs() / alone[:, 0].abs()).max().item()
    assert drift <= 1e-4, f"relative drift {drift:.2e}"


def test_a_diverging_pack_mate_leaves_the_others_untouched():
    specs = [make_run_spec(dataset="two-moons", depth=30, epochs=3, h=h, seed=0) for h in (20.0, 0.1)]
    data = D.load(specs[0], ".")
    packed = _step_losses([Unit([0, 1], specs, data, CPU, Options())], data, 20, 64, specs)
    alone = _step_losses([Unit([1], specs, data, CPU, Options())], data, 20, 64, specs)
    assert not torch.isfinite(packed[:, 0]).all()  # the h = 20 model did blow up
    assert torch.isfinite(packed[:, 1]).all()
    drift = ((packed[:, 1] - alone[:, 0]).abs() / alone[:, 0].abs()).max().item()
    assert drift <= 1e-4, f"relative drift {drift:.2e}"

    # Through the whole engine: statuses, and the survivor's epochs as alone.
    out = engine.train(specs, data, CPU, options=Options(fuse=True))
    solo = engine.train(specs[1:], data, CPU, options=Options(fuse=True))[0]
    assert out[0].status == "diverged" and out[0].diverged_epoch == 1 and out[0].history == []
    assert out[1].status == "completed" and len(out[1].history) == 3
    for a, b in zip(out[1].history, solo.history):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4)
        assert a.test_acc == pytest.approx(b.test_acc, abs=2e-3)


def test_diverged_slices_are_zeroed_and_frozen():
    specs = [make_run_spec(dataset="two-moons", depth=30, h=h) for h in (20.0, 0.1)]
    data = D.load(specs[0], ".")
    unit = Unit([0, 1], specs, data, CPU, Options())
    _step_losses([unit], data, 5, 64, specs)
    assert unit.alive.tolist() == [False, True]
    unit.freeze([0])
    before = {n: p.detach().clone() for n, p in unit.model.named_parameters()}
    order = T.order(unit.seeds, 1, len(data.train_y))
    for step in range(5):
        losses = unit.train_step(data, order, 1, step, 64)
        assert torch.isfinite(losses[1])
    for name, p in unit.model.named_parameters():
        dead, live = p.detach().view(2, -1)
        assert torch.equal(dead, torch.zeros_like(dead)), name  # zeroed and frozen
        assert not torch.equal(live, before[name].view(2, -1)[1]), name  # the survivor trains on


@pytest.mark.parametrize("fuse", [True, False])
def test_fused_and_in_turn_execution_agree(fuse):
    specs = [make_run_spec(dataset="two-moons", depth=5, epochs=3, h=h, seed=s) for h in (0.1, 0.5) for s in (0, 1)]
    data = D.load(specs[0], ".")
    packed = engine.train(specs, data, CPU, options=Options(fuse=fuse))
    for spec, outcome in zip(specs, packed):
        alone = engine.train([spec], data, CPU)[0]
        for a, b in zip(outcome.history, alone.history):
            assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4)
            assert a.test_loss == pytest.approx(b.test_loss, rel=1e-4)


def test_pack_resumes_bitwise_after_an_interruption(tmp_path, train_cut_and_resumed):
    specs = [make_run_spec(dataset="synthetic", depth=8, n_train=96, n_test=32, batch_size=32, epochs=4,
                           h=h, seed=s, train_noise=noise) for h, s, noise in ((0.1, 0, 0.0), (1.0, 1, 0.1))]
    data = D.load(specs[0], ".")
    whole, resumed, _, cut = train_cut_and_resumed(specs, data)
    for a, b in zip(whole, resumed):
        assert [(r.train_loss, r.test_acc) for r in a.history] == [(r.train_loss, r.test_acc) for r in b.history]
    for i in range(2):
        x = torch.load(tmp_path / f"w{i}.pt", weights_only=True)
        y = torch.load(cut[i], weights_only=True)
        assert all(torch.equal(x["model"][n], y["model"][n]) for n in x["model"])
        # A member's checkpoint is that run alone: it loads into an ordinary single model.
        init_model(specs[i], data.num_classes, data.input_shape).load_state_dict(y["model"])


class _Killed(Exception):
    pass


@pytest.mark.parametrize("phase", ["writing", "moved-aside", "tidying"])
def test_a_pack_killed_while_saving_resumes_as_one_pack_at_one_epoch(tmp_path, monkeypatch, phase):
    # A fused pack's models compute alike only to float rounding with other pack-mates, so a kill
    # between its checkpoint files must not leave them at different epochs (they would resume in
    # different packs). Cut at epoch 3's save: after one new file (writing), after moving the second
    # run's old file aside (moved-aside) or after every new file, while removing the old ones (tidying).
    from robustres import checkpoints

    specs = [make_run_spec(dataset="two-moons", depth=4, hidden=8, epochs=6, h=h, seed=1) for h in (0.1, 0.5, 1.0)]
    data = D.load(specs[0], ".")
    fused = Options(checkpoint_seconds=0, fuse=True)
    whole = engine.train(specs, data, CPU, [tmp_path / f"w{i}.pt" for i in range(3)], options=fused)
    cut = [tmp_path / f"{s.run_id}.pt" for s in specs]

    real_save, real_replace, real_unlink = checkpoints.save_checkpoint, checkpoints.os.replace, Path.unlink
    seen = {"saves": 0, "moves": 0}

    def save(path, state):
        if len(state["history"]) == 3 and phase == "writing" and seen["saves"] == 1:
            raise _Killed
        seen["saves"] += len(state["history"]) == 3
        real_save(path, state)

    def move(src, dst):
        if str(dst).endswith(".prev") and phase == "moved-aside" and seen["epoch3"]:
            seen["moves"] += 1
            if seen["moves"] == 2:
                raise _Killed
        return real_replace(src, dst)

    def unlink(self, missing_ok=False):
        if self.name.endswith(".prev") and phase == "tidying" and seen["saves"] == 3:
            raise _Killed
        return real_unlink(self, missing_ok=missing_ok)

    def on_epoch(i, record, saved):
        seen["epoch3"] = record.epoch == 2  # the next save is epoch 3's

    seen["epoch3"] = False
    monkeypatch.setattr(checkpoints, "save_checkpoint", save)
    monkeypatch.setattr(checkpoints.os, "replace", move)
    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(_Killed):
        engine.train(specs, data, CPU, cut, on_epoch=on_epoch, options=fused)
    monkeypatch.undo()

    epochs = {len(checkpoints.load_checkpoint(path, s.run_id)["history"]) for path, s in zip(cut, specs)}
    assert epochs == ({3} if phase == "tidying" else {2})  # all or nothing: one epoch for the pack
    assert list(tmp_path.glob("*.prev"))  # the evidence of the cut save is there (read, not yet undone)
    resumed = engine.train(specs, data, CPU, cut, options=fused)
    assert not list(tmp_path.glob("*.prev"))
    for i, (a, b) in enumerate(zip(whole, resumed)):
        assert [(r.train_loss, r.test_acc) for r in a.history] == [(r.train_loss, r.test_acc) for r in b.history]
        x, y = torch.load(tmp_path / f"w{i}.pt", weights_only=True), torch.load(cut[i], weights_only=True)
        assert all(torch.equal(x["model"][n], y["model"][n]) for n in x["model"])


def test_a_pack_refuses_members_at_different_epochs(tmp_path):
    specs = [make_run_spec(dataset="two-moons", depth=3, epochs=3, seed=s) for s in (0, 1)]
    data = D.load(specs[0], ".")
    engine.train(specs[:1], data, CPU, [tmp_path / "a.pt"], options=EVERY_EPOCH)
    with pytest.raises(ValueError, match="resumes together"):
        engine.train(specs, data, CPU, [tmp_path / "a.pt", tmp_path / "b.pt"])


def test_make_packs_groups_by_architecture_and_progress_and_cuts_evenly():
    runs = [make_run_spec(dataset="two-moons", depth=d, h=h, seed=s)
            for d in (3, 5) for h in (0.1, 0.5, 1.0) for s in (0, 1)]  # 2 architectures x 6 runs
    packs = make_packs(runs, None)
    assert [p.k for p in packs] == [6, 6] and {r.depth for r in packs[0].runs} == {3}
    assert [p.k for p in make_packs(runs, 4)] == [3, 3, 3, 3]
    assert [p.k for p in make_packs(runs[:5], 2)] == [1, 2, 2]
    progress = {runs[0].run_id: 2}
    packs = make_packs(runs[:6], None, progress)
    assert sorted((p.k, p.start_epoch) for p in packs) == [(1, 2), (5, 0)]
    assert sum(p.k for p in make_packs(runs, 1)) == 12
    different = [runs[0], runs[0].with_(epochs=7)]  # the schedule is shared within a pack
    assert len(make_packs(different, None)) == 2
    assert Pack(tuple(runs[:2])).k == 2


def test_packs_are_cut_from_the_whole_request_so_a_resumed_run_keeps_its_pack_mates():
    runs = [make_run_spec(dataset="two-moons", depth=3, h=h, seed=s) for h in (0.1, 0.5, 1.0) for s in range(3)]
    whole = make_packs(runs, 4)  # 9 runs, at most 4: 3, 3, 3
    assert [p.k for p in whole] == [3, 3, 3]
    # The first pack and one run of the second are done: the rest train beside the same mates,
    # not re-cut (6 left at most 4 would be 3, 3 too, but 5 left would be 2, 3).
    left = [r for r in runs if r not in whole[0].runs and r != whole[1].runs[0]]
    assert [p.runs for p in make_packs(runs, 4, todo=left)] == [whole[1].runs[1:], whole[2].runs]
    assert [p.k for p in make_packs(left, 4)] == [2, 3]  # what cutting the rest afresh would do
    # Mates whose checkpoints stopped at different epochs (a search's rungs) split by epoch.
    progress = {whole[2].runs[0].run_id: 4}
    packs = make_packs(runs, 4, progress, todo=whole[2].runs)
    assert [(p.runs, p.start_epoch) for p in packs] == [(whole[2].runs[:1], 4), (whole[2].runs[1:], 0)]


def test_auto_pack_size_on_the_cpu():
    specs = [make_run_spec(dataset="two-moons", depth=4, h=h) for h in (0.1, 0.2, 0.5)]
    data = D.load(specs[0], ".")
    k = tuning.auto_pack_size(specs, data, CPU, Options())
    assert 1 <= k <= 3


def test_the_fuse_choice_is_a_rule_by_device_and_family_and_never_a_timing(monkeypatch):
    mlps = [make_run_spec(dataset="two-moons", depth=4, h=h) for h in (0.1, 0.2)]
    resnets = [make_run_spec(dataset="synthetic", depth=8, h=h) for h in (0.1, 0.2)]
    texts = [make_run_spec(dataset="synthetic", synthetic_like="ag-news", depth=9, h=h) for h in (0.1, 0.2)]
    monkeypatch.setattr(time, "perf_counter", lambda: 1 / 0)  # any timing would raise
    cuda = torch.device("cuda")
    assert [tuning.choose_fuse(p, CPU, Options()) for p in (mlps, resnets, texts)] == [True, False, False]
    assert [tuning.choose_fuse(p, cuda, Options()) for p in (mlps, resnets, texts)] == [True, True, True]
    assert tuning.choose_fuse(mlps, CPU, Options(fuse=False)) is False
    assert tuning.choose_fuse(resnets, CPU, Options(fuse=True)) is True
    assert tuning.choose_fuse(resnets[:1], CPU, Options()) is True


def test_a_runs_row_records_how_it_executed(cli, tmp_path):
    code, _, err = cli("train", "--depth", "3", "--h", "0.1,1", "--epochs", "1", "--threads", "1")
    assert code == 0, err
    code, _, err = cli("train", "--depth", "4", "--h", "0.1,1", "--epochs", "1", "--no-fuse")
    assert code == 0, err
    runs = Store(tmp_path / "store").runs().sort_values(["depth", "h"])
    assert list(runs.execution) == ["fused", "fused", "in turn", "in turn"]
    assert list(runs.threads)[:2] == [1, 1]
