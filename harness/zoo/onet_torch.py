"""MTCNN ONet (facenet-pytorch 2.6.0, MIT; weights ``facenet_pytorch/data/onet.pt`` in the wheel) as a traceable module.

Same layers as ``facenet_pytorch.models.mtcnn.ONet``; the only change is the
flatten before ``dense5`` (``x.view(x.shape[0], -1)`` -> a static reshape, which
the neuralnetwork converter handles) and ``prelu5`` applied on a (B, 256, 1, 1)
view (the converter rejects a per-channel PReLU on a rank-2 tensor); same numbers. Input: (1, 3, 48, 48) RGB crop normalised
as facenet-pytorch does, ``(pixel - 127.5) * 0.0078125``. Outputs, in the
package's order: box regression (1, 4), landmarks (1, 10), face probability
(1, 2) = softmax [non-face, face].
"""
from __future__ import annotations

import sys
import types

import torch
import torch.nn as nn

from harness.zoo._build import package_file


def weights_path(name: str = "onet") -> str:
    """``facenet_pytorch/data/<name>.pt`` of the installed wheel (not imported: its __init__ needs torchvision)."""
    return str(package_file("facenet_pytorch", "data", f"{name}.pt"))


class ONet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.softmax6_1 = nn.Softmax(dim=1)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def load_facenet(self, path: str | None = None) -> "ONet":
        self.load_state_dict(torch.load(path or weights_path(), map_location="cpu"), strict=True)
        return self.eval()

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))                 # (B, 128, 3, 3)
        x = x.permute(0, 3, 2, 1).contiguous()
        x = self.dense5(x.reshape(-1, 1152))
        # PReLU on (B, 256, 1, 1): the converter rejects a per-channel PReLU on a rank-2 tensor
        x = self.prelu5(x.reshape(-1, 256, 1, 1)).reshape(-1, 256)
        a = self.softmax6_1(self.dense6_1(x))
        b = self.dense6_2(x)
        c = self.dense6_3(x)
        return b, c, a


def package_onet():
    """The package's own ONet class (torchvision, which its __init__ imports, stubbed: only ONet is used)."""
    if "torchvision" not in sys.modules:
        tv = types.ModuleType("torchvision")
        tv.transforms = types.ModuleType("torchvision.transforms")
        tv.transforms.functional = types.ModuleType("torchvision.transforms.functional")
        tv.ops = types.ModuleType("torchvision.ops")
        tv.ops.boxes = types.ModuleType("torchvision.ops.boxes")
        tv.ops.boxes.batched_nms = None
        for m in (tv, tv.transforms, tv.transforms.functional, tv.ops, tv.ops.boxes):
            sys.modules[m.__name__] = m
    from facenet_pytorch.models.mtcnn import ONet as PkgONet

    return PkgONet(pretrained=True).eval()
