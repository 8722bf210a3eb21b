#!/usr/bin/env python3
"""Independent check of tests/data/qwen{2,3}-tiny.reference.txt: a plain numpy
forward pass of the qwen2 / qwen3 architectures over the weights of
tests/data/qwen{2,3}-tiny.gguf (read and dequantized with the `gguf`
package, float64 arithmetic), run on each reference prompt's token ids and
compared with llama.cpp's logits stored in the reference file (its top-32
and the 256 sampled ids at every position). It also reruns the greedy
continuations and counts how many steps agree with llama.cpp.

The architecture as implemented here (what the check confirms when it passes):
  x = token_embd[tokens]
  per layer:
    h = rmsnorm(x) * attn_norm
    q = Wq h (+ bq), k = Wk h (+ bk), v = Wv h (+ bv)      (qwen2: biases)
    split into heads of head_dim (qwen3: attention.key_length)
    qwen3: q, k = rmsnorm over each head's head_dim * attn_q_norm / attn_k_norm,
           BEFORE rope
    rope NEOX style (pairs i, i + head_dim/2), theta = base^(-2i/head_dim)
    causal softmax(q k^T / sqrt(head_dim)), query head h reads KV head
      h // (n_head / n_head_kv)
    x += Wo concat(heads)
    h = rmsnorm(x) * ffn_norm
    x += Wdown (silu(Wgate h) * Wup h)
  logits = Woutput (rmsnorm(x) * output_norm)   (Woutput = token_embd if tied)

Usage: python3 check_family_numpy.py [--data-dir tests/data] [--tol T]
       [--mean-tol M] [--variant V] [--list] [ARCH...]
(--variant runs a deliberately wrong forward pass, to show the check catches
it; --list prints the tensors.) Exits non-zero when the max |numpy -
llama.cpp| over the stored logits (exact float64 math) exceeds T (default
0.75) or the mean exceeds M (default 0.1). Logits have std ~3. The gap is
llama.cpp's rounding: it quantizes a matmul's activations to 8 bits (Q8_0
blocks of 32 for Q8_0 weights, Q8_K blocks of 256 for K-quants) and keeps
K/V in f16. The check also reruns the forward pass rounding the same way;
that reproduces llama.cpp's logits to <1e-3 at about half the positions,
and elsewhere differs by about the rounding noise, from the first position
where a last-bit difference (summation order) flips one 8-bit rounding,
which then persists through the KV cache. llama.cpp itself differs from
itself by as much between a batched and a token-by-token evaluation of
the same prompt (up to ~0.2 here). A wrong op (RoPE pairing, q/k norm,
GQA mapping, biases) moves logits by several units: see --variant.
"""
import argparse
import os
import sys

import numpy as np
import gguf

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def f16(x):
    return x.astype(np.float16).astype(np.float64)


def quantize_act_q8_0(x):
    """What llama.cpp's CPU backend does to a matmul's activations when the
    weight is Q8_0: blocks of 32, d = amax/127 kept as f16, q rounded."""
    b = x.reshape(*x.shape[:-1], -1, 32).astype(np.float32)
    d = np.abs(b).max(axis=-1, keepdims=True) / np.float32(127)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(d > 0, np.round(b / d), 0)
    return (q * f16(d)).reshape(x.shape)


def quantize_act_q8_k(x):
    """... and when the weight is a K-quant: Q8_K, blocks of 256,
    d = amax/127 kept as f32."""
    b = x.reshape(*x.shape[:-1], -1, 256).astype(np.float32)
    d = np.abs(b).max(axis=-1, keepdims=True) / np.float32(127)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(d > 0, np.round(b / d), 0)
    return (q * d.astype(np.float64)).reshape(x.shape)


# Deliberately wrong forward passes (--variant), to show the check would
# catch each mistake: llama.cpp's "normal" RoPE (adjacent pairs) instead of
# NEOX, qwen3 without its q/k norm or with it after RoPE, GQA heads mapped
# h % n_kv instead of h // (n_head/n_kv), qwen2 without its q/k/v biases.
VARIANTS = ["none", "rope-norm", "no-qk-norm", "qk-norm-after-rope",
            "gqa-modulo", "no-bias"]


