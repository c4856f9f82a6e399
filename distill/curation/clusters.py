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


def with_pairs(codes: np.ndarray, left: np.ndarray, right: np.ndarray, count: int) -> np.ndarray:
    """`codes` (the sorted distinct codes of unordered pairs, smaller * count + larger) with the pairs
    (left[i], right[i]) added. A step adds each LSH band's pairs as it finds them, so it never holds every band's
    pairs at once: with many duplicates those are bands x pairs x 16 bytes (~2 GB for 3e6 records of which two
    thirds are copies, 32 bands)."""
    added = np.minimum(left, right).astype(np.int64) * count + np.maximum(left, right)
    added.sort()
    merged = np.concatenate([codes, added]) if len(codes) else added
    if len(codes):
        merged.sort(kind="stable")  # two sorted runs: timsort merges them in one pass
    return merged[np.r_[True, merged[1:] != merged[:-1]]] if len(merged) else merged


def pairs_of(codes: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(smaller, larger) index arrays of pair codes."""
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
