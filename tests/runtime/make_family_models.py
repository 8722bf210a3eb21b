#!/usr/bin/env python3
"""Writes tests/data/qwen2-tiny.gguf and tests/data/qwen3-tiny.gguf: small
random-weight models of llama.cpp's `qwen2` and `qwen3` architectures with a
real (subset) GPT-2 style BPE vocabulary, so the C++ tests can run the engine
on those architectures and compare it against llama.cpp's logits
(tests/data/qwen{2,3}-tiny.reference.txt, by make_family_references.py).

Usage:
  python3 make_family_models.py [--vocab-from SmolLM2-135M-Instruct.Q4_1.gguf]
                                [--out-dir tests/data]
(needs the packages pinned in reference_requirements.txt; the vocabulary
source defaults to the output of scripts/fetch_model.sh.)

Everything is deterministic: a fixed numpy seed per model, and GGUFWriter
writes the same bytes for the same inputs, so rerunning reproduces the files
bit for bit (the sha256 sums are printed).

The models:
  qwen2-tiny: 3 layers, d_model 256, 4 query heads / 2 KV heads (head_dim 64,
    implied by d_model/heads, no key_length key, as converted Qwen2 files),
    ffn 768, q/k/v biases (f32), output tied to token_embd (no output.weight).
  qwen3-tiny: 2 layers, d_model 256, 4 query heads / 2 KV heads with
    attention.key_length = value_length = 128 (NOT d_model/heads = 64), so
    attn_q is 256 -> 512 and attn_output 512 -> 256; per-head attn_q_norm /
    attn_k_norm ([128], f32), no biases, ffn 512, separate output.weight.
Both: rope freq_base 1e6, rms eps 1e-6, context_length 2048.

Weight types (ggml): token_embd Q8_0; attn_q, attn_k, ffn_gate, ffn_up Q4_K;
attn_v, ffn_down Q6_K; attn_output Q8_0; output.weight (qwen3) Q6_K; norms
and biases F32 (norm weights 1 + 0.1 N(0,1); qwen3's q/k norm weights
exp(0.5 N(0,1)); qwen2's biases 0.5 N(0,1)). The gguf package cannot quantize K-quants, so their blocks
are random bytes (uniform 6-bit scales/mins, uniform quants) with the f16
super-block scales set so the dequantized weights have std ~ 1/sqrt(fan_in)
(each block's d jittered by U(0.5, 1.5)).

The vocabulary: the first VOCAB tokens (by id) of the default model's vocab,
which hold its 17 special tokens (ids 0-16: <|endoftext|> 0, <|im_start|> 1,
<|im_end|> 2, ..., all control), the 256 byte tokens and the earliest merges;
plus the merges whose two parts and result all lie inside that subset, in
their original rank order. tokenizer.ggml.pre = "qwen2".
"""
import argparse
import hashlib
import os
import subprocess
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT

VOCAB = 6000
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# Qwen2.5-Instruct's chat template, as published by Qwen (tokenizer_config.json).
QWEN25_TEMPLATE = r'''{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
'''

# Qwen3's chat template (with <think> handling), as published with Qwen3-0.6B.
QWEN3_TEMPLATE = r'''{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set content = message.content %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is defined and message.reasoning_content is not none %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in message.content %}
                {%- set content = message.content.split('</think>')[-1].lstrip('\n') %}
                {%- set reasoning_content = message.content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}'''

CONFIGS = {
    "qwen2": dict(
        seed=2, n_layer=3, d_model=256, n_head=4, n_kv=2, head_dim=64,
        write_head_dim=False, ffn=768, qkv_bias=True, qk_norm=False,
        out_gain=4.0, tied=True, template=QWEN25_TEMPLATE, name="qwen2-tiny (random)"),
    "qwen3": dict(
        seed=3, n_layer=2, d_model=256, n_head=4, n_kv=2, head_dim=128,
        write_head_dim=True, ffn=512, qkv_bias=False, qk_norm=True,
        out_gain=1.0, tied=False, template=QWEN3_TEMPLATE, name="qwen3-tiny (random)"),
}
CONTEXT = 2048
ROPE_BASE = 1e6
RMS_EPS = 1e-6


# --- random quantized blocks ------------------------------------------------

def _set_f16(blocks, offset, values):
    blocks[:, offset:offset + 2] = (
        values.astype(np.float16).view(np.uint8).reshape(-1, 2))


