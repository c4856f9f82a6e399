"""Shared by the dedup steps: candidate pairs from equal keys, connected components, one survivor per cluster."""

from __future__ import annotations

import numpy as np


def equal_key_pairs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (first, other) of row indexes sharing a key: every row is paired with the earliest row of its key
    (a star per bucket, linear in the bucket size, never quadratic)."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts_run = np.ones(len(ordered), dtype=bool)
    starts_run[1:] = ordered[1:] != ordered[:-1]
    run_head = np.maximum.accumulate(np.where(starts_run, np.arange(len(ordered)), 0))
    members = ~starts_run
    return order[run_head[members]], order[members]


def unique_pairs(left: np.ndarray, right: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct unordered pairs, as (smaller, larger) index arrays in sorted order."""
    codes = np.minimum(left, right).astype(np.int64) * count + np.maximum(left, right)
    codes.sort()
    codes = codes[np.r_[True, codes[1:] != codes[:-1]]] if len(codes) else codes
    return codes // count, codes % count


def components(count: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Connected components of the graph on `count` nodes with edges (left[i], right[i]): each node's label is the
    smallest node index of its component. Min-label propagation with pointer jumping, all in numpy."""
    label = np.arange(count)
    if len(left) == 0:
        return label
    while True:
        lowest = np.minimum(label[left], label[right])
        updated = label.copy()
        np.minimum.at(updated, label[left], lowest)
        np.minimum.at(updated, label[right], lowest)
        np.minimum.at(updated, left, lowest)
        np.minimum.at(updated, right, lowest)
        while True:
            jumped = updated[updated]
            if np.array_equal(jumped, updated):
                break
            updated = jumped
        if np.array_equal(updated, label):
            return label
        label = updated


def survivors(label: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """For each node, the node that survives its component: the one with the lowest `rank` (ties: lowest index)."""
    order = np.lexsort((np.arange(len(label)), rank, label))
    first_of_label = np.ones(len(order), dtype=bool)
    first_of_label[1:] = label[order][1:] != label[order][:-1]
    heads = order[first_of_label]
    survivor_of_label = np.empty(len(label), dtype=np.int64)
    survivor_of_label[label[heads]] = heads
    return survivor_of_label[label]
