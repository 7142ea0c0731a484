"""Writers of tiny dataset trees in the exact on-disk layouts the loaders read."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

# Official label ids that occur in real frames, incl. void ids and license plate (255 = -1).
CITYSCAPES_IDS = np.array([0, 1, 3, 4, 6, 7, 8, 9, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25,
                           26, 27, 28, 31, 32, 33, 255], dtype=np.uint8)


def blocky(rng: np.random.Generator, values: np.ndarray, height: int, width: int,
           block: int = 4) -> np.ndarray:
    """Random map of `values` in block x block tiles (so nearest-neighbour downscaling by
    the block size is exact)."""
    small = rng.choice(values, size=(height // block, width // block))
    return np.repeat(np.repeat(small, block, axis=0), block, axis=1)


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), array), path


def cityscapes_paths(root: Path, split: str, city: str, stem: str) -> dict[str, Path]:
    return {
        "image": root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
        "label": root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png",
        "disparity": root / "disparity" / split / city / f"{stem}_disparity.png",
    }


def write_cityscapes(root: Path, split: str = "train", frames: int = 3, height: int = 32,
                     width: int = 64, seed: int = 0, cities: tuple[str, ...] = ("aachen",
                                                                                "bochum"),
                     ) -> list[dict[str, Path]]:
    """`frames` frames spread over `cities`: RGB image, labelIds with void ids and license
    plates, and 16-bit disparity with invalid (0) and zero-disparity (1) pixels."""
    rng = np.random.default_rng(seed)
    written = []
    for i in range(frames):
        city = cities[i % len(cities)]
        paths = cityscapes_paths(root, split, city, f"{city}_{i:06d}_000019")
        image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        labels = blocky(rng, CITYSCAPES_IDS, height, width)
        disparity = blocky(rng, np.arange(2, 40000, 97, dtype=np.uint16), height, width)
        disparity[rng.random((height, width)) < 0.1] = 0
        disparity[rng.random((height, width)) < 0.02] = 1
        write_png(paths["image"], image)
        write_png(paths["label"], labels)
        write_png(paths["disparity"], disparity.astype(np.uint16))
        written.append(paths)
    # Sibling files of the real layout that the loader must ignore.
    for paths in written:
        write_png(paths["label"].with_name(paths["label"].name.replace("labelIds", "color")),
                  np.zeros((height, width, 3), np.uint8))
    return written


def write_nyuv2(root: Path, split: str = "train", frames: int = 3, height: int = 24,
                width: int = 32, seed: int = 0, depth_channel: bool = True,
                normals: bool = False) -> list[int]:
    """`frames` frames as <split>/{image,label,depth[,normal]}/<i>.npy: float image in
    [0, 1], labels 0..12 with -1 ignore (stored as float like the public files), depth in
    metres with 0 invalid, and with `normals` unit normals in [-1, 1] with 0 invalid."""
    rng = np.random.default_rng(seed)
    for sub in ("image", "label", "depth", *(("normal",) if normals else ())):
        (root / split / sub).mkdir(parents=True, exist_ok=True)
    for i in range(frames):
        image = rng.random((height, width, 3)).astype(np.float32)
        label = blocky(rng, np.arange(-1, 13), height, width).astype(np.float32)
        depth = blocky(rng, np.linspace(0.5, 9.5, 50), height, width).astype(np.float32)
        depth[rng.random((height, width)) < 0.1] = 0.0
        if depth_channel:
            depth = depth[..., None]
        np.save(root / split / "image" / f"{i}.npy", image)
        np.save(root / split / "label" / f"{i}.npy", label)
        np.save(root / split / "depth" / f"{i}.npy", depth)
        if normals:
            normal = rng.normal(size=(height, width, 3)).astype(np.float32)
            normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
            normal[rng.random((height, width)) < 0.1] = 0.0
            np.save(root / split / "normal" / f"{i}.npy", normal)
    return list(range(frames))
