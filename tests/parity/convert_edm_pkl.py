"""Convert an NVlabs/edm network pickle (`network-snapshot-*.pkl`, or one of EDM's published
`edm-cifar10-32x32-uncond-vp.pkl`) to the safetensors file train-ct's `init_weights` (and
distill's `teacher_weights`) read, and print its sha256 for `init_sha256`.

    python3 tests/parity/convert_edm_pkl.py EDM_CHECKOUT network.pkl out.safetensors [--key ema]

EDM_CHECKOUT is a checkout of https://github.com/NVlabs/edm: its pickles hold EDM's own
classes (`torch_utils.persistence`), so its code must be importable to read them. The file
keeps EDMPrecond's state_dict names (`model.enc.32x32_conv.weight`, ...) and its
`resample_filter` buffers, in float32: the names and shapes ctpipe's U-Net presets use
(docs/networks.md). Run it where PyTorch and the pickle are; not part of CI.
"""
import argparse
import hashlib
import pickle
import sys
import types

import torch
from safetensors.torch import save_file

ap = argparse.ArgumentParser()
ap.add_argument("edm")
ap.add_argument("pkl")
ap.add_argument("out")
ap.add_argument("--key", default="ema", help="the pickle's entry holding the network (EDM: ema)")
args = ap.parse_args()

sys.modules.setdefault("requests", types.ModuleType("requests"))  # dnnlib imports it; unused here
sys.path.insert(0, args.edm)
with open(args.pkl, "rb") as f:
    data = pickle.load(f)
net = data[args.key] if isinstance(data, dict) else data
if type(net).__name__ != "EDMPrecond":
    raise SystemExit(f"{args.pkl}: `{args.key}` is a {type(net).__name__}; expected EDM's EDMPrecond (ctpipe's U-Net mirrors SongUNet under it)")
if type(net.model).__name__ != "SongUNet":
    raise SystemExit(f"{args.pkl}: the network is a {type(net.model).__name__}; ctpipe implements EDM's SongUNet (DDPM++) only")
state = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in net.state_dict().items()}
save_file(state, args.out)
sha = hashlib.sha256(open(args.out, "rb").read()).hexdigest()
print(f"{args.out}: {len(state)} tensors of EDMPrecond(SongUNet), img_resolution {net.img_resolution}, channels {net.img_channels}, label_dim {net.label_dim}")
print(f"init_sha256 = \"{sha}\"")
