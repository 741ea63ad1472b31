"""Distances between sets of image features: Fréchet (FID's formula) and kernel (KID's), and the
standard Inception-v3 feature extractor for users who have its weights on disk.

Nothing here downloads weights. In the toolkit's own proxies the features come from the
real-frame classifier trained on the build's frames (a domain-specific FID/KID, as Sound2Scene
does with an Inception tuned on its data set); `--fid-weights PATH` adds the standard one.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import linalg


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """‖μa − μb‖² + Tr(Σa + Σb − 2(Σa Σb)^½) between two [n, d] feature sets."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("a Fréchet distance needs at least two samples in each set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():  # near-singular products (few samples) are handled below
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(covmean).all():  # regularise as pytorch-fid does
            eps = np.eye(len(cov_a)) * 1e-6
            covmean = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    covmean = np.real(covmean)
    return float(max(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean), 0.0))


def kernel_distance(a: np.ndarray, b: np.ndarray, subsets: int = 10, subset_size: int = 1000,
                    seed: int = 0) -> float:
    """Unbiased MMD² with the cubic polynomial kernel (d⁻¹ x·y + 1)³, averaged over random subsets."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    m = min(len(a), len(b), subset_size)
    if m < 2:
        raise ValueError("a kernel distance needs at least two samples in each set")
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets if m < max(len(a), len(b)) else 1):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        values.append((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())
    return float(np.mean(values))


class InceptionFeatures(torch.nn.Module):
    """2048-d pool features of the standard FID Inception-v3, read from a TorchScript file on disk:
    the ``inception-2015-12-05.pt`` that StyleGAN2-ADA/3 and clean-fid use, a port of the
    TensorFlow graph behind published FIDs. It takes uint8 [N, 3, H, W] images and resizes them
    itself; ``return_features=True`` gives the pool3 features."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: no such weights file")
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated, but it is the file's format
                warnings.simplefilter("ignore", DeprecationWarning)
                self.net = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as e:  # noqa: BLE001 - any unreadable file is one user-facing line
            raise ValueError(f"{path}: not a TorchScript Inception ({type(e).__name__}); --fid-weights takes "
                             "the inception-2015-12-05.pt used by StyleGAN2-ADA and clean-fid") from None

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[n, 3, H, W] in [-1, 1] → [n, 2048]."""
        x = images.float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
        try:
            feats = self.net(x, return_features=True)
        except RuntimeError as e:
            raise ValueError(f"the --fid-weights model failed on a batch: {str(e).splitlines()[0]}") from None
        if feats.ndim != 2:
            raise ValueError(f"the --fid-weights model returned features of shape {tuple(feats.shape)}, not [n, d]")
        return feats.float()
