"""Write the corpus of malformed inputs (tests/corpus/files/), deterministically.

Each file or folder is one way an input can be broken; tests/corpus/cases.toml says how a
stage is pointed at it and the exit code and message it must give (tests/faults/corpus.rs runs
them). Run from the repository root with the interop tests' Python (pyarrow, safetensors,
numpy, pillow: tests/interop/requirements.txt):

    target/interop-venv/*/bin/python tests/corpus/make_corpus.py
"""

import gzip
import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from safetensors.numpy import save as st_save

ROOT = Path(__file__).resolve().parent / "files"


def idx(dims, data, type_byte=0x08):
    return bytes([0, 0, type_byte, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + bytes(data)


def gz(b):
    # mtime=0: the same bytes on every run.
    return gzip.compress(b, mtime=0)


FM = {
    "train-images-idx3-ubyte.gz": lambda: gz(idx([20, 28, 28], [i % 256 for i in range(20 * 784)])),
    "train-labels-idx1-ubyte.gz": lambda: gz(idx([20], [i % 10 for i in range(20)])),
    "t10k-images-idx3-ubyte.gz": lambda: gz(idx([10, 28, 28], [i % 256 for i in range(10 * 784)])),
    "t10k-labels-idx1-ubyte.gz": lambda: gz(idx([10], [i % 10 for i in range(10)])),
}


def idx_case(name, bad_file, content):
    d = ROOT / "idx" / name
    d.mkdir(parents=True)
    for f, make in FM.items():
        if f == bad_file and content is None:
            continue
        (d / f).write_bytes(content if f == bad_file else make())


def png(w, h, value=7):
    b = io.BytesIO()
    Image.fromarray(np.full((h, w), value, dtype=np.uint8), mode="L").save(b, format="PNG")
    return b.getvalue()


def folder_case(name, bad_name=None, bad=None):
    d = ROOT / "folder" / name
    for c in ["a", "b"]:
        (d / c).mkdir(parents=True)
        for i in range(3):
            (d / c / f"{i}.png").write_bytes(png(8, 8, 10 * i))
    if bad_name:
        (d / "a" / bad_name).write_bytes(bad)


def parquet(name, table, **kw):
    p = ROOT / "parquet" / f"{name}.parquet"
    p.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, p, **kw)
    return p


def images_column(n, make=lambda i: png(4, 4, i)):
    return pa.array([{"bytes": make(i), "path": f"{i}.png"} for i in range(n)], type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))


def safetensors_raw(name, header_json, data=b"", header_len=None):
    h = header_json.encode()
    p = ROOT / "safetensors" / f"{name}.safetensors"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(struct.pack("<Q", len(h) if header_len is None else header_len) + h + data)


