"""Random streams per episode, so an episode's numbers never depend on its neighbours.

Every episode ``(policy, j)`` of an evaluation owns its seeds, derived with NumPy's
``SeedSequence`` from the evaluation seed and stable keys, never from a position in a batch:

* the start state of episode ``j`` comes from ``SeedSequence(seed, spawn_key=(START, j))``: shared
  by all policies (common random numbers: policies are compared from the same starts);
* the world model's randomness of policy ``p``'s episode ``j`` (member draws for ``ts1`` and
  ``ts_inf``, Gaussian samples for ``sample=True``) comes from
  ``SeedSequence(seed, spawn_key=(MODEL, policy_key(p), j))``, where :func:`policy_key` hashes the
  policy's *name*, so reordering the policy list, adding policies or changing a policy's file (the
  CI gate's candidate) keeps every stream.

:class:`RowStreams` turns one such seed per row into the draws a batched world model needs,
row by row, drawn in blocks of steps to keep per-step cost low.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["START", "MODEL", "BOOTSTRAP", "BEST_POLICY", "policy_key", "start_seed", "episode_seed", "RowStreams"]

START = 0
"""Spawn-key tag of start-state streams."""
MODEL = 1
"""Spawn-key tag of world-model streams."""
BOOTSTRAP = 2
"""Spawn-key tag of a policy's bootstrap resamples (its intervals do not depend on its place in the list)."""
BEST_POLICY = 3
"""Spawn-key tag of the joint draws behind ``best_policy``'s probability."""


def policy_key(name: str) -> int:
    """A stable 32-bit key of a policy's name (the first 4 bytes of its SHA-256)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:4], "little")


def start_seed(seed: int, episode: int) -> int:
    """The Gymnasium reset seed of episode ``episode``'s start state (in ``[0, 2**31 - 1)``)."""
    word = np.random.SeedSequence(int(seed), spawn_key=(START, int(episode))).generate_state(1, np.uint64)[0]
    return int(word % np.uint64(2**31 - 1))


def episode_seed(seed: int, key: int, episode: int) -> int:
    """The 63-bit seed of the model stream of episode ``episode`` of the policy with ``key``."""
    word = np.random.SeedSequence(int(seed), spawn_key=(MODEL, int(key), int(episode))).generate_state(1, np.uint64)[0]
    return int(word >> np.uint64(1))


class RowStreams:
    """One independent random stream per row of a batch.

    Each row's generator is ``np.random.default_rng(seed)``; a row draws, in this fixed order, one
    member index at its reset (``ts_inf``), then per step one member index (``ts1``) and
    ``noise_dim`` standard normals (``sample=True``), whatever the other rows do. Draws are taken
    from per-row blocks of ``block`` steps.

    Args:
        num_rows: ``N``.
        num_members: ensemble size (member indices lie in ``[0, num_members)``).
        noise_dim: normals per step (0: none are drawn).
        step_members: draw a member per step (``ts1``).
        block: steps per refill.
    """

    def __init__(self, num_rows: int, *, num_members: int, noise_dim: int = 0, step_members: bool = False,
                 block: int = 64) -> None:
        self.num_members, self.noise_dim, self.step_members, self.block = num_members, noise_dim, step_members, block
        self.generators: list[np.random.Generator | None] = [None] * num_rows
        self.initial = np.zeros(num_rows, dtype=np.int64)
        self.position = np.full(num_rows, block, dtype=np.int64)
        self._members = np.zeros((num_rows, block if step_members else 0), dtype=np.int64)
        self._noise = np.zeros((num_rows, block if noise_dim else 0, noise_dim), dtype=np.float32)

    def reset(self, rows: np.ndarray, seeds: np.ndarray) -> None:
        """Start the streams of ``rows`` (indices ``[K]``) from ``seeds`` ``[K]``."""
        for row, seed in zip(np.asarray(rows).tolist(), np.asarray(seeds).tolist()):
            gen = np.random.default_rng(int(seed))
            self.generators[row] = gen
            self.initial[row] = gen.integers(self.num_members)
            self.position[row] = self.block

    def _refill(self, rows: np.ndarray) -> None:
        for row in rows.tolist():
            gen = self.generators[row]
            if gen is None:
                raise RuntimeError(f"row {row} was stepped before its stream was reset")
            if self.step_members:
                self._members[row] = gen.integers(self.num_members, size=self.block)
            if self.noise_dim:
                self._noise[row] = gen.standard_normal((self.block, self.noise_dim), dtype=np.float32)
            self.position[row] = 0

    def draw(self, rows: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """This step's draws of ``rows`` (indices ``[K]``): members ``[K]`` (``ts1``, else ``None``)
        and normals ``[K, noise_dim]`` (else ``None``); advances those rows' streams by one step."""
        rows = np.asarray(rows, dtype=np.int64)
        if not (self.step_members or self.noise_dim):
            return None, None
        empty = rows[self.position[rows] >= self.block]
        if len(empty):
            self._refill(empty)
        pos = self.position[rows]
        members = self._members[rows, pos] if self.step_members else None
        noise = self._noise[rows, pos] if self.noise_dim else None
        self.position[rows] += 1
        return members, noise
