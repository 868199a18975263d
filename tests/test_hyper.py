"""Per-model hyperparameters in one fused pack: each model trains with its own lr, momentum and
weight decay exactly as it would alone, and as torch's own optimizer would train it."""

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from robustres import data as D
from robustres import engine
from robustres.execution.dryrun import dry_run
from robustres.execution.plan import make_packs
from robustres.models import build_pack, init_model
from robustres.optimizers import PackOptimizer
from robustres.spec import make_execution, make_run_spec
from robustres.units import Options, Unit

CPU = torch.device("cpu")
FUSED = Options(fuse=True, checkpoint_seconds=0)
# Rounding-level agreement over a few epochs: float32 has 24 bits (6e-8).
TIGHT = dict(rtol=1e-5, atol=1e-6)
# Three models that share seed and h: they differ in nothing but their optimizer's hyperparameters.
HYPER = {
    "sgd": [dict(lr=0.05, momentum=0.9, weight_decay=0.0), dict(lr=0.2, momentum=0.5, weight_decay=5e-3),
            dict(lr=0.5, momentum=0.0, weight_decay=1e-3)],
    "adam": [dict(lr=0.003, weight_decay=0.0), dict(lr=0.02, weight_decay=5e-3), dict(lr=0.05, weight_decay=1e-3)],
}


def moons(optimizer, **changes):
    return make_run_spec(**{**dict(dataset="two-moons", depth=4, hidden=8, epochs=4, milestones=(2,), h=0.5, seed=3,
                                   optimizer=optimizer), **changes})


def train(specs, tmp_path, tag, options=FUSED):
    data = D.load(specs[0], ".")
    paths = [tmp_path / f"{tag}{i}.pt" for i in range(len(specs))]
    outcomes = engine.train(specs, data, CPU, paths, options=options)
    return outcomes, [torch.load(p, weights_only=True) for p in paths]


def epochs(outcome):
    return torch.tensor([[r.train_loss, r.train_acc, r.test_loss, r.test_acc, r.lr] for r in outcome.history],
                        dtype=torch.float64)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_model_in_a_pack_of_other_hyperparameters_trains_as_it_does_alone(optimizer, tmp_path):
    specs = [moons(optimizer, **hyper) for hyper in HYPER[optimizer]]
    assert len(make_packs(specs, None)) == 1  # one pack, one fused network
    packed, packed_states = train(specs, tmp_path, "pack")
    assert all(o.fused and o.status == "completed" and len(o.history) == 4 for o in packed)
    alone = [train([spec], tmp_path, f"alone{i}") for i, spec in enumerate(specs)]
    for i, (outcome, (solo, solo_states)) in enumerate(zip(packed, alone)):
        # every epoch's losses and accuracies, and its lr (its own, times the shared schedule)
        assert_close(epochs(outcome), epochs(solo[0]), **TIGHT)
        assert [r.lr for r in outcome.history] == pytest.approx([specs[i].lr] * 2 + [specs[i].lr * 0.1] * 2)
        # the final weights and the optimizer's state
        for name, value in solo_states[0]["model"].items():
            assert_close(packed_states[i]["model"][name], value, **TIGHT)
        for key, entry in solo_states[0]["optimizer"]["state"].items():
            for name, value in entry.items():
                assert_close(packed_states[i]["optimizer"]["state"][key][name], value, **TIGHT)
        assert packed_states[i]["optimizer"]["param_groups"] == solo_states[0]["optimizer"]["param_groups"]
    # The check can tell the models apart: trained alone, they end far beyond its tolerance.
    for a, b in ((0, 1), (1, 2)):
        assert not torch.allclose(epochs(alone[a][0][0])[:, 0], epochs(alone[b][0][0])[:, 0], **TIGHT)


