#!/usr/bin/env python3
"""Writes tests/data/qwen2-tiny.reference.txt and qwen3-tiny.reference.txt:
logits of the random-weight models from make_family_models.py computed by
llama.cpp (through llama-cpp-python), for 5 prompts per model, at every
position, plus each prompt's greedy 32-token continuation with llama.cpp's
top-2 margin at every step. The format is that of make_reference_logits.py
(tests/data/reference_logits.txt), so model_e2e_test.cc's parser reads it:

  # comment
  sample_ids ID...                 256 fixed vocab ids
  prompt I TOKEN...                the prompt's token ids (llama.cpp's tokenizer)
  pos P top ID:LOGIT... sample LOGIT...   top 32 and the sample ids' logits
  greedy TOKEN...                  32 greedy tokens after the prompt
  margins M...                     top-1 minus top-2 logit at each greedy step

Usage: python3 make_family_references.py [--data-dir tests/data] [ARCH...]
(ARCH: qwen2, qwen3; default both. Needs reference_requirements.txt.)

It checks that llama.cpp loaded each file as the named architecture (from
its load log) and that the logits are not degenerate, and fails otherwise.
check_family_numpy.py compares the files against an independent numpy
forward pass."""
import argparse
import os
import re
import sys
import tempfile

import numpy as np
from llama_cpp import Llama

# The line format of the default model's reference, shared with it.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_reference_logits import N_SAMPLE, prompt_lines  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

PLAIN = [
    "The quick brown fox jumps over the lazy dog. The dog",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "In 2024, 1234567 people paid $3.50 each -- that's   a lot!",
]
# (text, parse special tokens). The ChatML prompts are what each model's
# chat template renders (make_family_models.py), written out.
PROMPTS = {
    "qwen2": [
        ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are "
         "a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is the "
         "capital of France?<|im_end|>\n<|im_start|>assistant\n", True),
        (PLAIN[0], False),
        (PLAIN[1], False),
        ("<|im_start|>system\nYou are a poet.<|im_end|>\n<|im_start|>user\n"
         "Write a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n"
         "Waves<|im_end|>\n<|im_start|>user\nAnother one.<|im_end|>\n"
         "<|im_start|>assistant\n", True),
        (PLAIN[2], False),
    ],
    "qwen3": [
        ("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
         "<|im_start|>assistant\n", True),
        (PLAIN[0], False),
        (PLAIN[1], False),
        # enable_thinking=false: the template closes an empty <think> block.
        ("<|im_start|>system\nYou are a poet.<|im_end|>\n<|im_start|>user\n"
         "Write a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n"
         "<think>\n\n</think>\n\n", True),
        (PLAIN[2], False),
    ],
}
# The conversations the ChatML prompts above render (checked against the
# model's own chat template with jinja2, as transformers renders it).
CHATS = {
    ("qwen2", 0): ([{"role": "user", "content": "What is the capital of France?"}], {}),
    ("qwen2", 3): ([{"role": "system", "content": "You are a poet."},
                    {"role": "user", "content": "Write a haiku about the sea."},
                    {"role": "assistant", "content": "Waves"},
                    {"role": "user", "content": "Another one."}], {}),
    ("qwen3", 0): ([{"role": "user", "content": "What is the capital of France?"}], {}),
    ("qwen3", 3): ([{"role": "system", "content": "You are a poet."},
                    {"role": "user", "content": "Write a haiku about the sea."}],
                   {"enable_thinking": False}),
}


def load(path):
    """Loads with llama.cpp's log captured (it writes to fd 2)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as log:
        os.dup2(log.fileno(), 2)
        try:
            llm = Llama(model_path=path, logits_all=True, n_ctx=512,
                        n_batch=512, n_threads=2, seed=0, verbose=True)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        log.seek(0)
        text = log.read().decode(errors="replace")
    llm.verbose = False
    return llm, text


def check_templates(arch, template):
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda x, **kw: __import__("json").dumps(x, **kw)
    tmpl = env.from_string(template)
    for (a, i), (messages, extra) in CHATS.items():
        if a != arch:
            continue
        text = tmpl.render(messages=messages, add_generation_prompt=True, **extra)
        if text != PROMPTS[arch][i][0]:
            sys.exit(f"{arch} prompt {i}: the chat template renders "
                     f"{text!r}, not {PROMPTS[arch][i][0]!r}")


def log_value(text, key):
    m = re.search(r"print_info: " + re.escape(key) + r"\s*=\s*(.*)", text)
    return m.group(1).strip() if m else None


def reference(arch, path, out):
    llm, text = load(path)
    facts = {k: log_value(text, k) for k in (
        "arch", "file type", "n_embd", "n_head", "n_head_kv", "n_embd_head_k",
        "n_embd_head_v", "n_rot", "rope type", "freq_base_train", "f_norm_rms_eps",
        "n_layer", "n_ff", "vocab type", "n_vocab", "n_merges", "BOS token",
        "EOS token", "EOT token")}
    print(f"{arch}: llama.cpp load log: " +
          "; ".join(f"{k} = {v}" for k, v in facts.items()), file=sys.stderr)
    if facts["arch"] != arch:
        sys.exit(f"{path}: llama.cpp loaded arch {facts['arch']!r}, not {arch!r}")
    check_templates(arch, llm.metadata["tokenizer.chat_template"])

    vocab = llm.n_vocab()
    rng = np.random.default_rng(0)
    sample_ids = sorted(rng.choice(vocab, N_SAMPLE, replace=False).tolist())
    lines = [f"# logits of tests/data/{arch}-tiny.gguf by llama.cpp "
             "(tests/runtime/make_family_references.py)",
             "sample_ids " + " ".join(map(str, sample_ids))]
    argmaxes = []
    for i, (prompt, special) in enumerate(PROMPTS[arch]):
        tokens = llm.tokenize(prompt.encode(), add_bos=False, special=special)
        llm.reset()
        llm.eval(tokens)
        scores = np.array(llm.scores[:len(tokens)], dtype=np.float32)
        if not np.isfinite(scores).all():
            sys.exit(f"{arch} prompt {i}: non-finite logits")
        if (scores.std(axis=1) < 0.1).any():
            sys.exit(f"{arch} prompt {i}: flat logits")
        argmaxes += scores.argmax(axis=1).tolist()
        block = prompt_lines(llm, i, tokens, scores, sample_ids)
        lines += block
        cont = list(map(int, block[-2].split()[1:]))
        margins = list(map(float, block[-1].split()[1:]))
        print(f"{arch} prompt {i}: {len(tokens)} tokens, logit std "
              f"{scores.std():.3f}, greedy {cont[:8]}..., min margin "
              f"{min(margins):.4f}", file=sys.stderr)
    distinct = len(set(argmaxes))
    if distinct < max(3, len(argmaxes) // 10):
        sys.exit(f"{arch}: top-1 token takes only {distinct} values over "
                 f"{len(argmaxes)} positions")
    print(f"{arch}: {distinct} distinct top-1 tokens over {len(argmaxes)} "
          "positions", file=sys.stderr)
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=os.path.join(REPO, "tests", "data"))
    ap.add_argument("arch", nargs="*", default=["qwen2", "qwen3"])
    args = ap.parse_args()
    for arch in args.arch:
        reference(arch, os.path.join(args.data_dir, f"{arch}-tiny.gguf"),
                  os.path.join(args.data_dir, f"{arch}-tiny.reference.txt"))


if __name__ == "__main__":
    main()
