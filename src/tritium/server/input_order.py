"""The order in which Triton walks a request's inputs, for its error messages.

Triton keeps a request's inputs in a `std::unordered_map<std::string, Input>`; messages
such as "Got input(s) ['BAD','INPUT1','INPUT0']" or the first input found with a wrong
data type follow that map's iteration order. This emulates libstdc++'s map exactly (its
std::hash of strings, prime bucket counts, node placement on insert and rehash), so that
Tritium names the same input Triton names. Checked against Triton 2.51 on random name
sets of 3 to 30 inputs (tests/conformance records one).
"""

from __future__ import annotations

import functools

_MUL = 0xC6A4A7935BD1E995
_MASK = (1 << 64) - 1
_SEED = 0xC70F6907
# _Prime_rehash_policy::_M_next_bkt's table for small sizes
_FAST_BKT = (2, 2, 2, 3, 5, 5, 7, 7, 11, 11, 11, 11, 13, 13)


def _shift_mix(v: int) -> int:
    return v ^ (v >> 47)


def std_hash(key: str) -> int:
    """libstdc++'s std::hash<std::string> on 64-bit (_Hash_bytes, MurmurHash64A-like)."""
    data = key.encode()
    n = len(data)
    h = (_SEED ^ (n * _MUL)) & _MASK
    aligned = n & ~7
    for i in range(0, aligned, 8):
        d = int.from_bytes(data[i : i + 8], "little")
        h ^= (_shift_mix((d * _MUL) & _MASK) * _MUL) & _MASK
        h = (h * _MUL) & _MASK
    if n & 7:
        h ^= int.from_bytes(data[aligned:], "little")
        h = (h * _MUL) & _MASK
    return _shift_mix((_shift_mix(h) * _MUL) & _MASK)


def _next_bucket_count(n: int) -> int:
    if n < len(_FAST_BKT):
        return _FAST_BKT[n]
    while any(n % d == 0 for d in range(2, int(n**0.5) + 1)):
        n += 1  # libstdc++'s prime list holds every prime at these sizes
    return n


def triton_input_order(names: list[str]) -> list[str]:
    """`names` (insertion order, duplicates ignored) in Triton's iteration order."""
    return list(_order(tuple(names)))


@functools.lru_cache(maxsize=4096)  # the same few name lists come with every request
def _order(names: tuple[str, ...]) -> tuple[str, ...]:
    nodes: list[tuple[str, int]] = []  # (name, hash) in iteration order
    buckets, next_resize = 1, 0

    def place(name: str, h: int) -> None:
        # A node goes first in its bucket's run of nodes, or first in the list.
        b = h % buckets
        at = next((i for i, (_, oh) in enumerate(nodes) if oh % buckets == b), 0)
        nodes.insert(at, (name, h))

    seen: set[str] = set()
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        count = len(nodes)
        if count + 1 > next_resize:
            wanted = max(count + 1, 0 if next_resize else 11)
            if wanted >= buckets:
                buckets = next_resize = _next_bucket_count(max(wanted + 1, buckets * 2))
                old, nodes[:] = list(nodes), []
                for node in old:  # a rehash re-places nodes in iteration order
                    place(*node)
            else:
                next_resize = buckets
        place(name, std_hash(name))
    return tuple(n for n, _ in nodes)
