#!/usr/bin/env python3
"""Writes tests/data/reference_logits.txt: logits of the default model computed
by llama.cpp (through llama-cpp-python, an independent implementation of the
GGUF format) for 5 prompts, every position, plus each prompt's greedy 32-token
continuation with llama.cpp's top-2 margin at every step. model_e2e_test.cc compares the engine against this file, so CI
needs no Python.

Usage: python3 make_reference_logits.py MODEL.gguf OUT.txt
(needs `pip install llama-cpp-python numpy`; it builds llama.cpp from source.)

Per position the file keeps the top 32 logits and the logits of 256 fixed
vocab ids (the full 49152-wide rows of 5 prompts would be ~10 MB of text)."""
import sys

import numpy as np
from llama_cpp import Llama

PROMPTS = [
    # (text, parse special tokens)
    ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained "
     "by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of "
     "France?<|im_end|>\n<|im_start|>assistant\n", True),
    ("The quick brown fox jumps over the lazy dog. The dog", False),
    ("def fibonacci(n):\n    if n < 2:\n        return n\n    return", False),
    ("<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n"
     "<|im_start|>assistant\n", True),
    ("Once upon a time, in a small village in the mountains, there lived", False),
]
CONTINUATION = 32
TOP = 32
N_SAMPLE = 256


def prompt_lines(llm, i, tokens, scores, sample_ids):
    """The reference lines of prompt i, whose logits llm has just computed
    (scores): top and sampled logits at every position, then the greedy
    continuation (which runs llm on) and its top-2 margins."""
    lines = [f"prompt {i} " + " ".join(map(str, tokens))]
    for p in range(len(tokens)):
        row = scores[p]
        top = np.argsort(-row, kind="stable")[:TOP]
        lines.append(
            f"pos {p} top " +
            " ".join(f"{t}:{row[t]:.6f}" for t in top) + " sample " +
            " ".join(f"{row[t]:.6f}" for t in sample_ids))
    cont, margins = [], []
    last = scores[-1]
    for _ in range(CONTINUATION):
        tok = int(np.argmax(last))
        top2 = np.sort(last)[-2:]
        cont.append(tok)
        margins.append(float(top2[1] - top2[0]))
        llm.eval([tok])
        last = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    lines.append("greedy " + " ".join(map(str, cont)))
    # The top-1 minus top-2 logit at each greedy step: a step whose margin
    # is within the two implementations' noise may go either way.
    lines.append("margins " + " ".join(f"{m:.4f}" for m in margins))
    return lines


def main():
    model, out = sys.argv[1], sys.argv[2]
    llm = Llama(model_path=model, logits_all=True, n_ctx=512, n_batch=512,
                n_threads=2, seed=0, verbose=False)
    vocab = llm.n_vocab()
    rng = np.random.default_rng(0)
    sample_ids = sorted(rng.choice(vocab, N_SAMPLE, replace=False).tolist())
    lines = ["# logits of the default model by llama.cpp " +
             "(tests/runtime/make_reference_logits.py)",
             "sample_ids " + " ".join(map(str, sample_ids))]
    for i, (text, special) in enumerate(PROMPTS):
        tokens = llm.tokenize(text.encode(), add_bos=False, special=special)
        llm.reset()
        llm.eval(tokens)
        scores = np.array(llm.scores[:len(tokens)], dtype=np.float32)
        lines += prompt_lines(llm, i, tokens, scores, sample_ids)
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
