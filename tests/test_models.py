import pytest
import torch
import torch.nn.functional as F

from robustres.models import CifarResNet, MlpResNet, TextResNet, count_flops, count_params
from robustres.spec import TEXT_DEPTHS, SpecError, check_depth


def conv(cin, cout, k, bias=False):
    return cin * cout * k + (cout if bias else 0)


def bn(c):
    return 2 * c


def cifar_params(depth, classes=10):
    """The paper's CIFAR code, counted by hand: no conv bias, 1x1 conv + BN projections."""
    n = (depth - 2) // 6
    total = conv(3, 16, 9) + bn(16)
    cin = 16
    for cout in (16, 32, 64):
        for _ in range(n):
            total += conv(cin, cout, 9) + bn(cout) + conv(cout, cout, 9) + bn(cout)
            if cin != cout:
                total += conv(cin, cout, 1) + bn(cout)
            cin = cout
    return total + 64 * classes + classes


def text_params(depth, classes=4):
    """The paper's AG-NEWS code (VDCNN), counted by hand: convs keep biases, projections do not."""
    total = 70 * 16 + conv(16, 64, 3, bias=True)
    cin = 64
    for cout, count in zip((64, 128, 256, 512), TEXT_DEPTHS[depth]):
        for _ in range(count):
            total += conv(cin, cout, 3, True) + bn(cout) + conv(cout, cout, 3, True) + bn(cout)
            if cin != cout:
                total += conv(cin, cout, 1) + bn(cout)
            cin = cout
    return total + (8 * 512 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * classes + classes)


@pytest.mark.parametrize("depth", [8, 20, 56, 110, 218])
def test_cifar_param_counts_match_the_papers_code(depth):
    assert count_params(CifarResNet(depth, h=0.1)) == cifar_params(depth)


def test_resnet20_is_the_projection_shortcut_variant():
    # 269,722 with zero-padding shortcuts; the paper's code uses 1x1 conv + BN projections.
    assert count_params(CifarResNet(20, h=1)) == 272_474


@pytest.mark.parametrize("depth", [9, 17, 29, 49])
def test_text_param_counts_match_the_papers_code(depth):
    assert count_params(TextResNet(depth, h=0.1)) == text_params(depth)


@pytest.mark.parametrize("depth,width,hidden", [(1, 2, 16), (10, 2, 16), (5, 4, 8)])
def test_mlp_param_counts(depth, width, hidden):
    stem = 0 if width == 2 else 2 * width + width
    blocks = depth * ((width * hidden + hidden) + (hidden * width + width))
    head = width * 2 + 2
    assert count_params(MlpResNet(depth, 0.1, width, hidden)) == stem + blocks + head


