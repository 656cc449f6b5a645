"""Generator and critic of torch-mimicry's ResNet WGAN-GP 64x64 design (``wgan_gp_64``).

Generator: linear to a 4x4 map of ``ngf`` channels, four up-sampling residual blocks halving the
width each time (BN-ReLU-upsample-conv3x3-BN-ReLU-conv3x3, upsample-conv1x1 shortcut), BN-ReLU,
conv3x3 to RGB, tanh. Critic (mimicry 0.1.16's ``WGANGPDiscriminator64``): an optimised first
block to ndf/16 channels, then four down-sampling residual blocks to ndf/8, ndf/4, ndf/2 and ndf
channels, ReLU, global mean pooling, one linear layer to the score. No normalisation anywhere in
the critic (the gradient penalty is per sample, so no BatchNorm; mimicry's layer norms are
commented out in 0.1.16). A down-sampling block keeps its input width in the middle
(ReLU-conv3x3(cin->cin)-ReLU-conv3x3(cin->cout)-avgpool), which is why the critic has about half
the parameters of a block widening in its first convolution. torch-mimicry uses ngf = ndf = 1024
(12,220,675 and 10,141,441 parameters); here the widths are params (tests/test_gan.py checks both
counts at 1024 and at 64).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from repropipe.models import register_model


def _xavier(m: nn.Module, gain: float) -> None:
    nn.init.xavier_uniform_(m.weight, gain)
    nn.init.zeros_(m.bias)


class GBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.b1, self.c1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1)
        self.b2, self.c2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1)
        self.c_sc = nn.Conv2d(cin, cout, 1, 1, 0)
        _xavier(self.c1, math.sqrt(2)), _xavier(self.c2, math.sqrt(2)), _xavier(self.c_sc, 1.0)

    @staticmethod
    def _up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c1(self._up(F.relu(self.b1(x))))
        h = self.c2(F.relu(self.b2(h)))
        return h + self.c_sc(self._up(x))


class DBlockOptimized(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(cin, cout, 3, 1, 1), nn.Conv2d(cout, cout, 3, 1, 1)
        self.c_sc = nn.Conv2d(cin, cout, 1, 1, 0)
        _xavier(self.c1, math.sqrt(2)), _xavier(self.c2, math.sqrt(2)), _xavier(self.c_sc, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.avg_pool2d(self.c2(F.relu(self.c1(x))), 2)
        return h + self.c_sc(F.avg_pool2d(x, 2))


class DBlock(nn.Module):
    """ReLU-conv3x3(cin->cin)-ReLU-conv3x3(cin->cout)-avgpool; shortcut conv1x1 then avgpool (mimicry's DBlock).

    mimicry's DBlock applies its first ReLU in place (``nn.ReLU(True)``) to the block input
    before the shortcut reads it, so its shortcut sees relu(x); written out here without the
    in-place trick.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(cin, cin, 3, 1, 1), nn.Conv2d(cin, cout, 3, 1, 1)
        self.c_sc = nn.Conv2d(cin, cout, 1, 1, 0)
        _xavier(self.c1, math.sqrt(2)), _xavier(self.c2, math.sqrt(2)), _xavier(self.c_sc, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        h = F.avg_pool2d(self.c2(F.relu(self.c1(x))), 2)
        return h + F.avg_pool2d(self.c_sc(x), 2)


def _check_width(name: str, width: int) -> None:
    if width < 16 or width % 16:
        raise ValueError(f"{name} must be a multiple of 16 (the narrowest block has {name}/16 channels), got {width}")


class Generator64(nn.Module):
    def __init__(self, nz: int = 128, ngf: int = 64, bottom_width: int = 4) -> None:
        super().__init__()
        _check_width("ngf", ngf)
        self.nz, self.ngf, self.bottom_width = nz, ngf, bottom_width
        self.l1 = nn.Linear(nz, bottom_width**2 * ngf)
        self.blocks = nn.Sequential(*[GBlock(ngf >> i, ngf >> (i + 1)) for i in range(4)])
        self.b6 = nn.BatchNorm2d(ngf >> 4)
        self.c6 = nn.Conv2d(ngf >> 4, 3, 3, 1, 1)
        _xavier(self.l1, 1.0), _xavier(self.c6, 1.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.l1(z).view(z.shape[0], self.ngf, self.bottom_width, self.bottom_width)
        h = F.relu(self.b6(self.blocks(h)))
        return torch.tanh(self.c6(h))


class Critic64(nn.Module):
    def __init__(self, ndf: int = 64) -> None:
        super().__init__()
        _check_width("ndf", ndf)
        self.block1 = DBlockOptimized(3, ndf >> 4)
        self.blocks = nn.Sequential(*[DBlock(ndf >> (4 - i), ndf >> (3 - i)) for i in range(4)])
        self.l6 = nn.Linear(ndf, 1)
        _xavier(self.l6, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.blocks(self.block1(x)))
        return self.l6(h.mean(dim=(2, 3)))


@register_model("wgan_gp_64_generator", branch="gan", example=lambda: (torch.randn(2, 128),))
def wgan_gp_64_generator(nz: int = 128, ngf: int = 64) -> Generator64:
    return Generator64(nz=nz, ngf=ngf)


@register_model("wgan_gp_64_critic", branch="gan", example=lambda: (torch.rand(2, 3, 64, 64) * 2 - 1,))
def wgan_gp_64_critic(ndf: int = 64) -> Critic64:
    return Critic64(ndf=ndf)
