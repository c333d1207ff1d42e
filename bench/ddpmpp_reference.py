"""A PyTorch reference of ctpipe's networks (EDM's SongUNet in the DDPM++ configuration, and the
2-D toys' MLP) and of its ECT training step, written from the same facts as
`stages/ctpipe/src/nn/{unet,mlp,layers}.rs` with the same parameter names, so ctpipe's
safetensors weights load into it unchanged.

    python3 bench/ddpmpp_reference.py check NETWORK IO.safetensors
        IO holds ctpipe's weights (`model.*`), an input `x`, `c_noise` and ctpipe's output `out`
        (written by `bench ddpmpp-io NETWORK IO.safetensors`); loads the weights strictly (same
        names and shapes) and prints the largest error relative to the output's scale.
    python3 bench/ddpmpp_reference.py step NETWORK BATCH STEPS MODE [DEVICE]
        times the ECT training step (student forward + backward, target forward without
        gradient with the student's dropout mask, RAdam, EMA) on random data; MODE is fp32
        (TF32 off), tf32 (TF32 on) or bf16 (autocast); cudnn.benchmark on for CUDA. Prints one
        JSON line: ms per step, images/s, peak memory.
    python3 bench/ddpmpp_reference.py sample NETWORK BATCH REPS MODE [DEVICE]
        times 1-step consistency sampling (one evaluation of the preconditioned network at
        σ_max per image, no gradients), the same MODEs; prints ms per batch and images/s.

NETWORK is a ctpipe preset: tiny (1×28×28), fmnist (1×28×28), cifar-ddpmpp (3×32×32), or the
toys' mlp-toy and mlp-small (2-D points).
"""
import json
import math
import sys
import time

import peak_rss

import torch
import torch.nn.functional as F
from torch import nn

PRESETS = {
    # model_channels, channel_mult, num_blocks, attn_resolutions, dropout, (C, H)
    "tiny": (16, [1, 2], 1, [], 0.0, (1, 28)),
    "fmnist": (64, [2, 2, 2], 4, [16], 0.3, (1, 28)),
    "cifar-ddpmpp": (128, [2, 2, 2], 4, [16], 0.13, (3, 32)),
}
# The toys' MLP: width, dropout, point dimension.
MLPS = {"mlp-toy": (256, 0.0, 2), "mlp-small": (64, 0.0, 2)}


def sample_shape(preset):
    if preset in MLPS:
        return (MLPS[preset][2],)
    c, res = PRESETS[preset][5]
    return (c, res, res)


def positional_embedding(c_noise, channels):
    """EDM's (and nn/layers.rs's) embedding: sin and cos of c_noise at frequencies
    (1/10000)^(i / (half − 1))."""
    half = channels // 2
    freqs = (1 / 10000) ** (torch.arange(half, dtype=torch.float32, device=c_noise.device) / max(half - 1, 1))
    arg = c_noise[:, None].float() * freqs[None, :]
    return torch.cat([arg.sin(), arg.cos()], 1)


class Mlp(nn.Module):
    """nn/mlp.rs: the noise embedding through Linear + SiLU, joined with Linear(x ⊕ c_noise) +
    SiLU, then Linear(2W, W), SiLU, Linear(W, W), SiLU, Linear(W, d). PyTorch's default init."""

    def __init__(self, width, dim):
        super().__init__()
        self.width = width
        self.map_noise = nn.Linear(width, width)
        self.input = nn.Linear(dim + 1, width)
        self.hidden0 = nn.Linear(2 * width, width)
        self.hidden1 = nn.Linear(width, width)
        self.output = nn.Linear(width, dim)

    def forward(self, x, c_noise, masks=None):
        emb = F.silu(self.map_noise(positional_embedding(c_noise, self.width).to(x.dtype)))
        h = F.silu(self.input(torch.cat([x, c_noise[:, None].to(x.dtype)], 1)))
        h = F.silu(self.hidden0(torch.cat([h, emb], 1)))
        return self.output(F.silu(self.hidden1(h)))


def xavier_(w, fan_in, fan_out, scale):
    b = scale * math.sqrt(6.0 / (fan_in + fan_out))
    nn.init.uniform_(w, -b, b)