def _unit_std(qtype, rng):
    """Std of the dequantized weights of random blocks with d (and dmin) set
    for a unit super-block scale, measured on a sample."""
    blocks = _random_blocks(qtype, 4096, rng, scale=np.ones(4096))
    return float(gguf.quants.dequantize(blocks, qtype).std())


def _random_blocks(qtype, n, rng, scale):
    """n random blocks of a K-quant type, super-block scale `scale` (per block)."""
    size = gguf.GGML_QUANT_SIZES[qtype][1]
    blocks = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
    if qtype == QT.Q4_K:
        # d (f16), dmin (f16), scales[12] (8 x 6-bit scale + 8 x 6-bit min),
        # qs[128]. w = d * sc * q - dmin * m; dmin = 7.5 d centres a
        # sub-block with average sc and m (E[q] = 7.5, E[sc] = E[m]).
        _set_f16(blocks, 0, scale)
        _set_f16(blocks, 2, 7.5 * scale)
    elif qtype == QT.Q6_K:
        # ql[128], qh[64], scales[16] (int8), d (f16). w = d * s * (q - 32).
        # Keep the int8 scales in [-32, 31] so d stays a normal f16.
        s = rng.integers(-32, 32, size=(n, 16)).astype(np.int8)
        blocks[:, 192:208] = s.view(np.uint8)
        _set_f16(blocks, 208, scale)
    else:
        raise ValueError(qtype)
    return blocks


