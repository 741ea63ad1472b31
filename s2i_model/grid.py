"""PNG grids: a row per sound, the real frame (when there is one) then k generated images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from s2i_data import storage

from s2i_model.data import tensor_to_image

PAD = 4
LABEL_W = 110


def save_grid(rows: list[tuple[str, np.ndarray | None, list]], path: Path, scale: int = 1) -> Path:
    """``rows``: (label, real uint8 [H,W,3] or None, generated [3,H,W] tensors or uint8 arrays)."""
    imgs = [[g if isinstance(g, np.ndarray) else tensor_to_image(g) for g in gen] for _, _, gen in rows]
    side = (imgs[0][0].shape[0] if imgs and imgs[0] else 96) * scale
    cols = 1 + max(len(g) for g in imgs)
    sheet = Image.new("RGB", (LABEL_W + cols * (side + PAD) + PAD, len(rows) * (side + PAD) + PAD), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, ((label, real, _), gen) in enumerate(zip(rows, imgs)):
        y = PAD + r * (side + PAD)
        draw.text((4, y + side // 2 - 6), label[:18], fill=(0, 0, 0))
        tiles = ([real] if real is not None else [None]) + gen
        for c, tile in enumerate(tiles):
            if tile is None:
                continue
            x = LABEL_W + PAD + c * (side + PAD)
            sheet.paste(Image.fromarray(tile).resize((side, side), Image.Resampling.NEAREST), (x, y))
        if real is not None:  # a thin line between the real frame and what was imagined
            x = LABEL_W + PAD + side + PAD // 2
            draw.line([(x, y), (x, y + side)], fill=(200, 0, 0), width=1)
    # replaced whole (a temporary renamed over it): never written through a link left at its name
    storage.atomic_write(path, lambda tmp: sheet.save(tmp, format="PNG"))
    return Path(path)


def grids_folder(run: Path) -> Path:
    """RUN/grids, made, and refused when it leads out of the run folder (a link left there)."""
    return Path(storage.folder_inside(run, "grids"))
