"""How the skill library scales: adds, top-5 retrieval and HNSW recall at 1e4..1e6 skills.

For each size N the library is filled in bulk (``load_state_dict``, which also builds the
index; for hnsw that time is the graph build) with d=64 random unit embeddings and one of
four precondition patterns per skill, then measured:

* ``adds/s``: single ``add`` calls with merge-on-add (half near-duplicates of stored skills);
* ``top5@1``, ``top5@256``: median latency of ``retrieve(k=5)`` for 1 and 256 queries, the
  library unchanged between calls (the exact index copies out each precondition pattern's
  embeddings on the first search after a change, here the warm-up call);
* ``vs raw``: that latency over a raw ``torch.topk(q @ emb.T)`` on the same matrix (the
  memory-bandwidth bound of scoring every skill); the exact index scores only the skills
  whose preconditions match, one matmul per distinct precondition pattern, so it can beat it;
* ``recall@5``: hnsw top-5 against exact top-5, queries = stored embeddings plus noise;
* ``sweep_s``: one exact near-duplicate sweep (``merge_duplicates``), sizes up to 1e5.

``python-loop`` is the original design, one cosine per skill in Python (sizes up to 1e5;
its 256-query latency is 256 x the 1-query latency, marked ``*``). Embeddings are random
projections of ``--latent-dim`` Gaussian latents, like the agent's state embeddings (a
fixed projection of a dozen state features); ``--latent-dim 0`` draws them uniformly on the
64-d sphere, the hardest case for HNSW.

    python benchmarks/library_scale.py [--sizes 10000,100000,1000000] [--device cpu] [--quick]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from procmem.skills.library import SkillLibrary

DIM = 64
K = 5
PATTERNS = 4  # two precondition flags
LOOP_MAX_SIZE = 100_000
SWEEP_MAX_SIZE = 100_000
NOISE = 0.1


@dataclass
class Row:
    size: int
    backend: str
    build_s: float = math.nan
    adds_per_s: float = math.nan
    top1_ms: float = math.nan
    top256_ms: float = math.nan
    recall: float = math.nan
    sweep_s: float = math.nan
    extrapolated: bool = False


def unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=1)


def make_embeddings(n: int, latent_dim: int, generator: torch.Generator) -> torch.Tensor:
    if latent_dim <= 0:
        return unit(torch.randn(n, DIM, generator=generator))
    projection = torch.randn(latent_dim, DIM, generator=torch.Generator().manual_seed(12345))
    return unit(torch.randn(n, latent_dim, generator=generator) @ projection)


def flags_of(patterns: torch.Tensor) -> torch.Tensor:
    """Pattern numbers ``[n]`` -> precondition flags ``[n, 2]``."""
    return torch.stack([patterns % 2 == 1, patterns // 2 == 1], dim=1)


def noisy(vectors: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(vectors.shape, generator=generator)
    return unit(vectors + NOISE * unit(noise))


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall time of ``fn`` in seconds over at least ``repeats`` calls and 0.2 s (at
    most 200 calls), after one warm-up call."""
    fn()
    times: list[float] = []
    while len(times) < repeats or (sum(times) < 0.2 and len(times) < 200):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def filled_library(backend: str, embeddings: torch.Tensor, patterns: torch.Tensor,
                   device: torch.device) -> tuple[SkillLibrary, float]:
    """A library holding one skill per embedding, and the seconds the bulk load took."""
    library = SkillLibrary(embedding_dim=DIM, top_k=K, index=backend, device=device)
    n = len(embeddings)
    state = {
        **library.state_dict(),
        "names": [f"skill_{i}" for i in range(n)],
        "actions": [[0, 1, 2]] * n,
        "indices": torch.arange(n),
        "embeddings": embeddings,
        "preconditions": flags_of(patterns),
        "successes": torch.zeros(n, dtype=torch.long),
        "uses": torch.zeros(n, dtype=torch.long),
        "support": torch.ones(n, dtype=torch.long),
        "last_active": torch.zeros(n, dtype=torch.long),
        "next_index": n,
    }
    start = time.perf_counter()
    library.load_state_dict(state)
    return library, time.perf_counter() - start


