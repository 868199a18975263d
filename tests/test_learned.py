"""h_rule learned (issue 25): each block's scale is a trainable scalar per model, starting at the grid's
h (0 too: ReZero), trained with the model's optimizer without weight decay, checkpointed with the
model, fused and unfused like every other parameter, and stored per run in learned_scales/."""

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import torch

from robustres import data as D
from robustres import engine
from robustres import transforms as T
from robustres.execution.plan import make_packs
from robustres.models import init_model, learned_scales, scales_in
from robustres.spec import make_run_spec
from robustres.store import Store
from robustres.units import Options, Unit

CPU = torch.device("cpu")
EVERY_EPOCH = Options(checkpoint_seconds=0)
MOONS = dict(dataset="two-moons", depth=6, epochs=3, h_rule="learned", weight_decay=1e-3)
IMAGES = dict(dataset="synthetic", depth=8, n_train=96, n_test=32, batch_size=32, epochs=2, h_rule="learned",
              weight_decay=5e-4)


def _strip(history):
    return [(r.epoch, r.train_loss, r.train_acc, r.test_loss, r.test_acc) for r in history]


# Weights of a packed run against the run alone: rounding grows over the steps, most in the biases
# that feed a BatchNorm (their gradient is rounding itself); fixed-h ResNets in this very setting
# differ by up to 3e-3 there (more when the lone run's convolutions take another CPU library), so
# the image case allows 1e-2 absolute, the scales too.
@pytest.mark.parametrize("kwargs,hs,atol", [(MOONS, (0.0, 0.5, 1.0), 1e-5), (IMAGES, (0.1, 1.0), 1e-2)])
def test_a_learned_run_in_a_pack_matches_the_same_run_alone(tmp_path, kwargs, hs, atol):
    specs = [make_run_spec(**kwargs, h=h, seed=s) for s, h in enumerate(hs)]
    assert len(make_packs(specs, None)) == 1  # learned runs at different h fuse into one pack
    data = D.load(specs[0], ".")
    packed = engine.train(specs, data, CPU, [tmp_path / f"p{i}.pt" for i in range(len(specs))],
                          options=Options(fuse=True, checkpoint_seconds=0))
    for i, (spec, outcome) in enumerate(zip(specs, packed)):
        alone = engine.train([spec], data, CPU, [tmp_path / f"a{i}.pt"], options=EVERY_EPOCH)[0]
        assert outcome.status == alone.status == "completed"
        assert len(outcome.history) == len(alone.history) == spec.epochs
        for a, b in zip(outcome.history, alone.history):  # every epoch, to rounding
            assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4)
            assert a.test_loss == pytest.approx(b.test_loss, rel=1e-4)
            assert a.train_acc == pytest.approx(b.train_acc, abs=2e-3)
            assert a.test_acc == pytest.approx(b.test_acc, abs=2e-3)
        mine = torch.load(tmp_path / f"p{i}.pt", weights_only=True)["model"]
        theirs = torch.load(tmp_path / f"a{i}.pt", weights_only=True)["model"]
        assert mine.keys() == theirs.keys()
        for key in mine:  # final weights, the scales among them
            assert torch.allclose(mine[key].double(), theirs[key].double(), rtol=1e-3, atol=atol), key
        blocks = sum(key.endswith(".h.scale") for key in mine)
        assert blocks == (3 if spec.model == "resnet" else spec.depth)
        assert outcome.scales == pytest.approx(scales_in(mine), abs=0) and len(outcome.scales) == blocks
        assert outcome.scales == pytest.approx(alone.scales, rel=1e-3, abs=atol)
        # they moved from where they started: parameters with a gradient, not buffers
        assert all(abs(v - spec.h) > 1e-4 for v in outcome.scales), outcome.scales


def test_h_zero_learned_trains_like_rezero_and_its_scales_leave_zero():
    spec = make_run_spec(dataset="two-moons", depth=8, epochs=4, h=0.0, h_rule="learned")
    out = engine.train([spec], D.load(spec, "."), CPU)[0]
    assert out.status == "completed" and out.final_test_acc >= 0.85
    assert all(v != 0 for v in out.scales) and max(abs(v) for v in out.scales) > 1e-2
    # fixed at h = 0 every block is its shortcut: the net is a linear map of the two moons
    fixed = engine.train([spec.with_(h_rule="fixed")], D.load(spec, "."), CPU)[0]
    assert out.final_test_acc > fixed.final_test_acc + 0.02
    assert fixed.scales == []