def test_a_resnet_pack_of_learning_rates_follows_each_lone_run():
    # Grouped convolutions sum in another order than a lone model's (engine.py), so a fused
    # ResNet agrees with its lone runs per step to float32 rounding, which 20 steps grow a little
    # (tests/test_pack.py measures 1e-4 for a pack of step factors; lone runs on two convolution
    # libraries drift ~7e-4).
    specs = [make_run_spec(dataset="synthetic", depth=8, n_train=640, n_test=16, batch_size=64, h=0.1, seed=0,
                           lr=lr, momentum=mu, weight_decay=wd) for lr, mu, wd in ((0.02, 0.9, 1e-3), (0.2, 0.0, 0.0))]
    data = D.load(specs[0], ".")
    order = torch.stack([torch.randperm(640, generator=torch.Generator().manual_seed(e)) for e in range(2)])

    def losses(members):
        unit = Unit(members, specs, data, CPU, Options())
        unit.set_lr(0)
        unit.start_epoch()
        return torch.stack([unit.train_step(data, order, 0, step % 10, 64) for step in range(20)])

    packed = losses([0, 1])
    for i in (0, 1):
        assert_close(packed[:, i], losses([i])[:, 0], rtol=1e-4, atol=0)
    assert not torch.allclose(packed[:, 0], packed[:, 1], rtol=1e-2)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_pack_of_one_steps_as_torchs_own_optimizer(optimizer):
    spec = moons(optimizer, lr=0.05, momentum=0.9, weight_decay=5e-3)
    mine, theirs = (init_model(spec, 2, (2,)) for _ in range(2))
    optimizer_mine = PackOptimizer(mine.parameters(), [spec])
    kind = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    extra = {} if optimizer == "adam" else {"momentum": 0.9}
    optimizer_theirs = kind(theirs.parameters(), lr=0.05, weight_decay=5e-3, **extra)
    g = torch.Generator().manual_seed(0)
    for step in range(12):
        lr = 0.05 if step < 6 else 0.005  # a milestone half way
        optimizer_mine.set_lr([lr])
        optimizer_theirs.param_groups[0]["lr"] = lr
        x, y = torch.randn(32, 2, generator=g), torch.randint(0, 2, (32,), generator=g)
        for model, opt in ((mine, optimizer_mine), (theirs, optimizer_theirs)):
            opt.zero_grad()
            F.cross_entropy(model(x)[:, 0], y).backward()
            opt.step()
        for p, q in zip(mine.parameters(), theirs.parameters()):
            assert_close(p, q, rtol=1e-6, atol=1e-8)
    # Its saved state is torch's, key for key: a checkpoint either of them wrote, the other reads.
    saved, theirs_saved = optimizer_mine.state_for(0), optimizer_theirs.state_dict()
    assert saved["param_groups"] == theirs_saved["param_groups"]
    assert saved["state"].keys() == theirs_saved["state"].keys()
    for key, entry in theirs_saved["state"].items():
        assert entry.keys() == saved["state"][key].keys()
        for name, value in entry.items():
            assert_close(saved["state"][key][name], value, rtol=1e-6, atol=1e-8)


def torch_steps(model, spec, steps, seed):
    """What units.py did before optimizers.py: torch's optimizer over the fused parameters."""
    if spec.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    fused_steps(model, opt, steps, seed)
    return opt