class LoopLibrary:
    """The original design: a list of skills, one cosine per skill in Python."""

    def __init__(self, embeddings: torch.Tensor, patterns: torch.Tensor) -> None:
        self.skills = list(zip(embeddings.numpy(), patterns.tolist(), strict=True))

    def retrieve(self, pattern: int, query: np.ndarray, k: int) -> list[int]:
        scored = []
        for index, (embedding, skill_pattern) in enumerate(self.skills):
            if skill_pattern == pattern:
                cosine = np.dot(embedding, query) / (
                    np.linalg.norm(embedding) * np.linalg.norm(query))
                scored.append((float(cosine), index))
        return [index for _, index in sorted(scored, reverse=True)[:k]]

    def add(self, embedding: np.ndarray, pattern: int, threshold: float = 0.9) -> bool:
        best = max((np.dot(e, embedding) / (np.linalg.norm(e) * np.linalg.norm(embedding))
                    for e, _ in self.skills), default=-1.0)
        if best > threshold:
            return True
        self.skills.append((embedding, pattern))
        return False


def add_stream(embeddings: torch.Tensor, count: int, latent_dim: int,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` new embeddings (half near-duplicates of stored ones) and their patterns."""
    dupes = embeddings[torch.randint(len(embeddings), (count // 2,), generator=generator)]
    fresh = make_embeddings(count - count // 2, latent_dim, generator)
    vectors = torch.cat([noisy(dupes, generator), fresh])
    return vectors, torch.randint(PATTERNS, (count,), generator=generator)


def measure_adds(library: SkillLibrary, vectors: torch.Tensor, patterns: torch.Tensor) -> float:
    flags = flags_of(patterns).tolist()
    start = time.perf_counter()
    for i, (vector, (has_key, door_open)) in enumerate(zip(vectors, flags, strict=True)):
        library.add(f"new_{i}", [0, 1], {"has_key": has_key, "door_open": door_open}, vector)
    return len(vectors) / (time.perf_counter() - start)


def recall_at_k(exact: torch.Tensor, approx: torch.Tensor) -> float:
    hits = [len(set(a) & set(b) - {-1}) / max(len(set(a) - {-1}), 1)
            for a, b in zip(exact.tolist(), approx.tolist(), strict=True)]
    return float(np.mean(hits))


def measure_retrieval(retrieve: Callable[[torch.Tensor, torch.Tensor], object],
                      states: torch.Tensor, queries: torch.Tensor, repeats: int,
                      device: torch.device) -> tuple[float, float]:
    """Median latency in ms of top-5 retrieval for 1 and for 256 queries."""
    one = timed(lambda: retrieve(states[:1], queries[:1]), repeats, device)
    many = timed(lambda: retrieve(states, queries), repeats, device)
    return 1e3 * one, 1e3 * many


def loop_row(n: int, embeddings: torch.Tensor, patterns: torch.Tensor, queries: torch.Tensor,
             query_patterns: torch.Tensor, add_vectors: torch.Tensor,
             add_patterns: torch.Tensor) -> Row:
    """The original design, timed on a few queries and adds (one query costs ~n cosines)."""
    loop = LoopLibrary(embeddings, patterns)
    samples = max(1, min(20, 200_000 // n))
    start = time.perf_counter()
    for i in range(samples):
        loop.retrieve(int(query_patterns[i]), queries[i].numpy(), K)
    per_query = (time.perf_counter() - start) / samples
    start = time.perf_counter()
    for i in range(samples):
        loop.add(add_vectors[i].numpy(), int(add_patterns[i]))
    return Row(n, "python-loop", adds_per_s=samples / (time.perf_counter() - start),
               top1_ms=1e3 * per_query, top256_ms=256e3 * per_query, extrapolated=True)


def bench_size(n: int, args: argparse.Namespace, device: torch.device) -> list[Row]:
    generator = torch.Generator().manual_seed(args.seed)
    embeddings = make_embeddings(n, args.latent_dim, generator)
    patterns = torch.randint(PATTERNS, (n,), generator=generator)
    picks = torch.randint(n, (256,), generator=generator)
    queries, states = noisy(embeddings[picks], generator), flags_of(patterns[picks])
    recall_picks = torch.randint(n, (args.recall_queries,), generator=generator)
    recall_queries = noisy(embeddings[recall_picks], generator)
    recall_states = flags_of(patterns[recall_picks])
    add_vectors, add_patterns = add_stream(embeddings, args.adds, args.latent_dim, generator)
    rows = []
    if n <= LOOP_MAX_SIZE:
        rows.append(loop_row(n, embeddings, patterns, queries, patterns[picks], add_vectors,
                             add_patterns))

    found = {}
    for backend in ("exact", "hnsw"):
        library, build_s = filled_library(backend, embeddings, patterns, device)
        row = Row(n, backend, build_s=build_s)
        row.top1_ms, row.top256_ms = measure_retrieval(library.retrieve, states, queries,
                                                       args.repeats, device)
        found[backend] = library.retrieve(recall_states, recall_queries)[0].cpu()
        row.adds_per_s = measure_adds(library, add_vectors, add_patterns)
        if backend == "exact" and n <= SWEEP_MAX_SIZE:
            start = time.perf_counter()
            library.merge_duplicates()
            row.sweep_s = time.perf_counter() - start
        rows.append(row)
    rows[-1].recall = recall_at_k(found["exact"], found["hnsw"])

    matrix = embeddings.to(device)
    raw = Row(n, "raw-topk")
    raw.top1_ms, raw.top256_ms = measure_retrieval(
        lambda _, q: torch.topk(q.to(device) @ matrix.T, K, dim=1), states, queries,
        args.repeats, device)
    return [*rows, raw]


def fmt(value: float, width: int, digits: int, mark: str = "") -> str:
    text = "-" if math.isnan(value) else f"{value:.{digits}f}{mark}"
    return f"{text:>{width}}"


def print_table(rows: list[Row]) -> None:
    raw = {row.size: row for row in rows if row.backend == "raw-topk"}
    header = (f"{'skills':>8} {'backend':<12} {'build_s':>8} {'adds/s':>9} {'top5@1 ms':>10} "
              f"{'top5@256 ms':>12} {'vs raw @1':>10} {'vs raw @256':>12} {'recall@5':>9} "
              f"{'sweep_s':>8}")
    print(header)
    print("-" * len(header))
    for row in rows:
        star = "*" if row.extrapolated else ""
        base = raw[row.size]
        print(f"{row.size:>8} {row.backend:<12} {fmt(row.build_s, 8, 2)} "
              f"{fmt(row.adds_per_s, 9, 0)} {fmt(row.top1_ms, 10, 3)} "
              f"{fmt(row.top256_ms, 12, 2, star)} {fmt(row.top1_ms / base.top1_ms, 10, 2)} "
              f"{fmt(row.top256_ms / base.top256_ms, 12, 2, star)} {fmt(row.recall, 9, 3)} "
              f"{fmt(row.sweep_s, 8, 2)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000",
                        help="comma-separated library sizes (1e5 style allowed)")
    parser.add_argument("--device", default="cpu", help="device of the exact index (cpu, cuda)")
    parser.add_argument("--quick", action="store_true", help="small sizes and few samples")
    parser.add_argument("--latent-dim", type=int, default=12,
                        help="latent dimension of the embeddings; 0 = uniform on the sphere")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sizes = [1000, 3000] if args.quick else [int(float(s)) for s in args.sizes.split(",")]
    args.adds, args.repeats, args.recall_queries = (50, 3, 100) if args.quick else (200, 7, 1000)
    device = torch.device(args.device)

    print(f"skill library at scale: d={DIM}, top-{K}, {PATTERNS} precondition patterns, "
          f"latent dim {args.latent_dim or 'none (uniform)'}, device {device}, "
          f"{torch.get_num_threads()} torch threads")
    rows = []
    start = time.perf_counter()
    for n in sizes:
        rows += bench_size(n, args, device)
    print_table(rows)
    print("* 256 x the 1-query latency. build_s: bulk load_state_dict (hnsw: graph build). "
          "vs raw: latency / torch.topk(q @ emb.T) over all skills, no precondition filter.")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