def test_learned_scales_are_parameters_starting_at_h_and_a_learned_run_is_its_own():
    fixed = make_run_spec(dataset="two-moons", depth=4, h=0.3)
    learned = fixed.with_(h_rule="learned")
    assert learned.run_id != fixed.run_id
    model = init_model(learned, 2, (2,))
    scales = learned_scales(model)
    assert [s.shape for s in scales] == [torch.Size([1, 1])] * 4 and all(s.requires_grad for s in scales)
    assert [float(s.detach()) for s in scales] == pytest.approx([0.3] * 4)
    assert learned_scales(init_model(fixed, 2, (2,))) == []
    # the same initial weights as the fixed run at the same h: the scales draw no random numbers
    a, b = init_model(fixed, 2, (2,)).state_dict(), model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for kwargs in (dict(dataset="synthetic", depth=14), dict(dataset="ag-news", depth=9)):
        spec = make_run_spec(**kwargs, h=0.2, h_rule="learned")
        shape = (3, 32, 32) if spec.model == "resnet" else (1024,)
        blocks = learned_scales(init_model(spec, 4, shape))
        assert len(blocks) == (6 if spec.model == "resnet" else 4)  # ResNet-14: 3n, n = 2; VDCNN-9: 4


def test_the_scales_get_no_weight_decay():
    spec = make_run_spec(dataset="two-moons", depth=3, h=0.5, h_rule="learned", weight_decay=0.1, momentum=0.0)
    unit = Unit([0], [spec], D.load(spec, "."), CPU, Options())
    before = {name: p.detach().clone() for name, p in unit.model.named_parameters()}
    for p in unit.model.parameters():
        p.grad = torch.zeros_like(p)
    unit.optimizer.step()  # a zero gradient: only weight decay moves anything
    for name, p in unit.model.named_parameters():
        if name.endswith(".h.scale"):
            assert torch.equal(p.detach(), before[name]), name
        elif name.endswith("weight"):
            assert not torch.equal(p.detach(), before[name]), name
    groups = unit.optimizer.state_for(0)["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert len(groups[1]["params"]) == 3


def test_a_diverged_learned_model_has_its_scales_and_their_state_zeroed():
    specs = [make_run_spec(dataset="two-moons", depth=30, h=h, h_rule="learned") for h in (20.0, 0.1)]
    data = D.load(specs[0], ".")
    unit = Unit([0, 1], specs, data, CPU, Options())
    order = T.order(unit.seeds, 0, len(data.train_y))
    for step in range(5):
        unit.train_step(data, order, 0, step, 64)
    assert unit.alive.tolist() == [False, True]
    unit.freeze([0])
    for step in range(5):
        unit.train_step(data, order, 1, step, 64)
    index = {id(p): i for i, p in enumerate(unit.optimizer.params)}
    for scale in unit.scales:
        assert scale[0] == 0 and scale[1] != 0
        for state in unit.optimizer.tensors().values():
            dead, live = state[index[id(scale)]].view(2)
            assert dead == 0 and live != 0


def test_a_learned_pack_resumes_bitwise(tmp_path, train_cut_and_resumed):
    specs = [make_run_spec(**IMAGES, h=h, seed=s) for s, h in enumerate((0.1, 1.0))]
    specs = [s.with_(epochs=4) for s in specs]
    data = D.load(specs[0], ".")
    whole, resumed, _, cut = train_cut_and_resumed(specs, data)
    for a, b in zip(whole, resumed):
        assert _strip(a.history) == _strip(b.history) and a.scales == b.scales
    for i in range(2):
        x = torch.load(tmp_path / f"w{i}.pt", weights_only=True)
        y = torch.load(cut[i], weights_only=True)
        assert any(k.endswith(".h.scale") for k in y["model"])
        assert all(torch.equal(x["model"][n], y["model"][n]) for n in x["model"])
        init_model(specs[i], data.num_classes, data.input_shape).load_state_dict(y["model"])


def test_a_learned_sweep_stores_every_blocks_final_scale(cli, tmp_path):
    store = tmp_path / "s"
    code, _, err = cli("sweep", "--dataset", "two-moons", "--n-train", "200", "--n-test", "200", "--epochs", "2",
                       "--depths", "3,5", "--h", "0,0.5", "--seeds", "1", "--h-rule", "learned,fixed", "--store", store)
    assert code == 0, err
    runs = Store(store).runs()
    learned = runs[runs.h_rule == "learned"]
    assert len(learned) == 4 and (runs.status == "completed").all()
    table = Store(store).learned_scales()
    assert list(table.columns) == ["run_id", "block", "scale"]
    assert set(table.run_id) == set(learned.run_id)  # fixed runs have none
    for run in learned.itertuples():
        rows = table[table.run_id == run.run_id].sort_values("block")
        assert list(rows.block) == list(range(run.depth))
        saved = torch.load(store / "checkpoints" / f"{run.run_id}.pt", weights_only=True)["model"]
        assert list(rows.scale) == scales_in(saved)
        assert all(v != run.h for v in rows.scale)
    # plain Parquet, one file per run, as DuckDB (read_parquet('learned_scales/*.parquet')) and Polars read it
    files = sorted((store / "learned_scales").glob("*.parquet"))
    assert [f.stem for f in files] == sorted(learned.run_id)
    assert pq.read_table(files[0]).num_rows in (3, 5)
    assert ds.dataset(store / "learned_scales", format="parquet").to_table().num_rows == 16