def pipeline(name, text):
    p = ROOT / "toml" / f"{name}.toml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def main():
    if ROOT.exists():
        shutil.rmtree(ROOT)
    # IDX: each case replaces (or leaves out) the training images of a good tiny set.
    bad = "train-images-idx3-ubyte.gz"
    good_images = idx([20, 28, 28], [0] * (20 * 784))
    idx_case("bad-magic", bad, gz(b"PK\x03\x04" + bytes(100)))
    idx_case("element-type", bad, gz(idx([20, 28, 28], [0] * (20 * 784), type_byte=0x0D)))
    idx_case("truncated-header", bad, gz(bytes([0, 0, 8, 3, 0, 0])))
    idx_case("truncated-data", bad, gz(good_images[:-100]))
    idx_case("trailing-bytes", bad, gz(good_images + b"xyz"))
    idx_case("dims-overflow", bad, gz(idx([65536, 65536, 65536, 65536], [])))
    idx_case("not-gzip-not-idx", bad, b"hello, world\n" * 10)
    whole = FM[bad]()
    idx_case("truncated-gzip", bad, whole[: len(whole) // 2])
    idx_case("image-size", bad, gz(idx([20, 27, 28], [0] * (20 * 27 * 28))))
    idx_case("label-count", "train-labels-idx1-ubyte.gz", gz(idx([19], [0] * 19)))
    idx_case("label-range", "train-labels-idx1-ubyte.gz", gz(idx([20], [12] * 20)))
    idx_case("missing-file", bad, None)

    # Image folders: two classes of 8×8 grey PNGs, and one bad file in class a.
    folder_case("truncated-png", "bad.png", png(8, 8)[:40])
    folder_case("not-an-image", "bad.png", b"this is text, not a PNG\n")
    folder_case("empty-file", "bad.png", b"")
    ihdr_broken = bytearray(png(8, 8))
    ihdr_broken[29] ^= 0xFF  # a byte of the IHDR chunk's CRC
    folder_case("bad-crc", "bad.png", bytes(ihdr_broken))
    folder_case("other-size", "bad.png", png(9, 9))
    (ROOT / "folder" / "no-images" / "a").mkdir(parents=True)
    (ROOT / "folder" / "no-images" / "a" / "readme.txt").write_text("no pictures here\n")

    # Parquet: a valid file in every codec pyarrow writes, then broken ones.
    labels = pa.array([i % 2 for i in range(6)], type=pa.int64())
    for codec in ["snappy", "gzip", "brotli", "lz4", "zstd", "none"]:
        parquet(f"ok-{codec}", pa.table({"image": images_column(6), "label": labels}), compression=codec)
    parquet("no-image-column", pa.table({"label": labels}))
    parquet("image-is-int", pa.table({"image": pa.array(range(6), type=pa.int64()), "label": labels}))
    parquet("label-is-float", pa.table({"image": images_column(6), "label": pa.array([0.5] * 6)}))
    parquet("not-images", pa.table({"image": images_column(6, lambda i: b"not a png %d" % i), "label": labels}))
    parquet("no-rows", pa.table({"image": images_column(0), "label": pa.array([], type=pa.int64())}))
    parquet("negative-label", pa.table({"image": images_column(6), "label": pa.array([-1] * 6, type=pa.int64())}))
    whole = (ROOT / "parquet" / "ok-snappy.parquet").read_bytes()
    (ROOT / "parquet" / "truncated.parquet").write_bytes(whole[: len(whole) // 2])
    (ROOT / "parquet" / "garbage.parquet").write_bytes(b"PAR1" + bytes(range(256)) * 4 + b"PAR1")

    # safetensors, as imported teacher weights of the mlp-toy preset.
    safetensors_raw("header-longer-than-file", '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', bytes(8), header_len=1 << 40)
    safetensors_raw("header-not-json", "{not json at all", bytes(8))
    safetensors_raw("offsets-out-of-range", '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,800]}}', bytes(8))
    safetensors_raw("shape-disagrees-with-bytes", '{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', bytes(8))
    safetensors_raw("unknown-dtype", '{"w":{"dtype":"F31","shape":[2],"data_offsets":[0,8]}}', bytes(8))
    (ROOT / "safetensors" / "empty-file.safetensors").write_bytes(b"")
    p = ROOT / "safetensors" / "no-tensors.safetensors"
    p.write_bytes(st_save({}))
    p = ROOT / "safetensors" / "misshaped.safetensors"
    p.write_bytes(st_save({"model.hidden0.weight": np.zeros((3, 3), dtype=np.float32)}))

    # Pipeline files (plan check).
    ok_fetch = '[p.fetch-data.toy]\nsource = "toy2d"\nn = 100\nn_test = 20\n'
    pipeline("syntax-error", "[p\nabout = 1\n")
    pipeline("unknown-stage", ok_fetch + '[p.train-gan.x]\ndata = "fetch-data.toy"\n')
    pipeline("wrong-type", ok_fetch + '[p.train-ct.x]\ndata = "fetch-data.toy"\nsteps = "many"\n')
    pipeline("nan-value", ok_fetch + '[p.train-ct.x]\ndata = "fetch-data.toy"\nlr = nan\n')
    pipeline("out-of-range", ok_fetch + '[p.train-ct.x]\ndata = "fetch-data.toy"\nbatch = 2000000000\n')
    pipeline("unknown-input", ok_fetch + '[p.train-ct.x]\ndata = "fetch-data.nope"\n')
    pipeline("unknown-field", ok_fetch + '[p.train-ct.x]\ndata = "fetch-data.toy"\nlearning_rate = 0.1\n')
    pipeline("cycle", ok_fetch + '[p.train-ct.a]\ndata = "fetch-data.toy"\ninit = "train-ct.b"\n[p.train-ct.b]\ndata = "fetch-data.toy"\ninit = "train-ct.a"\n')
    pipeline("no-such-profile", '[q.fetch-data.toy]\nsource = "toy2d"\n')
    print(f"corpus written to {ROOT}")


if __name__ == "__main__":
    main()
