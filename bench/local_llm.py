"""Batched decoding of the bundled LLM: HyDE's eight samples one after another against all eight at once.

Usage: python bench/local_llm.py [--samples 8] [--max-tokens 128] [--rounds 2]

Both sides send the same seeded requests to the same loaded model (``zsr-local/smollm2``): one side a
request at a time, the other from as many threads as samples, which the model decodes as one batch. Rounds
alternate the sides; the minimum time of each counts, and throughput is compared in tokens per second.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

from tasks.llm.local import local_model
from tasks.methods.generative import HYDE_PROMPTS

QUERY = "what are the structural and aeroelastic problems associated with flight of high speed aircraft"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    model = local_model("smollm2")
    messages = [{"role": "user", "content": HYDE_PROMPTS["web"].format(QUERY)}]

    def sample(seed: int) -> int:
        # The same seeds on both sides write (nearly: bfloat16 batches round differently) the same samples.
        gen = model.generate(messages, max_tokens=args.max_tokens, temperature=0.7, seed=seed)
        return gen.completion_tokens

    sample(0)  # load the model outside the timings
    one, batch = [], []
    for _ in range(args.rounds):
        start = time.perf_counter()
        tokens_one = sum(sample(s) for s in range(args.samples))
        one.append((time.perf_counter() - start, tokens_one))
        start = time.perf_counter()
        with ThreadPoolExecutor(args.samples) as pool:
            tokens_batch = sum(pool.map(sample, range(args.samples)))
        batch.append((time.perf_counter() - start, tokens_batch))
    (t1, n1), (tb, nb) = min(one), min(batch)
    print(f"{args.samples} samples of up to {args.max_tokens} tokens, {args.rounds} rounds, min of each")
    print(f"one at a time   {t1:7.2f} s  {n1:5d} tokens  {n1 / t1:6.1f} tokens/s")
    print(f"one batch       {tb:7.2f} s  {nb:5d} tokens  {nb / tb:6.1f} tokens/s")
    print(f"batched speed-up (tokens/s) {nb / tb / (n1 / t1):.2f}x")


if __name__ == "__main__":
    main()
