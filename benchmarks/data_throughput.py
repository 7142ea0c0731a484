"""Cityscapes loading throughput: raw PNG decoding versus the preparation cache.

Writes full-size (2048x1024 by default) synthetic frames in the raw Cityscapes layout to a
temporary folder, then reads every frame at the training resolution through the dataset's
__getitem__ (what each DataLoader worker runs), first decoding the PNGs, then from the cache.

    python benchmarks/data_throughput.py --frames 16 --height 128 --width 256
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from xtask_mt.data.cityscapes import Cityscapes

LABEL_IDS = np.array([1, 7, 8, 11, 17, 20, 21, 23, 24, 26], dtype=np.uint8)


def write_frame(root: Path, index: int, height: int, width: int,
                rng: np.random.Generator) -> None:
    """One photo-like frame: smooth regions with sensor noise, labels and disparity."""
    city = "benchcity"
    stem = f"{city}_{index:06d}_000019"
    small_ids = rng.choice(LABEL_IDS, size=(height // 64, width // 64))
    ids = cv2.resize(small_ids, (width, height), interpolation=cv2.INTER_NEAREST)
    palette = rng.integers(0, 256, size=(256, 3)).astype(np.float32)
    shade = np.linspace(0.6, 1.2, height, dtype=np.float32)[:, None, None]
    image = palette[ids] * shade + rng.normal(0, 3, size=(height, width, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    rows = np.arange(height, dtype=np.float32)[:, None]
    disparity = (1 + 256 * np.broadcast_to(rows / height * 60, (height, width))).astype(np.uint16)
    disparity[rng.random((height, width)) < 0.1] = 0
    for sub, name, array in (("leftImg8bit", f"{stem}_leftImg8bit.png", image[..., ::-1]),
                             ("gtFine", f"{stem}_gtFine_labelIds.png", ids),
                             ("disparity", f"{stem}_disparity.png", disparity)):
        folder = root / sub / "train" / city
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / name), np.ascontiguousarray(array))


def samples_per_second(dataset: Cityscapes, min_seconds: float) -> float:
    """Read every sample, repeating passes until `min_seconds` have passed."""
    count, start = 0, time.perf_counter()
    while True:
        for i in range(len(dataset)):
            dataset[i]
        count += len(dataset)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--source-height", type=int, default=1024)
    parser.add_argument("--source-width", type=int, default=2048)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=2.0, help="minimum time per reading")
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one DataLoader worker's view

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cityscapes"
        rng = np.random.default_rng(0)
        for i in range(args.frames):
            write_frame(root, i, args.source_height, args.source_width, rng)
        size_mb = sum(p.stat().st_size for p in root.rglob("*.png")) / args.frames / 1e6
        print(f"{args.frames} frames of {args.source_width}x{args.source_height} "
              f"({size_mb:.1f} MB of PNG per frame) read at {args.width}x{args.height}")

        raw = Cityscapes(root, "train", height=args.height, width=args.width)
        raw_rate = samples_per_second(raw, args.seconds)
        print(f"raw decoding:  {raw_rate:10.1f} samples/s  ({1000 / raw_rate:.1f} ms/sample)")

        start = time.perf_counter()
        cached = Cityscapes(root, "train", height=args.height, width=args.width,
                            cache_dir=Path(tmp) / "prepared", progress=False)
        prep = time.perf_counter() - start
        print(f"preparation:   {prep:10.2f} s for {args.frames} frames (one time, threaded)")
        cache_rate = samples_per_second(cached, args.seconds)
        print(f"cache reading: {cache_rate:10.1f} samples/s  ({1000 / cache_rate:.3f} "
              "ms/sample)")
        print(f"speed-up:      {cache_rate / raw_rate:10.1f}x")


if __name__ == "__main__":
    main()
