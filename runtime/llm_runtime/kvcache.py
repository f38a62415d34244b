"""Thin adapter between the engine's per-layer (keys, values) tensors and transformers' DynamicCache.

The engine owns the tensors (it pads, merges and drops batch rows); a DynamicCache is only a view built
around them for one forward pass, so no tensor is copied to build it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

KV = list[tuple[torch.Tensor, torch.Tensor]]


def new_cache() -> Any:
    from transformers import DynamicCache

    return DynamicCache()


def from_tensors(kv: KV) -> Any:
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache()
    layers: list[Any] = []
    for keys, values in kv:
        layer = DynamicLayer()
        layer.dtype, layer.device = keys.dtype, keys.device
        layer.keys, layer.values = keys, values
        layer.is_initialized = True
        layers.append(layer)
    cache.layers = layers
    return cache


def to_tensors(cache: Any) -> KV:
    return [(layer.keys, layer.values) for layer in cache.layers]


def left_pad(kv: KV, width: int) -> KV:
    """Pad the sequence axis (-2) on the left to ``width``; padded slots are masked out by the caller."""
    out: KV = []
    for keys, values in kv:
        extra = width - keys.shape[-2]
        if extra:
            keys = F.pad(keys, (0, 0, extra, 0))
            values = F.pad(values, (0, 0, extra, 0))
        out.append((keys, values))
    return out


def left_pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    extra = width - mask.shape[1]
    return F.pad(mask, (extra, 0)) if extra else mask
