"""The three residual networks of the paper, each a stack of explicit Euler steps.

Every block computes  y = shortcut(x) + h * F(x)  and passes ReLU(y) on (the MLP omits that outer
ReLU, see `MlpBlock`). h = 1 is the plain ResNet. The layouts follow the paper's published code, so
parameter counts match it exactly: conv layers of the CIFAR net have no bias, those of the text net
keep theirs, and shapes change through a 1x1 convolution + BN projection.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .spec import TEXT_DEPTHS, RunSpec

TEXT_VOCAB = 70  # 0 = padding, 1..68 = the alphabet, 69 = unknown
TEXT_EMBED = 16
TEXT_FC = 1024


def _norm(kind: type[nn.Module], channels: int, bn: bool) -> nn.Module:
    return kind(channels) if bn else nn.Identity()


def _hs(h: float | Sequence[float]) -> list[float]:
    return [float(h)] if isinstance(h, (int, float)) else [float(v) for v in h]


class GroupedLinear(nn.Module):
    """K independent Linear(cin, cout) maps on [B, K*cin] -> [B, K*cout].

    The weight is [K*cout, cin], so model k's slice is exactly nn.Linear's weight, and with K = 1
    the initialisation draws the same numbers as nn.Linear from the same random state.
    """

    def __init__(self, k: int, cin: int, cout: int, bias: bool = True):
        super().__init__()
        self.k, self.cin, self.cout = k, cin, cout
        self.weight = nn.Parameter(torch.empty(k * cout, cin))
        self.bias = nn.Parameter(torch.empty(k * cout)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's own scheme
        if self.bias is not None:
            bound = 1 / math.sqrt(cin)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The same batched product for any K (also K = 1), so a model computes alike alone or packed.
        b = x.shape[0]
        out = torch.bmm(x.view(b, self.k, self.cin).transpose(0, 1),
                        self.weight.view(self.k, self.cout, self.cin).transpose(1, 2))  # [K, B, cout]
        out = out.transpose(0, 1)
        if self.bias is not None:
            out = out + self.bias.view(1, self.k, self.cout)
        return out.reshape(b, self.k * self.cout)


class StepScale(nn.Module):
    """Holds each model's h, repeated over its channels: the `h` of  x + h * F(x).

    A fixed h (h rules fixed, sqrt, linear) is a buffer the spec rebuilds, so not saved. A learned h
    (h rule learned) is a parameter, one scalar per model, trained and checkpointed with the model:
    [K, 1, ...], stacked along dim 0 like every other parameter (so fusing and unfusing hold for
    it) and shaped to broadcast over F(x) seen as [B, K, C, ...] without a view of its own (a view
    is an autograd node, and at two-moons' sizes every node counts: benchmarks/learned_cost.py).
    """

    def __init__(self, hs: list[float], channels: int, dims: int, learned: bool = False):
        super().__init__()
        self.channels, self.dims, self.learned = channels, dims, learned
        if learned:
            self.scale = nn.Parameter(torch.tensor(hs, dtype=torch.float32).view(-1, *[1] * (dims + 1)))
        else:
            self.register_buffer("scale", torch.empty(0), persistent=False)
            self.set(hs)

    def set(self, hs: list[float]) -> None:
        if self.learned:
            with torch.no_grad():
                self.scale.copy_(torch.tensor(hs, dtype=self.scale.dtype).view_as(self.scale))
            return
        scale = torch.tensor(hs, dtype=torch.float32).repeat_interleave(self.channels)
        self.scale = scale.view(1, -1, *([1] * self.dims)).to(self.scale.device)

    def times(self, t: torch.Tensor) -> torch.Tensor:
        """t [K*C] (a BatchNorm's affine weight or bias) times each model's h, channel by channel."""
        if self.learned:  # [K, C] * [K, 1]: no copy of h over the channels
            return (t.view(self.scale.shape[0], -1) * self.scale.view(-1, 1)).view(-1)
        return t * self.scale.view(-1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        # Under bf16 autocast this promotes h * F(x), and with it the residual stream, to float32:
        # at h = 0.001 a bf16 sum x + h * F(x) would round the update away (8-bit mantissa).
        if self.learned:  # [B, K*C, ...] as [B, K, C, ...] (a view) times h [K, 1, ...]
            return (f.unflatten(1, (self.scale.shape[0], self.channels)) * self.scale).flatten(1, 2)
        return self.scale * f

    def step(self, x: torch.Tensor, norm: nn.Module, f: torch.Tensor) -> torch.Tensor:
        """x + h * norm(f), summed in the finer of x's dtype and the scale's (float32).

        A BatchNorm takes h into its affine map, h * (w f^ + b) = (h w) f^ + h b, so the product
        costs no pass over the activations of its own (research/bytes.py counts what that saves).
        Under bf16 autocast h * norm(f) is then rounded to bf16, as finely, relative to its size,
        as norm(f) alone was; the sum itself, the residual stream, stays float32.
        """
        x = x.to(torch.promote_types(x.dtype, self.scale.dtype))
        if not isinstance(norm, nn.modules.batchnorm._BatchNorm):
            return x + self(norm(f))
        if norm.training:  # what nn.BatchNorm's forward does besides the arithmetic
            norm.num_batches_tracked.add_(1)
        return x + F.batch_norm(f, norm.running_mean, norm.running_var, self.times(norm.weight), self.times(norm.bias),
                                norm.training, norm.momentum, norm.eps)


# ---------------------------------------------------------------------------------------------
# CIFAR ResNet, depth 6n+2
# ---------------------------------------------------------------------------------------------


class ImageBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN = F(x); out = ReLU(shortcut(x) + h * F(x)). K models as groups."""

    def __init__(self, cin: int, cout: int, stride: int, hs: list[float], bn: bool, learned: bool = False):
        super().__init__()
        k = len(hs)
        self.conv1 = nn.Conv2d(k * cin, k * cout, 3, stride, 1, bias=False, groups=k)
        self.bn1 = _norm(nn.BatchNorm2d, k * cout, bn)
        self.conv2 = nn.Conv2d(k * cout, k * cout, 3, 1, 1, bias=False, groups=k)
        self.bn2 = _norm(nn.BatchNorm2d, k * cout, bn)
        self.h = StepScale(hs, cout, 2, learned)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(k * cin, k * cout, 1, stride, bias=False, groups=k), _norm(nn.BatchNorm2d, k * cout, bn)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.conv2(F.relu(self.bn1(self.conv1(x))))
        return F.relu(self.h.step(self.shortcut(x), self.bn2, f))


class CifarResNet(nn.Module):
    """Input [B, K*C, H, W] (model k's images in channel group k), output [B, K, classes]."""

    def __init__(self, depth: int, h: float | Sequence[float], bn: bool = True, num_classes: int = 10,
                 in_channels: int = 3, learned: bool = False):
        super().__init__()
        hs = _hs(h)
        self.k, self.num_classes = len(hs), num_classes
        n = (depth - 2) // 6
        k = self.k
        self.stem = nn.Sequential(
            nn.Conv2d(k * in_channels, k * 16, 3, 1, 1, bias=False, groups=k), _norm(nn.BatchNorm2d, k * 16, bn),
            nn.ReLU(),
        )
        blocks, cin = [], 16
        for stage, cout in enumerate((16, 32, 64)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(ImageBlock(cin, cout, stride, hs, bn, learned))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.head = GroupedLinear(k, 64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(dim=(2, 3))).view(x.shape[0], self.k, self.num_classes)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x_0 (the stem's output) and the output x_n of every block n: the Euler steps' states."""
        out = [self.stem(x)]
        for block in self.blocks:
            out.append(block(out[-1]))
        return out


# ---------------------------------------------------------------------------------------------
# Text ResNet (VDCNN-style character CNN), depths 9/17/29/49
# ---------------------------------------------------------------------------------------------


class GroupedEmbedding(nn.Module):
    """K embedding tables [V, E] stacked as [K*V, E]; code 0 is padding (zero row, no gradient)."""

    def __init__(self, k: int, vocab: int, dim: int):
        super().__init__()
        self.k, self.vocab, self.dim = k, vocab, dim
        weight = torch.empty(k * vocab, dim)
        nn.init.normal_(weight)  # nn.Embedding's scheme, padding rows zeroed
        weight[:: vocab] = 0
        self.weight = nn.Parameter(weight)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K, L] -> [B, K*E, L]."""
        codes = codes.long()
        offset = torch.arange(self.k, device=codes.device).view(1, self.k, 1) * self.vocab
        out = F.embedding(codes + offset, self.weight)  # [B, K, L, E]
        # Masking the padding rows' output keeps their gradient zero, as padding_idx does.
        out = out * (codes != 0).unsqueeze(-1).to(out.dtype)
        b, k, length, e = out.shape
        return out.permute(0, 1, 3, 2).reshape(b, k * e, length)


class TextBlock(nn.Module):
    """conv1d-BN-ReLU-conv1d-BN = F(x); out = ReLU(shortcut(x) + h * F(x)). Convs keep biases."""

    def __init__(self, cin: int, cout: int, hs: list[float], bn: bool, learned: bool = False):
        super().__init__()
        k = len(hs)
        self.conv1 = nn.Conv1d(k * cin, k * cout, 3, padding=1, groups=k)
        self.bn1 = _norm(nn.BatchNorm1d, k * cout, bn)
        self.conv2 = nn.Conv1d(k * cout, k * cout, 3, padding=1, groups=k)
        self.bn2 = _norm(nn.BatchNorm1d, k * cout, bn)
        self.h = StepScale(hs, cout, 1, learned)
        self.shortcut = nn.Identity()
        if cin != cout:
            self.shortcut = nn.Sequential(nn.Conv1d(k * cin, k * cout, 1, bias=False, groups=k),
                                          _norm(nn.BatchNorm1d, k * cout, bn))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.conv2(F.relu(self.bn1(self.conv1(x))))
        return F.relu(self.h.step(self.shortcut(x), self.bn2, f))


class TextResNet(nn.Module):
    """Input codes [B, K, L] (or [B, L] when K = 1), output [B, K, classes]."""

    def __init__(self, depth: int, h: float | Sequence[float], bn: bool = True, num_classes: int = 4,
                 learned: bool = False):
        super().__init__()
        hs = _hs(h)
        k = len(hs)
        self.k, self.num_classes = k, num_classes
        self.embed = GroupedEmbedding(k, TEXT_VOCAB, TEXT_EMBED)
        self.stem = nn.Conv1d(k * TEXT_EMBED, k * 64, 3, padding=1, groups=k)
        stages = []
        cin = 64
        for cout, count in zip((64, 128, 256, 512), TEXT_DEPTHS[depth]):
            stage = []
            for _ in range(count):
                stage.append(TextBlock(cin, cout, hs, bn, learned))
                cin = cout
            stages.append(nn.ModuleList(stage))
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Sequential(
            GroupedLinear(k, 8 * 512, TEXT_FC), nn.ReLU(), GroupedLinear(k, TEXT_FC, TEXT_FC), nn.ReLU(),
            GroupedLinear(k, TEXT_FC, num_classes),
        )

    @property
    def blocks(self) -> list[nn.Module]:
        return [b for stage in self.stages for b in stage]

    def features(self, codes: torch.Tensor) -> list[torch.Tensor]:
        """x_0 (the stem's output) and the output x_n of every block n."""
        if codes.dim() == 2:
            codes = codes.unsqueeze(1)
        out = [self.stem(self.embed(codes))]
        x = out[0]
        for i, stage in enumerate(self.stages):
            if i > 0:  # halve the sequence between stages
                x = F.max_pool1d(x, 3, stride=2, padding=1)
            for block in stage:
                x = block(x)
                out.append(x)
        return out

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        # [B, K*512, 8]: flattening keeps each model's features together
        x = F.adaptive_max_pool1d(self.features(codes)[-1], 8)
        return self.fc(x.reshape(x.shape[0], -1)).view(x.shape[0], self.k, self.num_classes)


# ---------------------------------------------------------------------------------------------
# MLP ResNet for 2-D points (the paper's Fig. 4)
# ---------------------------------------------------------------------------------------------


class MlpBlock(nn.Module):
    """out = x + h * (W2 ReLU(W1 x + b1) + b2).

    No ReLU after the sum: at feature width 2 it would fold every point into one quadrant and the
    two moons could no longer be told apart; the residual flow itself stays the paper's Euler step.
    """

    def __init__(self, width: int, hidden: int, hs: list[float], bn: bool, learned: bool = False):
        super().__init__()
        k = len(hs)
        self.fc1 = GroupedLinear(k, width, hidden)
        self.bn1 = _norm(nn.BatchNorm1d, k * hidden, bn)
        self.fc2 = GroupedLinear(k, hidden, width)
        self.bn2 = _norm(nn.BatchNorm1d, k * width, bn)
        self.h = StepScale(hs, width, 0, learned)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h.step(x, self.bn2, self.fc2(F.relu(self.bn1(self.fc1(x)))))


class MlpResNet(nn.Module):
    """Input [B, K*2] (model k's points in columns 2k, 2k+1), output [B, K, classes]."""

    def __init__(self, depth: int, h: float | Sequence[float], width: int = 2, hidden: int = 16,
                 bn: bool = False, in_features: int = 2, num_classes: int = 2, learned: bool = False):
        super().__init__()
        hs = _hs(h)
        self.k, self.num_classes = len(hs), num_classes
        # At the default width the points themselves are the features, so they can be plotted.
        self.stem = nn.Identity() if width == in_features else GroupedLinear(self.k, in_features, width)
        self.blocks = nn.ModuleList(MlpBlock(width, hidden, hs, bn, learned) for _ in range(depth))
        self.head = GroupedLinear(self.k, width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x).view(x.shape[0], self.k, self.num_classes)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The points as they move block by block (width 2: plottable, the paper's Fig. 4)."""
        out = [self.stem(x)]
        for block in self.blocks:
            out.append(block(out[-1]))
        return out


# ---------------------------------------------------------------------------------------------
# Construction and counting
# ---------------------------------------------------------------------------------------------


def build_model(spec: RunSpec, num_classes: int, input_shape: tuple[int, ...],
                hs: Sequence[float] | None = None) -> nn.Module:
    """The model of `spec` (or K such models with step factors `hs`), initialised from torch's
    current random state."""
    h = list(hs) if hs is not None else spec.effective_h
    learned = spec.h_rule == "learned"  # the scales are parameters, starting at h
    if spec.model == "resnet":
        return CifarResNet(spec.depth, h, spec.bn, num_classes, in_channels=input_shape[0], learned=learned)
    if spec.model == "vdcnn":
        return TextResNet(spec.depth, h, spec.bn, num_classes, learned=learned)
    if spec.model == "mlp":
        return MlpResNet(spec.depth, h, spec.width, spec.hidden, spec.bn, input_shape[0], num_classes, learned)
    raise ValueError(f"unknown model family {spec.model!r}")


def init_model(spec: RunSpec, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """Build the model from the run's own seed alone, leaving the global random state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        return build_model(spec, num_classes, input_shape)


# Fusing: every parameter and buffer of a K-model network holds the K models' tensors stacked
# along dim 0 in equal chunks (conv weights [K*Cout, Cin, k, k], BN [K*C], linear [K*Cout, Cin],
# embeddings [K*V, E]), so fusing is a concatenation and unfusing a chunk. 0-d tensors (BN's
# batch counter, Adam's step) are shared.


def stack_states(states: list[dict]) -> dict:
    return {key: value if value.dim() == 0 else torch.cat([s[key] for s in states])
            for key, value in states[0].items()}


def split_state(state: dict, k: int, count: int) -> dict:
    return {key: value if value.dim() == 0 else value.chunk(count)[k].clone() for key, value in state.items()}


def build_pack(specs: Sequence[RunSpec], num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """K models, each initialised from its own seed exactly as it would be alone, fused into one."""
    singles = [init_model(spec, num_classes, input_shape) for spec in specs]
    if len(specs) == 1:
        return singles[0]
    with torch.random.fork_rng(devices=[]):  # the fused model's own draws are overwritten
        pack = build_model(specs[0], num_classes, input_shape, hs=[s.effective_h for s in specs])
    pack.load_state_dict(stack_states([m.state_dict() for m in singles]))
    return pack


def unfuse(pack: nn.Module, specs: Sequence[RunSpec], k: int, num_classes: int,
           input_shape: tuple[int, ...]) -> nn.Module:
    """Model k of a pack as an ordinary single model (for checkpoints, evaluation, plots)."""
    like = next(pack.parameters())
    with torch.random.fork_rng(devices=[]):
        single = build_model(specs[k], num_classes, input_shape).to(like.dtype)
    single.load_state_dict(split_state(pack.state_dict(), k, len(specs)))
    return single.to(like.device)


def learned_scales(model: nn.Module) -> list[nn.Parameter]:
    """The learned step scales of a network ([K, 1, ...] each), one per residual block in forward order
    (the order the blocks are registered in); empty unless its h rule is learned."""
    return [m.scale for m in model.modules() if isinstance(m, StepScale) and m.learned]


def scales_in(state: dict) -> list[float]:
    """A single model's learned scales, block by block, from its state dict (a checkpoint's)."""
    return [float(v) for key, v in state.items() if key.endswith(".h.scale")]


def steps_per_epoch(spec: RunSpec, n: int) -> int:
    """Training steps of one pass over n examples: ceil(n / batch size), except that a model with
    batch norm (every CIFAR and text ResNet, the MLP with --bn) drops a last batch of a single
    example, whose batch statistics do not exist. That example trains in the other epochs, at
    another place in its run's order."""
    steps = math.ceil(n / spec.batch_size)
    batch_norm = spec.model != "mlp" or spec.bn
    return steps - 1 if batch_norm and steps > 1 and n % spec.batch_size == 1 else steps


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    """Forward multiply-adds for one input, counted from the convolutions and linear layers."""
    total = 0

    def hook(module, _inputs, output):
        nonlocal total
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            per_output = module.in_channels // module.groups
            for k in module.kernel_size:
                per_output *= k
            total += output.numel() * per_output
        elif isinstance(module, GroupedLinear):
            total += output.numel() * module.cin

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv1d, nn.Conv2d, GroupedLinear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total
