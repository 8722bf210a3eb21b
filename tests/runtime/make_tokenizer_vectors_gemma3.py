#!/usr/bin/env python3
"""Writes tests/data/tokenizer_vectors_gemma3.tsv: reference tokenizations of
Gemma 3's SentencePiece vocab (tokenizer.ggml.model = llama) by llama.cpp
(through llama-cpp-python, vocab only).

Each line: <special 0|1> TAB <add_bos 0|1> TAB <hex of the text's bytes> TAB
<space-separated ids>. Hex keeps any bytes (tabs, newlines, invalid UTF-8)
intact.

Usage:
  make_tokenizer_vectors_gemma3.py [--model GGUF] [--out TSV]
  make_tokenizer_vectors_gemma3.py --tiny-spm   # C++ cases for a tiny vocab

--tiny-spm writes a Llama 2 style vocab (add_space_prefix = true, <unk> <s>
</s>, byte tokens, a few dozen scored pieces) to a temporary GGUF, has
llama.cpp tokenize and detokenize a few dozen strings with it, and prints
the vocab and the cases as C++ initializers for tokenizer_spm_test.cc.

Needs: pip install llama-cpp-python==0.3.16 gguf==0.17.1
"""

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_tokenizer_vectors import cpp_string, plain_cases  # noqa: E402

DEFAULT_MODEL = os.path.expanduser(
    "~/.cache/kvsession/models/gemma-3-270m-q4_k_m.gguf")


def gemma_plain_cases():
    """Texts for Gemma beyond the shared set: its user-defined tokens (runs
    of spaces, tabs and newlines, HTML tags), control-token look-alikes,
    byte fallback and the SentencePiece space marker itself."""
    c = [
        "",
        "Hello",
        " Hello",
        "  Hello",
        "Hello ",
        "Hello  ",
        " ",
        "  ",
        "   ",
        "\t",
        "\t\t",
        " \t \t ",
        "\n\n\n",
        "a\n\n\n\n\nb",
        "x" + "\n" * 40 + "y",
        "x" + " " * 50 + "y",
        "x" + "\t" * 40 + "y",
        " \n \n",
        "\u2581",
        "\u2581\u2581 literal space markers \u2581",
        "a\u2581b c",
        "<0x41>",
        "<0xE4><0xB8>",
        "<start_of_turn>",
        "<end_of_turn>",
        "<start_of",
        "<start_of_turn",
        "start_of_turn>",
        "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n",
        "<bos>",
        "<eos>",
        "<pad>",
        "<unk>",
        "<mask>",
        "<unused0>",
        "<unused6241>",
        "<bos><bos>",
        "<start_of_image>",
        "see <start_of_image> here<end_of_image>",
        "[multimodal]",
        "<table><tr><td>1</td><td>2</td></tr></table>",
        "<b>bold</b> and <i>italic</i> and <code>x</code>",
        "<h1>Title</h1>\n<div>body</div>",
        "<a href=\"x\">link</a>",
        "<strong >not a tag token</strong>",
        "<s>strike</s>",
        "\U00020000\U0002a6d6\U0002b820 ext-B",
        "\U0002f800 compat supplement",
        "\U000e0041 tag char",
        "\U000f0000\U0010fffd plane 15/16 private use",
        "\ue000\uf8ff",
        "\U0001f9ec\U0001fa90\U0001fae8",
        "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
        "\u0f00\u0f01 tibetan",
        "\u1780\u17b6 khmer",
        "\ua000 yi \ua4c6",
        "\U00010330\U00010331 gothic",
        "\U0001d11e music",
        "\u00ad\u200b\u2060\ufeff invisible",
        "\x01\x02\x03\x1f controls",
        "\x00",
        "a\x00b\x00",
        "What is the capital of France?",
        "The quick brown fox\njumps over\n\nthe lazy dog.\n",
        "int main() {\n\treturn 0;\n}\n",
        "def f(x):\n\tif x:\n\t\treturn 1\n\treturn 2\n",
        "    four spaces\n        eight spaces",
        "0123456789 00 000 0000 00000",
        "3.141592653589793 2.718281828",
        "1,234,567.89 \u20ac 1.234.567,89",
        "\u4e00\u4e01\u4e02\u4e03 \u9fff\u9ffe",
        "\u3400\u3401 ext-A",
        "\uac00\ud7a3",
        "\u0627\u0644\u0633\u0644\u0627\u0645 \u0639\u0644\u064a\u0643\u0645",
        "\u05d0\u05d1\u05d2",
        "\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5",
        "\u0417\u0434\u0440\u0430\u0432\u0441\u0442\u0432\u0443\u0439\u0442\u0435",
        "\u00e0\u00e1\u00e2\u00e3\u00e4\u00e5\u00e6\u00e7",
        "e\u0301e\u0300e\u0302",
        "\U0001f600\U0001f600\U0001f600\U0001f600",
        "\U0001f44b\U0001f3fb\U0001f44b\U0001f3ff",
        "\u263a\ufe0f \u263a",
        " leading and trailing ",
        "\n leading newline then space",
        "trailing space then newline \n",
        "MiXeD CaSe WoRdS",
        "supercalifragilisticexpialidocious antidisestablishmentarianism",
        "https://ai.google.dev/gemma/docs?x=1&y=2",
        "user@example.com",
        "$ echo 'hi' | tr a-z A-Z",
        "// comment\n/* block */\n# hash",
    ]
    return c


