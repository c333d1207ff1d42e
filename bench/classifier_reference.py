"""A PyTorch reference of ctpipe's in-domain classifier (`stages/ctpipe/src/features/classifier.rs`:
conv3×3(1→32) → ReLU → maxpool2 → conv3×3(32→64) → ReLU → maxpool2 → linear(→128) → ReLU →
linear(→10), PyTorch's default initialisation) and of its training step (cross-entropy, Adam),
for `bench` to time beside ctpipe's on the same CPU.

    python3 bench/classifier_reference.py step BATCH STEPS
        times the training step (forward, cross-entropy, backward, Adam) on random 28×28 images;
        prints one JSON line: ms per step, images/s.
    python3 bench/classifier_reference.py features BATCH REPS
        times the features (the 128-d penultimate layer) of a batch, no gradients; median ms.
"""
import json
import sys
import time

import torch

import peak_rss
import torch.nn.functional as F
from torch import nn


class Classifier(nn.Module):
    def __init__(self, classes=10, channels=(32, 64), features=128):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels[0], 3, padding=1)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 3, padding=1)
        self.fc1 = nn.Linear(channels[1] * 7 * 7, features)
        self.head = nn.Linear(features, classes)

    def penultimate(self, x):
        y = F.max_pool2d(F.relu(self.conv1(x)), 2)
        y = F.max_pool2d(F.relu(self.conv2(y)), 2)
        return F.relu(self.fc1(y.flatten(1)))

    def forward(self, x):
        return self.head(self.penultimate(x))


def step(batch, steps):
    torch.manual_seed(0)
    peak_rss.reset()
    m = Classifier()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)

    def one():
        x = torch.rand(batch, 1, 28, 28) * 2 - 1
        y = torch.randint(0, 10, (batch,))
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        one()
    start = time.perf_counter()
    for _ in range(steps):
        one()
    ms = (time.perf_counter() - start) / steps * 1e3
    print(json.dumps({"batch": batch, "ms_per_step": ms, "images_per_s": batch / ms * 1e3, "peak_rss_mib": peak_rss.mib(),
                      "threads": torch.get_num_threads()}))


def features(batch, reps):
    torch.manual_seed(0)
    peak_rss.reset()
    m = Classifier().eval()
    x = torch.rand(batch, 1, 28, 28) * 2 - 1
    times = []
    with torch.no_grad():
        m.penultimate(x)
        for _ in range(reps):
            start = time.perf_counter()
            m.penultimate(x)
            times.append(time.perf_counter() - start)
    ms = sorted(times)[len(times) // 2] * 1e3
    print(json.dumps({"batch": batch, "ms_per_batch": ms, "images_per_s": batch / ms * 1e3, "peak_rss_mib": peak_rss.mib(),
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "step":
        step(int(sys.argv[2]), int(sys.argv[3]))
    elif len(sys.argv) == 4 and sys.argv[1] == "features":
        features(int(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit(__doc__)