def test_no_bn_drops_every_batchnorm():
    model = CifarResNet(20, h=0.1, bn=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    bn_params = sum(p.numel() for m in CifarResNet(20, 0.1).modules() if isinstance(m, torch.nn.BatchNorm2d)
                    for p in m.parameters())
    assert count_params(model) == cifar_params(20) - bn_params


def test_h_zero_turns_every_cifar_block_into_its_shortcut():
    torch.manual_seed(0)
    model = CifarResNet(20, h=0.0).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        z = model.stem(x)
        for block in model.blocks:
            z = F.relu(block.shortcut(z))
        expected = model.head(z.mean(dim=(2, 3)))
        assert torch.allclose(model(x)[:, 0], expected, atol=1e-6)
        for block in model.blocks:  # and h does matter when it is not zero
            block.h.set([1.0])
        assert not torch.allclose(model(x)[:, 0], expected, atol=1e-3)


def test_h_zero_turns_every_text_block_into_its_shortcut():
    torch.manual_seed(0)
    model = TextResNet(9, h=0.0).eval()
    codes = torch.randint(0, 70, (2, 1024))
    with torch.no_grad():
        z = model.stem(model.embed(codes.unsqueeze(1)))
        for i, stage in enumerate(model.stages):
            if i:
                z = F.max_pool1d(z, 3, 2, 1)
            for block in stage:
                z = F.relu(block.shortcut(z))
        expected = model.fc(F.adaptive_max_pool1d(z, 8).flatten(1))
        assert torch.allclose(model(codes)[:, 0], expected, atol=1e-5)


def test_h_zero_turns_the_mlp_into_its_linear_head():
    torch.manual_seed(0)
    model = MlpResNet(7, h=0.0)
    x = torch.randn(16, 2)
    assert torch.equal(model(x)[:, 0], model.head(x))


def test_flops_per_image_of_the_cifar_resnets():
    # Forward multiply-adds: ResNet-20 ~41 M, ResNet-110 ~253 M (He et al. count the same layers).
    x = torch.zeros(1, 3, 32, 32)
    assert 40e6 < count_flops(CifarResNet(20, 1), x) < 42e6
    assert 250e6 < count_flops(CifarResNet(110, 1), x) < 256e6


@pytest.mark.parametrize("family,depth,message", [
    ("resnet", 100, "depth 100 is not 6n+2 with n >= 1 (CIFAR ResNet); nearest: 98, 104"),
    ("resnet", 21, "nearest: 20, 26"),
    ("resnet", 3, "nearest: 8"),
    ("vdcnn", 18, "depth 18 is not a text ResNet depth; choose one of: 9, 17, 29, 49"),
    ("mlp", 0, "counts blocks"),
])
def test_depth_validation_names_the_valid_choices(family, depth, message):
    with pytest.raises(SpecError) as err:
        check_depth(family, depth)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("family,depth", [("resnet", 8), ("resnet", 218), ("vdcnn", 49), ("mlp", 1)])
def test_valid_depths_pass(family, depth):
    check_depth(family, depth)


# h folded into BN2: x + h * BN(f) computed as one batch norm with weight h*w and bias h*b.


def _blocks_with_bn():
    """A block of each family, K = 2, and the shape of its F(x): [batch, K * channels, *spatial]."""
    torch.manual_seed(0)
    hs = [0.1, 2.0]
    return [
        (CifarResNet(8, hs).blocks[1], (4, 64, 8, 8)),  # the projection block, 16 -> 32 channels
        (TextResNet(9, hs).stages[1][0], (3, 256, 16)),
        (MlpResNet(3, hs, bn=True).blocks[0], (6, 4)),
    ]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_folding_h_into_batch_norm_computes_x_plus_h_times_bn(index):
    """Outputs, running statistics and every gradient equal those of h * BN(f) computed apart."""
    import copy

    block, shape = _blocks_with_bn()[index]
    block = block.double()
    block.h.scale = block.h.scale.double()
    reference = copy.deepcopy(block)
    for training in (True, False):
        block.train(training), reference.train(training)
        g = torch.Generator().manual_seed(int(training))
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        f = (3 * torch.randn(shape, generator=g, dtype=torch.float64) + 1).requires_grad_()
        f_ref = f.detach().clone().requires_grad_()
        ours = block.h.step(x, block.bn2, f)
        theirs = x + block.h.scale * reference.bn2(f_ref)
        assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-12)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            assert torch.equal(getattr(block.bn2, name), getattr(reference.bn2, name)), name
        if training:
            upstream = torch.randn(shape, generator=g, dtype=torch.float64)
            (ours * upstream).sum().backward()
            (theirs * upstream).sum().backward()
            assert torch.allclose(f.grad, f_ref.grad, rtol=1e-10, atol=1e-12)
            assert torch.allclose(block.bn2.weight.grad, reference.bn2.weight.grad, rtol=1e-10, atol=1e-12)
            assert torch.allclose(block.bn2.bias.grad, reference.bn2.bias.grad, rtol=1e-10, atol=1e-12)
    assert int(block.bn2.num_batches_tracked) == 1  # counted in training only, as nn.BatchNorm does


@pytest.mark.parametrize("family", ["resnet", "vdcnn"])
def test_the_residual_stream_stays_float32_under_bf16_autocast(family):
    """At h = 0.001 a bf16 sum x + h * F(x) would round the update away (bf16 has 8 mantissa bits,
    so near 1 its spacing is 0.0078); the stream must stay float32 and keep it."""
    torch.manual_seed(0)
    if family == "resnet":
        model, x = CifarResNet(8, [0.001]), torch.randn(4, 3, 32, 32)
    else:
        model, x = TextResNet(9, [0.001]), torch.randint(1, 70, (2, 1, 1024))
    with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
        states = model.features(x)
    for state in states[1:]:
        assert state.dtype == torch.float32
    before, after = states[0].float(), states[1]
    # where the first block keeps x positive: |x_1 - x_0| = h |BN(F)| ~ 0.001, which bf16 would round to 0
    alive = (before > 0.5) & (after > 0)
    moved = (after - before)[alive].abs().mean().item()
    assert 2e-4 < moved < 3e-3, moved
