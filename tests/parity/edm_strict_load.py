"""ctpipe's U-Net weights in NVlabs/edm's own EDMPrecond, loaded strictly (see docs/networks.md).

Builds EDM's `EDMPrecond(SongUNet)` in the configuration a ctpipe preset mirrors (the `config`
recorded in tests/interop/fixtures/edm-songunet-<preset>.json), loads a ctpipe weight file as it
is with `load_state_dict(strict=True)`, and runs one denoising step on noise to show the network
works. Prints one line; exits non-zero if PyTorch refuses the file.

    python3 tests/parity/edm_strict_load.py EDM_CHECKOUT PRESET FILE.safetensors

EDM_CHECKOUT is a checkout of https://github.com/NVlabs/edm. Needs torch and safetensors. Not
part of CI (no PyTorch there).
"""
import json
import os
import sys
import types

import torch
from safetensors.torch import load_file

edm, preset, path = sys.argv[1:4]
sys.modules.setdefault("requests", types.ModuleType("requests"))  # dnnlib imports it; unused here
sys.path.insert(0, edm)
from training.networks import EDMPrecond  # noqa: E402

fixture = os.path.join(os.path.dirname(__file__), "..", "interop", "fixtures", f"edm-songunet-{preset}.json")
config = dict(json.load(open(fixture))["config"])
res, cin = config.pop("img_resolution"), config.pop("in_channels")
config.pop("out_channels")
label_dim = config.pop("label_dim")
net = EDMPrecond(img_resolution=res, img_channels=cin, label_dim=label_dim, model_type="SongUNet", **config)
state = load_file(path)
result = net.load_state_dict(state, strict=True)
net.eval()
with torch.no_grad():
    x = torch.randn(2, cin, res, res) * 2.0
    d = net(x, torch.tensor([2.0, 2.0]))
assert torch.isfinite(d).all()
print(f"{path}: {len(state)} tensors loaded strictly into EDMPrecond(SongUNet) ({preset}); {result}; D(x, 2) finite, shape {tuple(d.shape)}")