def fused_steps(model, opt, steps, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randn(16, 2 * model.k, generator=g), torch.randint(0, 2, (16, model.k), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x).permute(0, 2, 1), y, reduction="none").mean(0).sum().backward()
        opt.step()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_checkpoints_of_torchs_optimizer_resume_and_ours_load_into_it(optimizer):
    # Checkpoints written before optimizers.py hold torch's optimizer state of the fused pack,
    # split per model along dim 0 (every state tensor of dim > 0; Adam's 0-d step shared).
    specs = [moons(optimizer, lr=0.02, momentum=0.9, weight_decay=1e-3, h=h) for h in (0.1, 0.5)]
    old = build_pack(specs, 2, (2,))
    opt = torch_steps(old, specs[0], 5, seed=1)
    per_model = [{"state": {i: {n: v if v.dim() == 0 else v.chunk(2)[k].clone() for n, v in s.items()}
                            for i, s in opt.state_dict()["state"].items()},
                  "param_groups": opt.state_dict()["param_groups"]} for k in range(2)]
    new = build_pack(specs, 2, (2,))
    new.load_state_dict(old.state_dict())
    resumed = PackOptimizer(new.parameters(), specs)
    resumed.load(per_model)
    fused_steps(old, opt, 5, seed=2)
    fused_steps(new, resumed, 5, seed=2)
    for p, q in zip(new.parameters(), old.parameters()):
        assert_close(p, q, rtol=1e-6, atol=1e-8)
    # And the other way: our per-model states, stacked as that code stacked them, load into torch's.
    mine = [resumed.state_for(k) for k in range(2)]
    stacked = {"state": {i: {n: v if v.dim() == 0 else torch.cat([m["state"][i][n] for m in mine])
                             for n, v in mine[0]["state"][i].items()} for i in mine[0]["state"]},
               "param_groups": mine[0]["param_groups"]}
    opt.load_state_dict(stacked)
    fused_steps(old, opt, 3, seed=3)
    fused_steps(new, resumed, 3, seed=3)
    for p, q in zip(new.parameters(), old.parameters()):
        assert_close(p, q, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_freezing_a_diverged_model_zeroes_its_optimizer_state_and_spares_the_others(optimizer):
    specs = [moons(optimizer, lr=lr, weight_decay=1e-3) for lr in (0.01, 0.03)]
    data = D.load(specs[0], ".")
    unit = Unit([0, 1], specs, data, CPU, Options())
    unit.set_lr(0)
    order = torch.stack([torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(0))] * 2)
    for step in range(3):
        unit.train_step(data, order, 0, step, 64)
    unit.freeze([0])
    state = unit.optimizer.tensors()
    assert all(t[0].abs().sum() == 0 and t[1].abs().sum() > 0 for tensors in state.values() for t in tensors)
    for step in range(3, 6):
        unit.train_step(data, order, 0, step, 64)
    assert all(t[0].abs().sum() == 0 for tensors in state.values() for t in tensors)
    assert all(p.detach().unflatten(0, (2, -1))[0].abs().sum() == 0 for p in unit.model.parameters())


def test_packs_hold_learning_rates_and_split_by_optimizer_bn_and_batch_size_and_the_dry_run_says_so(tmp_path):
    base = dict(dataset="two-moons", depth=3, epochs=2)
    fused = [make_run_spec(**base, h=h, lr=lr, momentum=mu, weight_decay=wd)
             for h in (0.1, 1.0) for lr in (0.05, 0.5) for mu, wd in ((0.9, 0.0), (0.0, 1e-4))]
    assert [p.k for p in make_packs(fused, None)] == [8]
    split = [make_run_spec(**base, lr=lr, optimizer=o, bn=bn, batch_size=b)
             for lr in (0.05, 0.5) for o in ("sgd", "adam") for bn in (False, True) for b in (32, 64)]
    plan = dry_run(split, make_execution({"store": str(tmp_path / "store")}))
    assert [p["k"] for p in plan["packs"]] == [2] * 8 and all(p["lr"] == [0.05, 0.5] for p in plan["packs"])
    assert {tuple(sorted(p["split_by"].items())) for p in plan["packs"]} == {
        (("batch_size", b), ("bn", bn), ("optimizer", o)) for o in ("sgd", "adam") for bn in (False, True)
        for b in (32, 64)}
    (line,) = plan["splits"]
    assert line.startswith("two-moons: runs that differ in bn (false, true) or batch_size (32, 64) or "
                           "optimizer (adam, sgd) train in separate packs")
    one = dry_run(fused, make_execution({"store": str(tmp_path / "store")}))
    assert one["splits"] == [] and one["packs"][0]["split_by"] == {} and one["packs"][0]["momentum"] == [0.0, 0.9]
    assert not (tmp_path / "store").exists()