def gemma_special_cases():
    """Texts tokenized with special=True (control tokens parsed)."""
    return [
        "",
        "Hello",
        " Hello",
        "<start_of_turn>",
        "<end_of_turn>",
        "<start_of",
        "<start_of_turn",
        "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n",
        "<bos><start_of_turn>user\nYou are terse.\n\nWhat is 2+2?"
        "<end_of_turn>\n<start_of_turn>model\n4<end_of_turn>\n",
        "<start_of_turn>user\n  spaced  <end_of_turn>\n",
        "<start_of_turn><start_of_turn><end_of_turn>",
        "<start_of_turn>model\n\U0001f600<end_of_turn>",
        "a<bos>b",
        "<bos>",
        "<bos><bos>",
        "<eos>",
        "<pad>",
        "<unk>",
        "<mask>",
        "<unused0><unused1>",
        "<unused6241>",
        "[multimodal]",
        "<start_of_image>",
        "text <start_of_image><end_of_image> text",
        "<table><tr><td>1</td></tr></table>",
        "x<start_of_turn>y",
        "<start_of_turn>>",
        "<<start_of_turn>",
        "<end_of_turn>\n",
        "\n<start_of_turn>\n",
        "  <start_of_turn>  ",
        "\t<end_of_turn>\t",
        "<start_of_turn>user\n\u4f60\u597d<end_of_turn>",
        "<start_of_turn>user\n<0x41><end_of_turn>",
        "plain text without specials",
        "\U00020000 ext-B after nothing special",
        "<eos>\u2581",
    ]


INVALID_UTF8 = [
    b"a\xffb",
    b"\x80 stray continuation",
    b"truncated \xe2\x82",
    b"\xe2\x82\xac\xe2\x82 euro and a half",
    b"\xc3\xa9\xc3",
    b"\xe2AB lead byte eats ASCII",
    b"x\xe2 y lead byte before a space",
    b"\xf0\x9f\x98 cut emoji\xf0\x9f\x98\x80",
    b"\xf8\x88\x80\x80\x80 five bytes",
    b"\xfe\xff BOM-ish bytes",
    b"\xc0\x80 overlong nul",
    b"\xed\xa0\x80 surrogate",
    b"end with lead \xf0",
]


def all_cases():
    """(special, add_bos, bytes) rows, deduplicated, in a fixed order."""
    rows = []
    plain = plain_cases() + gemma_plain_cases()
    for t in plain:
        rows.append((0, 0, t.encode("utf-8")))
    for raw in INVALID_UTF8:
        rows.append((0, 0, raw))
    for t in gemma_special_cases():
        rows.append((1, 0, t.encode("utf-8")))
    # add_bos on a spread of both sets.
    for t in plain[::7] + gemma_plain_cases()[:12]:
        rows.append((0, 1, t.encode("utf-8")))
    for t in gemma_special_cases()[:16]:
        rows.append((1, 1, t.encode("utf-8")))
    seen = set()
    unique = []
    for r in rows:
        if r not in seen:
            seen.add(r)
            unique.append(r)
    return unique


def tokenize_rows(model_path, rows):
    from llama_cpp import Llama
    llm = Llama(model_path=model_path, vocab_only=True, verbose=False)
    return [(s, b, raw, llm.tokenize(raw, add_bos=bool(b), special=bool(s)))
            for s, b, raw in rows]


def write_tsv(path, rows):
    with open(path, "w", encoding="ascii", newline="\n") as f:
        for special, add_bos, raw, ids in rows:
            f.write("%d\t%d\t%s\t%s\n" % (special, add_bos, raw.hex(),
                                          " ".join(str(i) for i in ids)))


# --- Tiny Llama 2 style vocab ---

