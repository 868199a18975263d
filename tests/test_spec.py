import pytest

from robustres.grid import parse_floats, parse_ints
from robustres.spec import RunSpec, SpecError, make_run_spec


def test_protocol_defaults_follow_the_paper():
    cifar = make_run_spec(dataset="cifar10")
    assert (cifar.model, cifar.epochs, cifar.batch_size, cifar.lr, cifar.momentum) == ("resnet", 80, 128, 0.1, 0.9)
    assert cifar.milestones == (40, 60) and cifar.gamma == 0.1 and cifar.weight_decay == 0.0 and cifar.bn
    text = make_run_spec(dataset="ag-news", depth=49)
    assert (text.model, text.epochs, text.lr, text.milestones, text.batch_size) == ("vdcnn", 15, 0.1, (), 64)
    moons = make_run_spec(dataset="two-moons")
    assert moons.model == "mlp" and moons.width == 2 and not moons.bn


def test_run_id_is_stable_and_changes_with_every_result_field():
    a = make_run_spec(dataset="two-moons", h=0.1, seed=3)
    assert a.run_id == make_run_spec(dataset="two-moons", h=0.1, seed=3).run_id
    assert len(a.run_id) == 16 and all(c in "0123456789abcdef" for c in a.run_id)
    changed = {a.with_(h=0.2).run_id, a.with_(seed=4).run_id, a.with_(depth=11).run_id,
               a.with_(lr=0.05).run_id, a.with_(train_noise=0.1).run_id, a.with_(milestones=(5,)).run_id}
    assert len(changed) == 6 and a.run_id not in changed


def test_run_spec_round_trips_through_a_dict():
    spec = make_run_spec(dataset="cifar10", depth=56, h=0.5, seed=2, limit_train=100)
    assert RunSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("kwargs,message", [
    (dict(dataset="mnist"), "unknown dataset 'mnist'"),
    (dict(h=float("nan")), "h must be finite"),
    (dict(h=-0.1), "h must be >= 0"),
    (dict(epochs=0), "epochs must be >= 1"),
    (dict(batch_size=-5), "batch size must be >= 1"),
    (dict(lr=0.0), "lr must be > 0"),
    (dict(momentum=1.0), "momentum must be < 1"),
    (dict(milestones=(60, 40)), "milestones must be strictly increasing"),
    (dict(optimizer="rmsprop"), "unknown optimizer 'rmsprop'"),
    (dict(train_noise=1.5), "train noise is a level in [0, 1]"),
    (dict(dataset="cifar10", noise_kind="char-swap"), "does not apply to image data"),
    (dict(dataset="cifar10", depth=100), "nearest: 98, 104"),
    (dict(dataset="cifar10", n_train=10), "--n-train applies only to generated datasets"),
    (dict(dataset="cifar10", moons_noise=0.1), "--moons-noise applies only"),
    (dict(dataset="cifar10", width=4), "--width and --hidden apply only"),
    (dict(dataset="cifar10", synthetic_like="ag-news"), "--like applies only"),
    (dict(dataset="synthetic", synthetic_like="mnist"), "unknown --like 'mnist'"),
    (dict(seed=-1), "seed must be >= 0"),
])
def test_bad_values_give_one_line_errors(kwargs, message):
    with pytest.raises(SpecError) as err:
        make_run_spec(**kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_list_parsers():
    assert parse_floats("--h", "0.1, 1,2e-3") == [0.1, 1.0, 0.002]
    assert parse_ints("--seed", "1,2,3") == [1, 2, 3]
    assert parse_ints("--milestones", "none", allow_empty=True) == []
    for bad in ("", "0.1,,1", "abc"):
        with pytest.raises(SpecError):
            parse_floats("--h", bad)
    with pytest.raises(SpecError, match="'x' is not a whole number"):
        parse_ints("--seed", "1,x")
