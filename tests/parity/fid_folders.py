"""ctpipe's `fid` tool against pytorch-fid on the same two folders of PNGs (see docs/fid.md).

Writes two folders of 28x28 grayscale PNGs (a bright and a dark population, so the FID is far
from 0) and a random-weight FID Inception-v3 (`inception_parity.fid_inception_random`: the real
weights cannot be downloaded here), then runs pytorch-fid's own code on the folders:
`fid_score.calculate_fid_given_paths` with that network in place of the downloaded one (same
file listing, PIL loading, batching, resize, statistics and Fréchet distance). Also writes
pytorch-fid's statistics of the first folder with its `save_fid_stats`. Prints the FID and the
command that computes ctpipe's:

    python3 tests/parity/fid_folders.py /tmp/fid-parity
    target/release/fid /tmp/fid-parity/a /tmp/fid-parity/b --inception /tmp/fid-parity/inception.safetensors

Needs torch, torchvision, pytorch-fid, safetensors, pillow. Not part of CI.
"""
import os
import sys

import numpy as np
import torch
from PIL import Image
from pytorch_fid import fid_score
from pytorch_fid import inception as I
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from inception_parity import fid_inception_random  # noqa: E402

out = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 120
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
rng = np.random.default_rng(0)
for name, lo, hi in [("a", 0, 200), ("b", 60, 256)]:
    os.makedirs(os.path.join(out, name), exist_ok=True)
    for i in range(n):
        px = rng.integers(lo, hi, size=(28, 28), dtype=np.uint8)
        Image.fromarray(px, "L").save(os.path.join(out, name, f"{i:05d}.png"))

inner = fid_inception_random(0)
I.fid_inception_v3 = lambda: inner  # what InceptionV3(use_fid_inception=True) builds
weights = {k: v.detach().contiguous() for k, v in inner.state_dict().items() if not k.endswith("num_batches_tracked") and not k.startswith("fc.")}
save_file(weights, os.path.join(out, "inception.safetensors"))

paths = [os.path.join(out, "a"), os.path.join(out, "b")]
fid = fid_score.calculate_fid_given_paths(paths, batch_size=50, device="cpu", dims=2048, num_workers=0)
stats = os.path.join(out, "a-stats.npz")
if os.path.exists(stats):
    os.remove(stats)  # save_fid_stats refuses to overwrite
fid_score.save_fid_stats([paths[0], stats], batch_size=50, device="cpu", dims=2048, num_workers=0)
print(f"pytorch-fid FID: {fid!r} (torch {torch.__version__}, {n} images per folder, random-weight Inception)")
