"""The three residual networks of the paper, each a stack of explicit Euler steps.

Every block computes  y = shortcut(x) + h * F(x)  and passes ReLU(y) on (the MLP omits that outer
ReLU, see `MlpBlock`). h = 1 is the plain ResNet. The layouts follow the paper's published code, so
parameter counts match it exactly: conv layers of the CIFAR net have no bias, those of the text net
keep theirs, and shapes change through a 1x1 convolution + BN projection.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .spec import TEXT_DEPTHS, RunSpec

TEXT_VOCAB = 70  # 0 = padding, 1..68 = the alphabet, 69 = unknown
TEXT_EMBED = 16
TEXT_FC = 1024


def _norm(kind: type[nn.Module], channels: int, bn: bool) -> nn.Module:
    return kind(channels) if bn else nn.Identity()


# ---------------------------------------------------------------------------------------------
# CIFAR ResNet, depth 6n+2
# ---------------------------------------------------------------------------------------------


class ImageBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN = F(x); out = ReLU(shortcut(x) + h * F(x))."""

    def __init__(self, cin: int, cout: int, stride: int, h: float, bn: bool):
        super().__init__()
        self.h = h
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = _norm(nn.BatchNorm2d, cout, bn)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = _norm(nn.BatchNorm2d, cout, bn)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(nn.BatchNorm2d, cout, bn)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(self.shortcut(x) + self.h * f)


class CifarResNet(nn.Module):
    def __init__(self, depth: int, h: float, bn: bool = True, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        n = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), _norm(nn.BatchNorm2d, 16, bn), nn.ReLU()
        )
        blocks, cin = [], 16
        for stage, cout in enumerate((16, 32, 64)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(ImageBlock(cin, cout, stride, h, bn))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(dim=(2, 3)))


# ---------------------------------------------------------------------------------------------
# Text ResNet (VDCNN-style character CNN), depths 9/17/29/49
# ---------------------------------------------------------------------------------------------


class TextBlock(nn.Module):
    """conv1d-BN-ReLU-conv1d-BN = F(x); out = ReLU(shortcut(x) + h * F(x)). Convs keep biases."""

    def __init__(self, cin: int, cout: int, h: float, bn: bool):
        super().__init__()
        self.h = h
        self.conv1 = nn.Conv1d(cin, cout, 3, padding=1)
        self.bn1 = _norm(nn.BatchNorm1d, cout, bn)
        self.conv2 = nn.Conv1d(cout, cout, 3, padding=1)
        self.bn2 = _norm(nn.BatchNorm1d, cout, bn)
        self.shortcut = nn.Identity()
        if cin != cout:
            self.shortcut = nn.Sequential(nn.Conv1d(cin, cout, 1, bias=False), _norm(nn.BatchNorm1d, cout, bn))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(self.shortcut(x) + self.h * f)


class TextResNet(nn.Module):
    def __init__(self, depth: int, h: float, bn: bool = True, num_classes: int = 4):
        super().__init__()
        self.embed = nn.Embedding(TEXT_VOCAB, TEXT_EMBED, padding_idx=0)
        self.stem = nn.Conv1d(TEXT_EMBED, 64, 3, padding=1)
        stages = []
        cin = 64
        for cout, count in zip((64, 128, 256, 512), TEXT_DEPTHS[depth]):
            stage = []
            for _ in range(count):
                stage.append(TextBlock(cin, cout, h, bn))
                cin = cout
            stages.append(nn.ModuleList(stage))
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Sequential(
            nn.Linear(8 * 512, TEXT_FC), nn.ReLU(), nn.Linear(TEXT_FC, TEXT_FC), nn.ReLU(),
            nn.Linear(TEXT_FC, num_classes),
        )

    @property
    def blocks(self) -> list[nn.Module]:
        return [b for stage in self.stages for b in stage]

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.embed(codes.long()).transpose(1, 2))
        for i, stage in enumerate(self.stages):
            if i > 0:  # halve the sequence between stages
                x = F.max_pool1d(x, 3, stride=2, padding=1)
            for block in stage:
                x = block(x)
        x = F.adaptive_max_pool1d(x, 8)
        return self.fc(x.flatten(1))


# ---------------------------------------------------------------------------------------------
# MLP ResNet for 2-D points (the paper's Fig. 4)
# ---------------------------------------------------------------------------------------------


class MlpBlock(nn.Module):
    """out = x + h * (W2 ReLU(W1 x + b1) + b2).

    No ReLU after the sum: at feature width 2 it would fold every point into one quadrant and the
    two moons could no longer be told apart; the residual flow itself stays the paper's Euler step.
    """

    def __init__(self, width: int, hidden: int, h: float, bn: bool):
        super().__init__()
        self.h = h
        self.fc1 = nn.Linear(width, hidden)
        self.bn1 = _norm(nn.BatchNorm1d, hidden, bn)
        self.fc2 = nn.Linear(hidden, width)
        self.bn2 = _norm(nn.BatchNorm1d, width, bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.h * self.bn2(self.fc2(F.relu(self.bn1(self.fc1(x)))))


class MlpResNet(nn.Module):
    def __init__(self, depth: int, h: float, width: int = 2, hidden: int = 16, bn: bool = False,
                 in_features: int = 2, num_classes: int = 2):
        super().__init__()
        # At the default width the points themselves are the features, so they can be plotted.
        self.stem = nn.Identity() if width == in_features else nn.Linear(in_features, width)
        self.blocks = nn.ModuleList(MlpBlock(width, hidden, h, bn) for _ in range(depth))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


# ---------------------------------------------------------------------------------------------
# Construction and counting
# ---------------------------------------------------------------------------------------------


def build_model(spec: RunSpec, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """The model of `spec`, freshly initialised from torch's current random state."""
    if spec.model == "resnet":
        return CifarResNet(spec.depth, spec.h, spec.bn, num_classes, in_channels=input_shape[0])
    if spec.model == "vdcnn":
        return TextResNet(spec.depth, spec.h, spec.bn, num_classes)
    if spec.model == "mlp":
        return MlpResNet(spec.depth, spec.h, spec.width, spec.hidden, spec.bn, input_shape[0], num_classes)
    raise ValueError(f"unknown model family {spec.model!r}")


def init_model(spec: RunSpec, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """Build the model from the run's own seed alone, leaving the global random state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        return build_model(spec, num_classes, input_shape)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    """Forward multiply-adds for one input, counted from the convolutions and linear layers."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            per_output = module.in_channels // module.groups
            for k in module.kernel_size:
                per_output *= k
            total += output.numel() * per_output
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
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
