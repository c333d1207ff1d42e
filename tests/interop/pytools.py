"""The Python ecosystem's side of ctpipe's interop tests: files written by the tools users have
(pyarrow with its defaults, Pillow, Hugging Face's cache layout) and ctpipe's files read by them
(pandas, pyarrow, safetensors). Run by tests/interop.rs and tests/rehearsal.rs in the virtual
environment of tests/interop/requirements.txt; every command prints one JSON document.

    pytools.py write-hub HF_HOME SPEC_JSON
        Write a dataset repo into a Hugging Face cache laid out as huggingface_hub lays it out
        (refs/main, blobs/<sha256>, snapshots/<commit>/<path> symlinks). SPEC: {"repo":
        "owner/name", "files": [{"path", "split", "rows", "height", "width", "channels",
        "format": png|jpeg, "image": struct|bytes, "image_column", "labels":
        int|string|category, "codec", "seed", "class_names"}]}; codec is a pyarrow compression
        name or "default" (pyarrow's own default); split is what the file's name means, stated
        rather than derived, so that a naming bug on ctpipe's side cannot hide here. Prints, per
        split, what a reader must find: rows,
        labels as class indices, class names, and the sum and shape of the pixels as PIL decodes
        them (HWC uint8; files in sorted path order, rows in file order). Saves those pixels as
        <HF_HOME>/truth/<owner>--<name>.npz for read-dataset.
    pytools.py read-dataset ARTIFACT_DIR [TRUTH_NPZ [TEST_TRUTH]]
        Read a fetch-data artifact's train.parquet and test.parquet with pandas, decoding the
        image cells (PNG bytes) with PIL into the shape of the files' `ctpipe.dataset` schema
        metadata, and again with Hugging Face datasets (as read-hf, under "hf"). Prints dtypes,
        rows, labels, class names, pixel sums and, against TRUTH, the largest and mean absolute
        pixel difference per split and reader (the test split against TRUTH's TEST_TRUTH split,
        default test).
    pytools.py read-hf FILE
        datasets.Dataset.from_parquet(FILE), offline: the feature types it finds (Image,
        ClassLabel, List), rows, labels, ClassLabel names, PIL modes of the images, and the
        feature and first value of a points column.
    pytools.py read-parquet FILE
        pandas.read_parquet: columns, dtypes, rows, and for numeric columns whether all values
        are finite.
    pytools.py read-safetensors FILE
        safetensors.numpy.load_file: names with dtype and shape, metadata, whether all values
        are finite, and the values of EDM's resample_filter buffers.
    pytools.py pil-resize OUT_DIR CASES_JSON
        For each case [height, width, out_height, out_width, seed]: a seeded uint8 channel and
        its resize by PIL's bicubic in float mode, as clean-fid's "clean" resizer does it
        (Image.fromarray(x.astype(float32), mode='F').resize((w, h), BICUBIC)); saves them as
        OUT_DIR/in-<i>.npy and OUT_DIR/out-<i>.npy (float32) and prints the paths.
"""
import hashlib
import io
import json
import os
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def encode(pixels, fmt):
    mode = "L" if pixels.shape[2] == 1 else "RGB"
    img = Image.fromarray(pixels[:, :, 0] if mode == "L" else pixels, mode)
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG")
    else:
        img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def decode(data, channels):
    img = Image.open(io.BytesIO(data))
    img = img.convert("L" if channels == 1 else "RGB")
    a = np.asarray(img, dtype=np.uint8)
    return a.reshape(a.shape[0], a.shape[1], channels)


