#!/usr/bin/env python3
"""Writes tests/data/gemma3-270m.reference.txt: logits of Google's Gemma 3
270M (Q4_K_M, the file scripts/fetch_model.sh gemma3-270m fetches) computed
by llama.cpp through llama-cpp-python, for 5 prompts at every position, plus
each prompt's greedy 32-token continuation with llama.cpp's top-2 margin at
every step, in the format of make_reference_logits.py (model_e2e_test.cc
reads it). The last prompt is longer than the model's 512-position sliding
window, so its later positions check the window against llama.cpp's mask.

Usage: python3 make_gemma3_reference.py MODEL.gguf [OUT.txt]
(needs reference_requirements.txt.) The prompts start with <bos>, as
llama.cpp's tokenizer adds it for this vocab."""
import os
import sys

import numpy as np
from llama_cpp import Llama

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_reference_logits import N_SAMPLE, prompt_lines  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "data", "gemma3-270m.reference.txt")
WINDOW = 512


def long_text():
    """About 800 tokens of varied prose, numbers and code."""
    parts = []
    for i in range(12):
        parts.append(
            f"Entry {i + 1}: On day {3 * i + 2} the expedition covered "
            f"{17 + 5 * i} kilometres, crossing a river near camp {chr(65 + i)} "
            "before the weather turned. The cook counted the remaining "
            f"supplies twice ({40 - i} tins, {i % 4 + 1} sacks of rice) and "
            "wrote: `def ration(n): return n // 2`.\n")
    return "".join(parts) + "Summary of the expedition:"


PROMPTS = [
    # (text, parse special tokens)
    ("Question: What is the capital of France?\nAnswer:", False),
    ("The quick brown fox jumps over the lazy dog. The dog", False),
    ("def fibonacci(n):\n    if n < 2:\n        return n\n    return", False),
    ("<start_of_turn>user\nWrite a haiku about the sea.<end_of_turn>\n"
     "<start_of_turn>model\n", True),
    (long_text(), False),
]


def main():
    model = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else DEFAULT_OUT
    llm = Llama(model_path=model, logits_all=True, n_ctx=2048, n_batch=2048,
                n_threads=2, seed=0, verbose=False)
    if llm.metadata.get("general.architecture") != "gemma3":
        sys.exit(f"{model}: not a gemma3 file")
    vocab = llm.n_vocab()
    rng = np.random.default_rng(0)
    sample_ids = sorted(rng.choice(vocab, N_SAMPLE, replace=False).tolist())
    lines = ["# logits of gemma-3-270m-q4_k_m.gguf by llama.cpp "
             "(tests/runtime/make_gemma3_reference.py)",
             "sample_ids " + " ".join(map(str, sample_ids))]
    for i, (text, special) in enumerate(PROMPTS):
        tokens = llm.tokenize(text.encode(), add_bos=True, special=special)
        if i == len(PROMPTS) - 1 and len(tokens) <= WINDOW + 64:
            sys.exit(f"long prompt has only {len(tokens)} tokens")
        llm.reset()
        llm.eval(tokens)
        scores = np.array(llm.scores[:len(tokens)], dtype=np.float32)
        if not np.isfinite(scores).all():
            sys.exit(f"prompt {i}: non-finite logits")
        block = prompt_lines(llm, i, tokens, scores, sample_ids)
        lines += block
        print(f"prompt {i}: {len(tokens)} tokens, greedy "
              f"{llm.detokenize(list(map(int, block[-2].split()[1:]))[:12])!r}",
              file=sys.stderr)
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