class Linear(nn.Module):
    def __init__(self, cin, cout, scale=1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin))
        self.bias = nn.Parameter(torch.zeros(cout))
        xavier_(self.weight, cin, cout, scale)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class Conv(nn.Module):
    """A stride-1 'same' convolution after an optional 2× resampling ([1, 1] filter)."""

    def __init__(self, cin, cout, k, resample=None, scale=1.0):
        super().__init__()
        self.resample = resample
        self.weight = nn.Parameter(torch.empty(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout))
        xavier_(self.weight, cin * k * k, cout * k * k, scale)

    def forward(self, x):
        if self.resample == "up":
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        elif self.resample == "down":
            x = F.avg_pool2d(x, 2)
        return F.conv2d(x, self.weight, self.bias, padding=self.weight.shape[-1] // 2)


class GroupNorm(nn.Module):
    def __init__(self, c, eps=1e-6):
        super().__init__()
        self.groups = max(1, min(32, c // 4))
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x):
        return F.group_norm(x, self.groups, self.weight, self.bias, self.eps)


class Block(nn.Module):
    def __init__(self, cin, cout, emb, resample=None, attention=False, dropout=0.0):
        super().__init__()
        self.in_channels = cin
        self.dropout = dropout
        self.norm0 = GroupNorm(cin)
        self.conv0 = Conv(cin, cout, 3, resample)
        self.affine = Linear(emb, cout)
        self.norm1 = GroupNorm(cout)
        self.conv1 = Conv(cout, cout, 3, None, 1e-5)
        self.skip = Conv(cin, cout, 1, resample) if (cin != cout or resample) else None
        self.attention = attention
        if attention:
            self.norm2 = GroupNorm(cout)
            self.qkv = Conv(cout, 3 * cout, 1, None, math.sqrt(0.2))
            self.proj = Conv(cout, cout, 1, None, 1e-5)

    def forward(self, x, emb, masks):
        h = self.conv0(F.silu(self.norm0(x)))
        h = F.silu(self.norm1(h + self.affine(emb)[:, :, None, None]))
        if self.dropout > 0 and masks is not None:
            h = h * masks.take(self, h)
        h = self.conv1(h)
        h = (h + (self.skip(x) if self.skip is not None else x)) * math.sqrt(0.5)
        if self.attention:
            n, c, hh, ww = h.shape
            q, k, v = self.qkv(self.norm2(h)).reshape(n, c, 3, hh * ww).unbind(2)
            w = torch.softmax(torch.einsum("nci,ncj->nij", q, k) / math.sqrt(c), dim=2)
            a = torch.einsum("nij,ncj->nci", w, v).reshape(n, c, hh, ww)
            h = (self.proj(a) + h) * math.sqrt(0.5)
        return h


class Masks:
    """Dropout masks recorded on the student pass and replayed on the target pass."""

    def __init__(self, p):
        self.p, self.saved, self.replay = p, {}, False

    def take(self, block, h):
        if not self.replay:
            self.saved[id(block)] = (torch.rand_like(h) >= self.p).to(h.dtype) / (1 - self.p)
        return self.saved[id(block)]


class SongUNet(nn.Module):
    def __init__(self, res, cin, mc, mult, blocks, attn, dropout):
        super().__init__()
        self.mc = mc
        emb = mc * 4
        self.map_layer0 = Linear(mc, emb)
        self.map_layer1 = Linear(emb, emb)
        self.enc = nn.ModuleDict()
        skips = []
        cout = cin
        for level, m in enumerate(mult):
            r = res >> level
            if level == 0:
                self.enc[f"{r}x{r}_conv"] = Conv(cout, mc, 3)
                cout = mc
            else:
                self.enc[f"{r}x{r}_down"] = Block(cout, cout, emb, "down", False, dropout)
            skips.append(cout)
            for i in range(blocks):
                self.enc[f"{r}x{r}_block{i}"] = Block(cout, mc * m, emb, None, r in attn, dropout)
                cout = mc * m
                skips.append(cout)
        self.dec = nn.ModuleDict()
        for level in reversed(range(len(mult))):
            r = res >> level
            if level == len(mult) - 1:
                self.dec[f"{r}x{r}_in0"] = Block(cout, cout, emb, None, True, dropout)
                self.dec[f"{r}x{r}_in1"] = Block(cout, cout, emb, None, False, dropout)
            else:
                self.dec[f"{r}x{r}_up"] = Block(cout, cout, emb, "up", False, dropout)
            for i in range(blocks + 1):
                cin_b = cout + skips.pop()
                cout = mc * mult[level]
                self.dec[f"{r}x{r}_block{i}"] = Block(cin_b, cout, emb, None, i == blocks and r in attn, dropout)
            if level == 0:
                self.dec[f"{r}x{r}_aux_norm"] = GroupNorm(cout)
                self.dec[f"{r}x{r}_aux_conv"] = Conv(cout, cin, 3, None, 1e-5)

    def forward(self, x, c_noise, masks=None):
        half = self.mc // 2
        f = (1.0 / 10000.0) ** (torch.arange(half, dtype=torch.float64, device=x.device) / max(half - 1, 1))
        arg = c_noise.to(torch.float64)[:, None] * f[None, :]
        emb = torch.cat([arg.sin(), arg.cos()], 1).to(x.dtype)
        emb = F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))
        skips = []
        for name, m in self.enc.items():
            x = m(x) if name.endswith("_conv") else m(x, emb, masks)
            skips.append(x)
        out = None
        for name, m in self.dec.items():
            if name.endswith("_aux_norm"):
                out = F.silu(m(x))
            elif name.endswith("_aux_conv"):
                out = m(out)
            else:
                if x.shape[1] != m.in_channels:
                    x = torch.cat([x, skips.pop()], 1)
                x = m(x, emb, masks)
        return out


