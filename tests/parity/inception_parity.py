"""Parity of ctpipe's FID Inception-v3 with pytorch-fid's (see docs/fid.md).

Builds pytorch-fid's InceptionV3 (FIDInceptionA/C/E_1/E_2 blocks, resize to 299, pool3) with
random weights and random BatchNorm statistics, runs it on fixed images, and writes the weights
(pytorch-fid's state-dict names), the images (in [-1, 1]) and its 2048-d features to one
safetensors file. Then `target/release/features parity <file>` computes ctpipe's features from
the same weights and images and prints the relative error.

    python3 tests/parity/inception_parity.py /tmp/parity.safetensors [--device cpu|cuda]
    target/release/features parity /tmp/parity.safetensors

Needs torch, torchvision, pytorch-fid, safetensors. Not part of CI.
"""
import argparse
import torch
from safetensors.torch import save_file
from pytorch_fid import inception as I


def fid_inception_random(seed):
    """pytorch-fid's fid_inception_v3() without downloading: same patched blocks, random weights."""
    torch.manual_seed(seed)
    net = I._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = I.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = I.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = I.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = I.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = I.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = I.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = I.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = I.FIDInceptionE_1(1280)
    net.Mixed_7c = I.FIDInceptionE_2(2048)
    # Random BatchNorm statistics, so that folding them is exercised; He-scaled convolutions
    # keep activations of order 1 through the 94 layers.
    for name, m in net.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, 0.0, (2.0 / (m.weight[0].numel())) ** 0.5)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False

    inner = fid_inception_random(args.seed)
    orig = I.fid_inception_v3
    I.fid_inception_v3 = lambda: inner  # InceptionV3 calls it for use_fid_inception=True
    model = I.InceptionV3([I.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True, normalize_input=True)
    I.fid_inception_v3 = orig
    model = model.eval().to(args.device)

    g = torch.Generator().manual_seed(args.seed + 1)
    # Fixed images: 28x28 grayscale (as Fashion-MNIST, repeated to RGB) and 32x32 RGB (as CIFAR-10),
    # quantized to uint8 levels like saved images.
    gray = torch.randint(0, 256, (3, 1, 28, 28), generator=g).float() / 127.5 - 1
    rgb = torch.randint(0, 256, (3, 3, 32, 32), generator=g).float() / 127.5 - 1
    feats = {}
    with torch.no_grad():
        for name, x in [("gray", gray), ("rgb", rgb)]:
            x3 = x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x
            # pytorch-fid takes [0, 1] input and maps it to [-1, 1] itself.
            feats[name] = model(((x3 + 1) / 2).to(args.device))[0].squeeze(-1).squeeze(-1).cpu()
    tensors = {k: v.detach().cpu().contiguous() for k, v in inner.state_dict().items()
               if not k.endswith("num_batches_tracked") and not k.startswith("fc.")}
    tensors.update({"parity.images.gray": gray, "parity.images.rgb": rgb,
                    "parity.features.gray": feats["gray"], "parity.features.rgb": feats["rgb"]})
    save_file(tensors, args.out, metadata={"torch": torch.__version__, "device": args.device})
    print(f"wrote {args.out}: {len(tensors)} tensors; feature norms",
          {k: float(v.norm()) for k, v in feats.items()})


if __name__ == "__main__":
    main()