# Ids 0..4: <unk>, <s>, </s>, control <ctl>, user-defined <tool>; 5..260:
# <0x00>..<0xFF>; then these pieces with their scores (higher merges first).
TINY_PIECES = [
    ("\u2581", -1.0), ("a", -2.0), ("b", -3.0), ("c", -4.0), ("e", -5.0),
    ("h", -6.0), ("l", -7.0), ("o", -8.0), ("w", -9.0), ("r", -10.0),
    ("d", -11.0), ("t", -12.0), ("n", -13.0), ("i", -14.0), ("s", -15.0),
    ("x", -16.0), ("y", -17.0), ("z", -18.0), ("g", -19.0),
    ("\u2581t", -20.0), ("he", -21.0), ("\u2581the", -22.0), ("ll", -23.0),
    ("\u2581h", -24.0), ("\u2581he", -30.0), ("llo", -31.0),
    ("\u2581hello", -32.0), ("\u2581w", -33.0), ("or", -34.0),
    ("\u2581wor", -35.0), ("ld", -36.0), ("\u2581world", -37.0),
    # Equal scores: the leftmost pair merges first.
    ("ab", -40.0), ("bc", -40.0),
    # "yz" outscores "xy" wherever it stands.
    ("xy", -50.0), ("yz", -45.0),
    ("\u2581\u2581", -41.0), ("\u2581\u2581\u2581\u2581", -42.0),
    ("\u65e5", -60.0), ("\u672c", -61.0), ("\u65e5\u672c", -62.0),
    ("\u00e9", -63.0), ("in", -64.0), ("\u2581in", -65.0), ("ing", -66.0),
    ("\u2581s", -67.0),
    # Pieces that chain into the text of the control token </s>.
    ("<", -70.0), (">", -71.0), ("/", -72.0), ("</", -73.0), ("</s", -74.0),
]

TINY_TEXTS = [
    "", "hello world", "Hello world", " hello", "hello  world", "   ", " ",
    "abc", "bca", "abcbc", "xyz", "zxyz", "the", "the hello", "thello",
    "\u65e5\u672c", "\u65e5\u672c\u8a9e", "\u00e9", "e\u0301",
    "\U0001f600", "a\U0001f600b", "<tool>", "a<tool>b", "<tool><tool>",
    "<s>", "a<s>b", "<s>hello", "hello</s>", "</s>", "<ctl>", "a <ctl> b",
    "\n", "\t", "a\nb", "  leading", "trailing  ", "sing in", "wing",
    "\u2581hello",
]

TINY_INVALID = [b"\xff", b"\xe2a", b"a\xe2 b", b"\xf0\x9f\x98", b"\x80hello"]


def write_tiny_gguf(path):
    import gguf
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    w.add_layer_norm_rms_eps(1e-5)
    toks = ["<unk>", "<s>", "</s>", "<ctl>", "<tool>"]
    scores = [0.0] * 5
    types = [2, 3, 3, 3, 4]
    for b in range(256):
        toks.append("<0x%02X>" % b)
        scores.append(0.0)
        types.append(6)
    for text, score in TINY_PIECES:
        toks.append(text)
        scores.append(score)
        types.append(1)
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_space_prefix(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def detokenize(llm, ids, special):
    """llama_detokenize(remove_special=false): llama.cpp's own decoder,
    which strips the space prefix of the first token."""
    import ctypes
    import llama_cpp
    arr = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
    buf = ctypes.create_string_buffer(4096)
    n = llama_cpp.llama_detokenize(llm._model.vocab, arr, len(ids), buf, 4096,
                                   False, special)
    assert n >= 0
    return buf.raw[:n]


def print_tiny_spm():
    from llama_cpp import Llama
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tiny-spm.gguf")
        write_tiny_gguf(path)
        llm = Llama(model_path=path, vocab_only=True, verbose=False)
        print("// Pieces after the byte tokens (id 261 on).")
        for text, score in TINY_PIECES:
            print("{%s, %.1ff}," % (cpp_string(text), score))
        print("// Cases: text, special, add_bos, ids, llama.cpp's decode.")
        texts = [t.encode("utf-8") for t in TINY_TEXTS] + TINY_INVALID
        for special in (0, 1):
            for raw in texts:
                ids = llm.tokenize(raw, add_bos=False, special=bool(special))
                dec = detokenize(llm, ids, bool(special))
                print("{%s, %d, 0, {%s}, %s}," % (
                    cpp_string(raw), special,
                    ", ".join(str(i) for i in ids), cpp_string(dec)))
        for raw in [b"hello world", b"", b" x"]:
            ids = llm.tokenize(raw, add_bos=True, special=False)
            dec = detokenize(llm, ids, False)
            print("{%s, 0, 1, {%s}, %s}," % (
                cpp_string(raw), ", ".join(str(i) for i in ids),
                cpp_string(dec)))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.environ.get("KVSESSION_GEMMA3_MODEL",
                                                      DEFAULT_MODEL))
    ap.add_argument("--out", default=os.path.join(
        here, "..", "data", "tokenizer_vectors_gemma3.tsv"))
    ap.add_argument("--tiny-spm", action="store_true")
    args = ap.parse_args()
    if args.tiny_spm:
        print_tiny_spm()
        return 0
    rows = tokenize_rows(args.model, all_cases())
    write_tsv(args.out, rows)
    texts = len(set(raw for _, _, raw, _ in rows))
    print("wrote %d cases (%d distinct texts) to %s" % (
        len(rows), texts, os.path.normpath(args.out)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