def kquant_matrix(qtype, rows, cols, std, rng, unit_std):
    """A rows x cols K-quant weight as a uint8 (rows, bytes per row) array."""
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    assert cols % block_elems == 0, (qtype, cols)
    n = rows * cols // block_elems
    scale = (std / unit_std) * rng.uniform(0.5, 1.5, size=n)
    blocks = _random_blocks(qtype, n, rng, scale)
    return blocks.reshape(rows, cols // block_elems * block_bytes)


def q8_0_matrix(w):
    return gguf.quants.quantize(w.astype(np.float32), QT.Q8_0)


# --- vocabulary ---------------------------------------------------------------

def load_vocab(path, n):
    r = gguf.GGUFReader(path)
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    types = r.fields["tokenizer.ggml.token_type"].contents()
    merges = r.fields["tokenizer.ggml.merges"].contents()
    # Every byte token of the source (it lacks those of bytes that never
    # occur in UTF-8, 0xC0 0xC1 0xF5-0xFF, and a few control bytes) must be
    # kept, for byte-level BPE to cover what the source covers.
    bytes_in_source = set(gpt2_byte_chars()) & set(tokens)
    tokens, types = tokens[:n], [int(t) for t in types[:n]]
    assert bytes_in_source <= set(tokens), "byte tokens fall outside the subset"
    inside = set(tokens)
    kept = []
    for m in merges:
        a, b = m.split(" ")
        if a in inside and b in inside and (a + b) in inside:
            kept.append(m)
    for name in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        assert types[tokens.index(name)] == gguf.TokenType.CONTROL, name
    return tokens, types, kept


def gpt2_byte_chars():
    bs = (list(range(ord("!"), ord("~") + 1)) +
          list(range(ord("¡"), ord("¬") + 1)) +
          list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    k = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + k)
            k += 1
    return [chr(c) for c in cs]


# --- model ----------------------------------------------------------------------

def write_model(arch, cfg, vocab, out_path):
    tokens, types, merges = vocab
    rng = np.random.default_rng(cfg["seed"])
    units = {qt: _unit_std(qt, np.random.default_rng(100 + int(qt)))
             for qt in (QT.Q4_K, QT.Q6_K)}
    d, hd = cfg["d_model"], cfg["head_dim"]
    nh, nkv, ffn = cfg["n_head"], cfg["n_kv"], cfg["ffn"]
    nv = len(tokens)

    w = gguf.GGUFWriter(out_path, arch)
    w.add_name(cfg["name"])
    w.add_type("model")
    w.add_context_length(CONTEXT)
    w.add_embedding_length(d)
    w.add_block_count(cfg["n_layer"])
    w.add_feed_forward_length(ffn)
    w.add_head_count(nh)
    w.add_head_count_kv(nkv)
    if cfg["write_head_dim"]:
        w.add_key_length(hd)
        w.add_value_length(hd)
    w.add_rope_freq_base(ROPE_BASE)
    w.add_layer_norm_rms_eps(RMS_EPS)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(tokens.index("<|endoftext|>"))
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_pad_token_id(tokens.index("<|endoftext|>"))
    w.add_add_bos_token(False)
    w.add_chat_template(cfg["template"])

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    def kq(qt, rows, cols, gain=1.0):
        return kquant_matrix(qt, rows, cols, gain / np.sqrt(cols), rng,
                             units[qt])

    def add_q(name, data, qt):
        w.add_tensor(name, data, raw_dtype=qt)

    # Tied models use token_embd as the output matrix: keep its std such
    # that logits come out with a std of a few units (0.2 * sqrt(256)), and
    # let the layers write out_gain times more into the residual stream than
    # unit-std projections would, so that the residual is ~10x the
    # embedding: otherwise the input token's own embedding wins the final
    # dot product and greedy decoding only repeats the last token.
    emb_std = 0.2 if cfg["tied"] else 1.0
    emb = (emb_std * rng.standard_normal((nv, d))).astype(np.float32)
    add_q("token_embd.weight", q8_0_matrix(emb), QT.Q8_0)
    for i in range(cfg["n_layer"]):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", norm(d))
        add_q(p + "attn_q.weight", kq(QT.Q4_K, nh * hd, d), QT.Q4_K)
        add_q(p + "attn_k.weight", kq(QT.Q4_K, nkv * hd, d), QT.Q4_K)
        add_q(p + "attn_v.weight", kq(QT.Q6_K, nkv * hd, d), QT.Q6_K)
        if cfg["qkv_bias"]:
            w.add_tensor(p + "attn_q.bias",
                         (0.5 * rng.standard_normal(nh * hd)).astype(np.float32))
            w.add_tensor(p + "attn_k.bias",
                         (0.5 * rng.standard_normal(nkv * hd)).astype(np.float32))
            w.add_tensor(p + "attn_v.bias",
                         (0.5 * rng.standard_normal(nkv * hd)).astype(np.float32))
        if cfg["qk_norm"]:
            # Spread widely (log-normal, as trained q/k norms are), so that
            # applying them after RoPE instead of before shows in the logits.
            for n in ("q", "k"):
                w.add_tensor(p + f"attn_{n}_norm.weight",
                             np.exp(0.5 * rng.standard_normal(hd)).astype(np.float32))
        wo = cfg["out_gain"] * rng.standard_normal((d, nh * hd)) / np.sqrt(nh * hd)
        add_q(p + "attn_output.weight", q8_0_matrix(wo), QT.Q8_0)
        w.add_tensor(p + "ffn_norm.weight", norm(d))
        add_q(p + "ffn_gate.weight", kq(QT.Q4_K, ffn, d), QT.Q4_K)
        add_q(p + "ffn_up.weight", kq(QT.Q4_K, ffn, d), QT.Q4_K)
        add_q(p + "ffn_down.weight", kq(QT.Q6_K, d, ffn, cfg["out_gain"]), QT.Q6_K)
    w.add_tensor("output_norm.weight", norm(d))
    if not cfg["tied"]:
        # std 3/sqrt(d): logits with a std of ~3 after the final norm.
        out = kquant_matrix(QT.Q6_K, nv, d, 3.0 / np.sqrt(d), rng,
                            units[QT.Q6_K])
        add_q("output.weight", out, QT.Q6_K)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab-from", help="GGUF whose vocab to subset "
                    "(default: the output of scripts/fetch_model.sh)")
    ap.add_argument("--out-dir", default=os.path.join(REPO, "tests", "data"))
    args = ap.parse_args()
    src = args.vocab_from or subprocess.run(
        [os.path.join(REPO, "scripts", "fetch_model.sh")], check=True,
        capture_output=True, text=True).stdout.strip()
    vocab = load_vocab(src, VOCAB)
    print(f"vocab: {len(vocab[0])} tokens, {len(vocab[2])} merges", file=sys.stderr)
    for arch, cfg in CONFIGS.items():
        path = os.path.join(args.out_dir, f"{arch}-tiny.gguf")
        write_model(arch, cfg, vocab, path)
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        print(f"{digest}  {os.path.relpath(path, REPO)}  "
              f"({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
