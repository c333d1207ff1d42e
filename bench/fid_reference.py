"""Reference timings for `make bench` (stages/tools/src/bin/bench.rs), on the same machine:

    python3 bench/fid_reference.py fd STATS.safetensors     # pytorch-fid's Fréchet distance (scipy sqrtm)
    python3 bench/fid_reference.py inception N [DEVICE]     # pytorch-fid InceptionV3 images/s (random weights; cpu or cuda)

Prints one JSON line. Needs numpy, scipy, safetensors, pytorch-fid (and torch for inception).
"""
import json
import sys
import time

import peak_rss


def fd(path):
    from safetensors.numpy import load_file
    from pytorch_fid.fid_score import calculate_frechet_distance
    t = load_file(path)
    times = []
    for _ in range(3):
        s = time.perf_counter()
        v = calculate_frechet_distance(t["mu1"], t["sigma1"], t["mu2"], t["sigma2"])
        times.append(time.perf_counter() - s)
    print(json.dumps({"fd": float(v), "seconds": sorted(times)[1]}))


def inception(n, device="cpu"):
    import torch
    peak_rss.reset()
    sys.path.insert(0, __file__.rsplit("/", 2)[0] + "/tests/parity")
    from inception_parity import fid_inception_random
    from pytorch_fid import inception as I
    inner = fid_inception_random(0)
    orig = I.fid_inception_v3
    I.fid_inception_v3 = lambda: inner
    dev = torch.device(device)
    model = I.InceptionV3([3], resize_input=True, normalize_input=True).eval().to(dev)
    I.fid_inception_v3 = orig
    x = torch.rand(n, 3, 32, 32, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with torch.no_grad():
        model(x[:2])
        sync()
        times = []
        for _ in range(1 if dev.type == "cpu" else 3):
            s = time.perf_counter()
            model(x)
            sync()
            times.append(time.perf_counter() - s)
        dt = sorted(times)[len(times) // 2]
    print(json.dumps({"images_per_s": n / dt, "peak_rss_mib": peak_rss.mib(), "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    if sys.argv[1] == "fd":
        fd(sys.argv[2])
    else:
        inception(int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "cpu")