class Model:
    def __init__(self, path):
        r = gguf.GGUFReader(path)
        self.arch = r.fields["general.architecture"].contents()
        a = self.arch

        def field(key, default=None):
            f = r.fields.get(f"{a}.{key}")
            return default if f is None else f.contents()

        self.d = field("embedding_length")
        self.n_layer = field("block_count")
        self.n_head = field("attention.head_count")
        self.n_kv = field("attention.head_count_kv")
        self.head_dim = field("attention.key_length", self.d // self.n_head)
        self.rope_base = field("rope.freq_base", 10000.0)
        self.eps = field("attention.layer_norm_rms_epsilon")
        self.t = {}
        self.types = {}
        for tensor in r.tensors:
            w = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
            self.t[tensor.name] = np.asarray(w, dtype=np.float64)
            self.types[tensor.name] = (tensor.tensor_type.name,
                                       [int(n) for n in tensor.shape])
        self.out_name = ("output.weight" if "output.weight" in self.t
                         else "token_embd.weight")
        self.emulate = False

    def mm(self, x, name):
        """x @ W^T; with emulate, x first rounded as llama.cpp's CPU matmul
        rounds it for W's type."""
        if self.emulate:
            ty = self.types[name][0]
            if ty == "Q8_0":
                x = quantize_act_q8_0(x)
            elif ty in ("Q4_K", "Q6_K"):
                x = quantize_act_q8_k(x)
        return x @ self.t[name].T

    def r16(self, x):
        """llama.cpp keeps K and V in an f16 cache and rounds q and the
        attention weights to f16 to multiply with them."""
        return f16(x) if self.emulate else x

    def rmsnorm(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x, pos, mode):
        # x: [T, heads, hd]
        hd = self.head_dim
        inv = self.rope_base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
        ang = pos[:, None] * inv[None, :]            # [T, hd/2]
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        if mode == "neox":
            a, b = x[..., :hd // 2], x[..., hd // 2:]
            return np.concatenate([a * cos - b * sin, a * sin + b * cos], -1)
        a, b = x[..., 0::2], x[..., 1::2]            # "norm": adjacent pairs
        out = np.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out

    def forward(self, tokens, variant="none"):
        rope = "norm" if variant == "rope-norm" else "neox"
        t, hd, nh, nkv = self.t, self.head_dim, self.n_head, self.n_kv
        T = len(tokens)
        pos = np.arange(T, dtype=np.float64)
        x = t["token_embd.weight"][tokens]
        mask = np.triu(np.full((T, T), -np.inf), 1)
        for i in range(self.n_layer):
            p = f"blk.{i}."
            h = self.rmsnorm(x, t[p + "attn_norm.weight"])
            bias = 0.0 if variant == "no-bias" else None
            q, k, v = (self.mm(h, p + f"attn_{n}.weight") +
                       (t.get(p + f"attn_{n}.bias", 0.0) if bias is None
                        else bias) for n in "qkv")
            q = q.reshape(T, nh, hd)
            k = k.reshape(T, nkv, hd)
            v = v.reshape(T, nkv, hd)
            has_qk_norm = (p + "attn_q_norm.weight" in t and
                           variant != "no-qk-norm")
            if has_qk_norm and variant != "qk-norm-after-rope":
                q = self.rmsnorm(q, t[p + "attn_q_norm.weight"])
                k = self.rmsnorm(k, t[p + "attn_k_norm.weight"])
            q, k = self.rope(q, pos, rope), self.rope(k, pos, rope)
            if has_qk_norm and variant == "qk-norm-after-rope":
                q = self.rmsnorm(q, t[p + "attn_q_norm.weight"])
                k = self.rmsnorm(k, t[p + "attn_k_norm.weight"])
            q, k, v = self.r16(q), self.r16(k), self.r16(v)
            group = nh // nkv
            heads = []
            for hh in range(nh):
                kv = hh % nkv if variant == "gqa-modulo" else hh // group
                s = q[:, hh] @ k[:, kv].T / np.sqrt(hd) + mask
                s = np.exp(s - s.max(axis=1, keepdims=True))
                s /= s.sum(axis=1, keepdims=True)
                heads.append(self.r16(s) @ v[:, kv])
            x = x + self.mm(np.concatenate(heads, axis=1),
                            p + "attn_output.weight")
            h = self.rmsnorm(x, t[p + "ffn_norm.weight"])
            g = self.mm(h, p + "ffn_gate.weight")
            u = self.mm(h, p + "ffn_up.weight")
            x = x + self.mm(g / (1.0 + np.exp(-g)) * u, p + "ffn_down.weight")
        return self.mm(self.rmsnorm(x, t["output_norm.weight"]), self.out_name)


def parse_reference(path):
    ref = {"prompts": []}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            kind = parts[0]
            if kind == "sample_ids":
                ref["sample_ids"] = [int(s) for s in parts[1:]]
            elif kind == "prompt":
                ref["prompts"].append({"tokens": [int(s) for s in parts[2:]],
                                       "top": [], "sample": []})
            elif kind == "pos":
                i = parts.index("sample")
                top = [(int(a), float(b)) for a, b in
                       (s.split(":") for s in parts[3:i])]
                ref["prompts"][-1]["top"].append(top)
                ref["prompts"][-1]["sample"].append(
                    [float(s) for s in parts[i + 1:]])
            elif kind == "greedy":
                ref["prompts"][-1]["greedy"] = [int(s) for s in parts[1:]]
            elif kind == "margins":
                ref["prompts"][-1]["margins"] = [float(s) for s in parts[1:]]
    return ref


def check(arch, data_dir, tol, mean_tol, variant):
    model = Model(os.path.join(data_dir, f"{arch}-tiny.gguf"))
    assert model.arch == arch, model.arch
    ref = parse_reference(os.path.join(data_dir, f"{arch}-tiny.reference.txt"))
    sample_ids = ref["sample_ids"]
    stats = {}
    for emulate in (False, True):
        model.emulate = emulate
        worst, total, count, top1, exact, n_pos = 0.0, 0.0, 0, 0, 0, 0
        for pr in ref["prompts"]:
            logits = model.forward(pr["tokens"], variant)
            for p, (top, sample) in enumerate(zip(pr["top"], pr["sample"])):
                ids = [t for t, _ in top] + sample_ids
                want = np.array([v for _, v in top] + sample)
                diff = np.abs(logits[p, ids] - want)
                worst = max(worst, diff.max())
                total += diff.sum()
                count += diff.size
                exact += int(diff.max() < 1e-3)
                top1 += int(np.argmax(logits[p]) == top[0][0])
                n_pos += 1
        stats[emulate] = (worst, total / count, top1, exact, n_pos, count)
    # Greedy continuations (emulating llama.cpp's rounding), each up to the
    # first step that differs.
    greedy_same, greedy_total, parted = 0, 0, []
    for i, pr in enumerate(ref["prompts"]):
        seq = list(pr["tokens"])
        for step, (tok, margin) in enumerate(zip(pr["greedy"], pr["margins"])):
            got = int(np.argmax(model.forward(seq, variant)[-1]))
            if got != tok:
                parted.append(f"prompt {i} step {step} (llama.cpp margin "
                              f"{margin})")
                break
            seq.append(tok)
            greedy_same += 1
        greedy_total += len(pr["greedy"])
    worst, mean, top1, _, n_pos, count = stats[False]
    e_worst, e_mean, e_top1, e_exact, _, _ = stats[True]
    ok = worst <= tol and mean <= mean_tol
    print(f"{arch} (variant {variant}), {n_pos} positions x "
          f"{count // n_pos} logits:\n"
          f"  exact float64 math: max |numpy - llama.cpp| {worst:.4f}, mean "
          f"{mean:.4f}, top-1 agrees {top1}/{n_pos}\n"
          f"  with llama.cpp's rounding (8-bit activations, f16 KV/Q/softmax):"
          f" max {e_worst:.4f}, mean {e_mean:.5f}, positions equal to 1e-3 "
          f"{e_exact}/{n_pos}, top-1 agrees {e_top1}/{n_pos}\n"
          f"  greedy steps agreeing {greedy_same}/{greedy_total}"
          + (f"; parted at {', '.join(parted)}" if parted else "") + "\n"
          f"  {'OK' if ok else 'FAIL'} (tolerance: max {tol}, mean {mean_tol})")
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=os.path.join(REPO, "tests", "data"))
    ap.add_argument("--tol", type=float, default=0.75)
    ap.add_argument("--mean-tol", type=float, default=0.1)
    ap.add_argument("--variant", default="none", choices=VARIANTS)
    ap.add_argument("--list", action="store_true", help="print the tensors")
    ap.add_argument("arch", nargs="*", default=["qwen2", "qwen3"])
    args = ap.parse_args()
    if args.list:
        for arch in args.arch:
            m = Model(os.path.join(args.data_dir, f"{arch}-tiny.gguf"))
            print(f"{arch}: d {m.d}, layers {m.n_layer}, heads {m.n_head}/"
                  f"{m.n_kv}, head_dim {m.head_dim}")
            for name, (ty, shape) in m.types.items():
                print(f"  {name:28s} {ty:5s} {shape}")
        return
    ok = all([check(a, args.data_dir, args.tol, args.mean_tol, args.variant)
              for a in args.arch])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