def write_file(f):
    rng = np.random.default_rng(f["seed"])
    n, h, w, c = f["rows"], f["height"], f["width"], f["channels"]
    # Smooth images (a gradient plus noise) so that JPEG keeps them close to what was written.
    yy, xx = np.mgrid[0:h, 0:w]
    names = f["class_names"]
    label_idx = rng.integers(0, len(names), size=n)
    encoded, decoded = [], []
    for i in range(n):
        base = (yy * 255 // max(h - 1, 1) + xx * 3 + 17 * int(label_idx[i])) % 256
        px = np.clip(base[:, :, None] + rng.integers(-8, 9, size=(h, w, c)), 0, 255).astype(np.uint8)
        data = encode(px, f["format"])
        encoded.append(data)
        decoded.append(decode(data, c))
    if f["image"] == "struct":
        images = pa.array(
            [{"bytes": b, "path": f"{i}.{f['format']}"} for i, b in enumerate(encoded)],
            type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
        )
    else:
        images = pa.array(encoded, type=pa.binary())
    kind = f["labels"]
    if kind == "int":
        labels = pa.array(label_idx.astype(np.int64))
    elif kind == "string":
        labels = pa.array([names[i] for i in label_idx], type=pa.string())
    else:
        labels = pa.array(pd.Categorical([names[i] for i in label_idx], categories=sorted(names)))
    table = pa.table({f["image_column"]: images, "label": labels})
    if kind == "int":
        # What the datasets library writes for an Image column and a ClassLabel.
        features = {f["image_column"]: {"_type": "Image"}, "label": {"names": names, "_type": "ClassLabel"}}
        table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    return table, decoded, label_idx


def write_hub(hf_home, spec):
    owner, name = spec["repo"].split("/")
    repo_dir = os.path.join(hf_home, "hub", f"datasets--{owner}--{name}")
    commit = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    written = []
    for f in spec["files"]:
        table, decoded, label_idx = write_file(f)
        buf = io.BytesIO()
        if f["codec"] == "default":
            pq.write_table(table, buf)
        else:
            pq.write_table(table, buf, compression=f["codec"])
        data = buf.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        os.makedirs(os.path.join(repo_dir, "blobs"), exist_ok=True)
        with open(os.path.join(repo_dir, "blobs", sha), "wb") as out:
            out.write(data)
        link = os.path.join(repo_dir, "snapshots", commit, f["path"])
        os.makedirs(os.path.dirname(link), exist_ok=True)
        target = os.path.relpath(os.path.join(repo_dir, "blobs", sha), os.path.dirname(link))
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(target, link)
        written.append((f, decoded, label_idx))
    os.makedirs(os.path.join(repo_dir, "refs"), exist_ok=True)
    with open(os.path.join(repo_dir, "refs", "main"), "w") as out:
        out.write(commit)
    summary, arrays = {}, {}
    for split in sorted({f["split"] for f, _, _ in written}):
        # A split's files are read in sorted path order, each in row order.
        files = sorted((w for w in written if w[0]["split"] == split), key=lambda w: w[0]["path"])
        pixels = [p for _, decoded, _ in files for p in decoded]
        names = files[0][0]["class_names"]
        labels = [int(i) for _, _, idx in files for i in idx]
        if files[0][0]["labels"] != "int":
            # String labels number by sorted name.
            rank = {n: r for r, n in enumerate(sorted(names))}
            labels = [rank[names[i]] for i in labels]
            names = sorted(names)
        stacked = np.stack(pixels)
        arrays[split] = stacked
        summary[split] = {
            "rows": len(labels),
            "labels": labels,
            "class_names": names,
            "pixel_sum": int(stacked.astype(np.int64).sum()),
            "shape": list(stacked.shape[1:]),
        }
    truth_dir = os.path.join(hf_home, "truth")
    os.makedirs(truth_dir, exist_ok=True)
    np.savez(os.path.join(truth_dir, f"{owner}--{name}.npz"), **arrays)
    summary["commit"] = commit
    return summary


def cell_pixels(cell, h, w, c):
    """One image cell of a ctpipe split (Hugging Face's Image struct of PNG bytes) as HWC uint8."""
    return np.asarray(Image.open(io.BytesIO(cell["bytes"]))).reshape(h, w, c)


def compare(truth, truth_split, px, r):
    if truth is not None and truth_split in truth:
        want = truth[truth_split]
        if want.shape != px.shape:
            r["truth_shape_mismatch"] = [list(want.shape), list(px.shape)]
        else:
            d = np.abs(want.astype(np.int64) - px.astype(np.int64))
            r["max_abs_diff"] = int(d.max())
            r["mean_abs_diff"] = float(d.mean())


def read_dataset(art_dir, truth_path=None, test_truth="test"):
    truth = np.load(truth_path) if truth_path else None
    out = {}
    for split in ("train", "test"):
        path = os.path.join(art_dir, f"{split}.parquet")
        df = pd.read_parquet(path)
        meta = json.loads(pq.read_schema(path).metadata[b"ctpipe.dataset"])
        r = {"rows": len(df), "dtypes": {c: str(t) for c, t in df.dtypes.items()}, "labels": [int(v) for v in df["label"]], "class_names": meta.get("class_names")}
        truth_split = test_truth if split == "test" else split
        if "image" in df.columns:
            h, w, c = meta["height"], meta["width"], meta["channels"]
            px = np.stack([cell_pixels(b, h, w, c) for b in df["image"]])
            r["pixel_sum"] = int(px.astype(np.int64).sum())
            r["shape"] = [h, w, c]
            compare(truth, truth_split, px, r)
        # The same file through Hugging Face datasets, whose types the file declares.
        r["hf"] = read_hf(path)
        if "image" in df.columns:
            hf_px = np.stack([np.asarray(im).reshape(h, w, c) for im in r["hf"].pop("images")])
            compare(truth, truth_split, hf_px, r["hf"])
        out[split] = r
    return out


def read_hf(path):
    """datasets.Dataset.from_parquet, offline, cached in a temporary folder: the features it
    finds, rows, labels, class names, the first point, and the images decoded (PIL)."""
    import tempfile

    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    import datasets

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as cache:
        ds = datasets.Dataset.from_parquet(path, cache_dir=cache, keep_in_memory=True)
        r = {
            "features": {k: type(v).__name__ for k, v in ds.features.items()},
            "rows": len(ds),
            "labels": [int(v) for v in ds["label"]],
            "class_names": list(ds.features["label"].names) if isinstance(ds.features["label"], datasets.ClassLabel) else None,
        }
        if "image" in ds.column_names:
            images = [row["image"] for row in ds]
            r["pil_modes"] = sorted({im.mode for im in images})
            r["images"] = images
        if "x" in ds.column_names:
            f = ds.features["x"]
            r["x_feature"] = {"dtype": f.feature.dtype, "length": f.length}
            r["x_first"] = [float(v) for v in ds[0]["x"]]
    return r


def read_parquet(path):
    df = pd.read_parquet(path)
    finite = {}
    for c in df.columns:
        if pd.api.types.is_numeric_dtype(df[c]):
            finite[c] = bool(np.isfinite(df[c].to_numpy(dtype=np.float64)).all())
    return {"rows": len(df), "dtypes": {c: str(t) for c, t in df.dtypes.items()}, "finite": finite}


def read_safetensors(path):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    tensors = load_file(path)
    with safe_open(path, framework="numpy") as f:
        meta = f.metadata() or {}
    return {
        "tensors": {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in sorted(tensors.items())},
        "metadata_keys": sorted(meta.keys()),
        "all_finite": bool(all(np.isfinite(v).all() for v in tensors.values() if v.dtype.kind == "f")),
        # EDM's constant resampling filters, by value.
        "resample_filters": {k: v.flatten().tolist() for k, v in sorted(tensors.items()) if k.endswith(".resample_filter")},
    }


def pil_resize(out_dir, cases):
    written = []
    for i, (h, w, oh, ow, seed) in enumerate(cases):
        x = np.random.default_rng(seed).integers(0, 256, size=(h, w), dtype=np.uint8).astype(np.float32)
        y = np.asarray(Image.fromarray(x, mode="F").resize((ow, oh), resample=Image.BICUBIC), dtype=np.float32)
        paths = [os.path.join(out_dir, f"in-{i}.npy"), os.path.join(out_dir, f"out-{i}.npy")]
        np.save(paths[0], x)
        np.save(paths[1], y)
        written.append(paths)
    return written


def main():
    cmd = sys.argv[1]
    if cmd == "write-hub":
        result = write_hub(sys.argv[2], json.loads(sys.argv[3]))
    elif cmd == "read-dataset":
        result = read_dataset(*sys.argv[2:5])
    elif cmd == "read-hf":
        result = read_hf(sys.argv[2])
        result.pop("images", None)
    elif cmd == "read-parquet":
        result = read_parquet(sys.argv[2])
    elif cmd == "read-safetensors":
        result = read_safetensors(sys.argv[2])
    elif cmd == "pil-resize":
        result = pil_resize(sys.argv[2], json.loads(sys.argv[3]))
    else:
        raise SystemExit(f"unknown command {cmd}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