class Model(nn.Module):
    """EDM's wrapper: the U-Net lives under `model.`."""

    def __init__(self, preset):
        super().__init__()
        if preset in MLPS:
            width, self.dropout, dim = MLPS[preset]
            self.model = Mlp(width, dim)
            return
        mc, mult, blocks, attn, dropout, (c, res) = PRESETS[preset]
        self.dropout = dropout
        self.model = SongUNet(res, c, mc, mult, blocks, attn, dropout)


def check(preset, io_path):
    from safetensors.torch import load_file
    t = load_file(io_path)
    weights = {k: v for k, v in t.items() if k.startswith("model.")}
    x, c_noise, want = t["x"], t["c_noise"], t["out"]
    m = Model(preset)
    m.load_state_dict(weights, strict=True)
    with torch.no_grad():
        got = m.model(x, c_noise)
    err = ((got - want).abs().max() / want.abs().max()).item()
    print(json.dumps({"preset": preset, "parameters": sum(p.numel() for p in m.parameters()), "max_relative_error": err}))


def prepare(mode, device):
    """The device, with cudnn.benchmark on and TF32 only in tf32 mode on CUDA; seeds torch."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
        torch.backends.cudnn.allow_tf32 = mode == "tf32"
    torch.manual_seed(0)
    return dev


def step(preset, batch, steps, mode, device="cuda"):
    """ECT's training step on random data, with ctpipe's ECT arithmetic (EDM preconditioning in
    training, pseudo-Huber c = 0, weight 1/(t − r), dropout masks shared by both passes). r is a
    fixed fraction of t rather than ECT's staged mapping: its value does not change the work."""
    dev = prepare(mode, device)
    peak_rss.reset()
    m = Model(preset).to(dev)
    ema = Model(preset).to(dev)
    ema.load_state_dict(m.state_dict())
    opt = torch.optim.RAdam(m.parameters(), lr=1e-4)
    p, shape = m.dropout, sample_shape(preset)
    sd = 0.5

    def f(x, sigma, masks):
        s = sigma.view(-1, *([1] * len(shape)))
        c_in = 1 / (s * s + sd * sd).sqrt()
        c_skip = sd * sd / (s * s + sd * sd)
        c_out = s * sd / (s * s + sd * sd).sqrt()
        return c_skip * x + c_out * m.model(c_in * x, sigma.log() / 4, masks)

    def one():
        x0 = torch.rand(batch, *shape, device=dev) * 2 - 1
        t = (torch.randn(batch, device=dev) * 2.0 - 1.1).exp()
        r = t * (1 - 0.5 * torch.sigmoid(-t))
        z = torch.randn_like(x0)
        masks = Masks(p)
        view = (-1,) + (1,) * len(shape)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=mode == "bf16"):
            student = f(x0 + t.view(view) * z, t, masks)
            masks.replay = True
            with torch.no_grad():
                target = f(x0 + r.view(view) * z, r, masks)
        d = ((student.float() - target.float()) ** 2).flatten(1).sum(1).add(1e-20).sqrt()
        loss = (d / (t - r)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for e, o in zip(ema.parameters(), m.parameters()):
                e.lerp_(o, 1 - 0.9999)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        one()
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        one()
    sync()
    ms = (time.perf_counter() - start) / steps * 1e3
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None
    print(json.dumps({"preset": preset, "batch": batch, "mode": mode, "device": str(dev), "ms_per_step": ms,
                      "images_per_s": batch / ms * 1e3, "peak_gib": peak, "peak_rss_mib": peak_rss.mib(),
                      "threads": torch.get_num_threads()}))


def sample(preset, batch, reps, mode, device="cuda"):
    """1-step consistency sampling: one evaluation of the preconditioned network at sigma_max
    per image (ECT's consistency preconditioning), no gradients; median time per batch."""
    dev = prepare(mode, device)
    peak_rss.reset()
    m = Model(preset).to(dev).eval()
    shape = sample_shape(preset)
    sd, smin, smax = 0.5, 0.002, 80.0

    def one():
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=mode == "bf16"):
            s = torch.full((batch,), smax, device=dev)
            x = torch.randn(batch, *shape, device=dev) * smax
            sc = s.view(-1, *([1] * len(shape)))
            c_in = 1 / (sc * sc + sd * sd).sqrt()
            c_skip = sd * sd / ((sc - smin) ** 2 + sd * sd)
            c_out = (sc - smin) * sd / (sc * sc + sd * sd).sqrt()
            out = c_skip * x + c_out * m.model(c_in * x, s.log() / 4)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return out

    one()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        one()
        times.append(time.perf_counter() - start)
    ms = sorted(times)[len(times) // 2] * 1e3
    print(json.dumps({"preset": preset, "batch": batch, "mode": mode, "device": str(dev), "ms_per_batch": ms,
                      "images_per_s": batch / ms * 1e3, "peak_rss_mib": peak_rss.mib(), "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "check":
        check(sys.argv[2], sys.argv[3])
    elif cmd == "step":
        step(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6] if len(sys.argv) > 6 else "cuda")
    elif cmd == "sample":
        sample(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6] if len(sys.argv) > 6 else "cuda")
    else:
        sys.exit(__doc__)
