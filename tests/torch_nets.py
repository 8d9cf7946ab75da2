"""Face-recognition-shaped torch modules with random weights, for conversion and pair-audit tests."""
from torch import nn


class _DW(nn.Module):
    """MobileFaceNet's unit: depthwise 3x3 + PReLU, pointwise linear bottleneck."""

    def __init__(self, c, stride):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.act = nn.PReLU(c)
        self.pw = nn.Conv2d(c, c, 1, bias=False)

    def forward(self, x):
        return self.pw(self.act(self.bn(self.dw(x))))


class TinyFaceNet(nn.Module):
    """A MobileFaceNet-shaped embedding net (random weights), 56x56 RGB -> 128-D unit vector."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.PReLU(16))
        self.blocks = nn.Sequential(_DW(16, 2), _DW(16, 1), _DW(16, 2))
        self.gdc = nn.Conv2d(16, 16, 7, groups=16, bias=False)  # global depthwise conv over 7x7
        self.fc = nn.Linear(16, 128, bias=False)

    def forward(self, x):
        y = self.gdc(self.blocks(self.stem(x))).flatten(1)
        y = self.fc(y)
        return y / y.norm(dim=1, keepdim=True)


class _IRBlock(nn.Module):
    """ArcFace's improved residual unit: BN - conv3x3 - BN - PReLU - conv3x3(stride) - BN, plus a shortcut."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
                                  nn.PReLU(cout), nn.Conv2d(cout, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = (nn.Identity() if cin == cout and stride == 1 else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x):
        return self.body(x) + self.short(x)


class TinyArcFace(nn.Module):
    """An ArcFace-style IResNet (random weights): 56x56 RGB -> BN-dropout-FC-BN 64-D embedding (not normalised)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.PReLU(16))
        self.layers = nn.Sequential(_IRBlock(16, 16, 2), _IRBlock(16, 32, 2), _IRBlock(32, 32, 2))
        self.bn = nn.BatchNorm2d(32)
        self.drop = nn.Dropout(0.4)
        self.fc = nn.Linear(32 * 7 * 7, 64)
        self.features = nn.BatchNorm1d(64)

    def forward(self, x):
        y = self.drop(self.bn(self.layers(self.stem(x)))).flatten(1)
        return self.features(self.fc(y))


def randomise_batchnorm(net):
    """Non-trivial running statistics (a fresh BatchNorm is the identity in eval mode)."""
    for m in net.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net
