"""Convert pytorch-fid's FID Inception weights to the safetensors file ctpipe reads.

    python3 tests/parity/convert_fid_inception.py pt_inception-2015-12-05-6726825d.pth fid_inception.safetensors

The .pth is the file pytorch-fid downloads on first use (FID_WEIGHTS_URL in
pytorch_fid/inception.py; torch's hub cache keeps it under ~/.cache/torch/hub/checkpoints/).
Its sha256 must start with 6726825d (torch.hub's check). Prints the output's sha256: give it to
ctpipe as inception_sha256. Needs torch and safetensors.
"""
import hashlib
import sys
import torch
from safetensors.torch import save_file


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(src, dst):
    got = sha256(src)
    if not got.startswith("6726825d"):
        sys.exit(f"{src}: sha256 {got} does not start with 6726825d (not pytorch-fid's weights)")
    sd = torch.load(src, map_location="cpu")
    tensors = {k: v.contiguous().float() for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    save_file(tensors, dst)
    print(f"{dst}: {len(tensors)} tensors, sha256 {sha256(dst)}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
