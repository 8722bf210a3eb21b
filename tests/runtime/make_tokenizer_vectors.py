#!/usr/bin/env python3
"""Writes tests/data/tokenizer_vectors.tsv: reference tokenizations of the
default model's vocab by llama.cpp (through llama-cpp-python).

Each line: <special 0|1> TAB <hex of the UTF-8 text> TAB <space-separated ids>.
Hex keeps any bytes (tabs, newlines, CR) intact.

Usage:
  make_tokenizer_vectors.py [--model GGUF] [--out TSV]
  make_tokenizer_vectors.py --pre-variants   # C++ cases for other pre types
  make_tokenizer_vectors.py --invalid-utf8   # C++ cases for broken UTF-8

--pre-variants re-tokenizes a subset with the same vocab under
tokenizer.ggml.pre = "llama-bpe" and "qwen2" (a vocab-only copy of the GGUF
with that key changed) and prints them as C++ initializers for
tokenizer_e2e_test.cc. --invalid-utf8 does the same for byte strings that
are not valid UTF-8 (llama.cpp reads each offending byte as U+FFFD; it
aborts on 4-byte forms past U+10FFFF and decodes overlongs leniently, so
those are left out).

Needs: pip install llama-cpp-python gguf
"""

import argparse
import os
import sys
import tempfile

DEFAULT_MODEL = "/tmp/model/SmolLM2-135M-Instruct.Q4_1.gguf"


def plain_cases():
    """Texts tokenized with special=False."""
    c = []
    # English prose and punctuation.
    c += [
        "Hello world",
        "Hello, world!",
        "The capital of France is",
        "Hello, we can use",
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
        "The quick brown fox jumps over the lazy dog.",
        "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG!",
        "a",
        "A",
        " ",
        "Once upon a time, in a land far, far away... there lived a king.",
        "Wait -- what?! No way; that's (almost) impossible: 100%.",
        "He said \"hi\" and she said 'bye'.",
        "Curly \u201cquotes\u201d and \u2018single\u2019 ones \u2014 with dashes \u2013 and\u2026",
        "semi;colon:colon,comma.period!bang?question",
        "!!!???...,,,;;;",
        "@#$%^&*()_+-=[]{}|\\:;\"'<>,.?/~`",
        "snake_case and camelCase and PascalCase and kebab-case",
        "e.g. i.e. etc. Mr. Dr. St. U.S.A.",
        "Don't stop believing",
        "rock'n'roll",
        "O'Reilly's book",
        "the '90s",
        "' s",
        "'",
        "''",
        "'''",
    ]
    # Contractions in every case (case-sensitive in the GPT-2 regex).
    for suffix in ["s", "t", "re", "ve", "m", "ll", "d"]:
        for variant in dict.fromkeys([suffix, suffix.upper(),
                                      suffix.capitalize()]):
            c.append("it'%s fine" % variant)
    c += ["WE'LL SEE", "We'Ll see", "I'M HERE", "YOU'RE", "THEY'VE", "HE'D",
          "can't won't shouldn't", "CAN'T WON'T", "y'all'd've"]
    # Whitespace.
    c += [
        "  leading spaces",
        "trailing spaces   ",
        "   both   ",
        "  multiple   spaces",
        "a  b   c    d     e",
        "\ttab",
        "tab\there",
        "tabs\t\t\tand spaces  \t  mixed",
        "\n",
        "\n\n",
        "\n\n\n\n",
        "line1\nline2",
        "line1\n\nline2\n\n\nline3",
        "windows\r\nline\r\nendings",
        "\r",
        "\r\n\r\n",
        " \n ",
        "  \n  \n  ",
        "end with newline\n",
        "\nstart with newline",
        "word \n",
        "word\n \nword",
        "x" + " " * 40 + "y",
        " " * 17,
        "\t" * 9,
        "\n" * 13,
        "   \t\n\r\n  ",
        "user\nHello",
        "assistant\n",
        "indent\n    four\n        eight\n\tand tab",
    ]
    # Unicode whitespace and invisible characters.
    c += [
        "non\u00a0breaking\u00a0space",
        "ideographic\u3000space",
        "em\u2003space and thin\u2009space",
        "line\u2028separator",
        "para\u2029separator",
        "next\u0085line",
        "zero\u200bwidth",
        "zw\u200cnj and zw\u200dj",
        "\ufeffbom at start",
        "soft\u00adhyphen",
        "narrow\u202fnbsp",
        "mongolian\u180evowel",
        "word\u00a0 \u00a0mixed",
    ]
    # Digits and numbers.
    c += [
        "0",
        "7",
        "42",
        "123",
        "1234",
        "12345",
        "1234567890",
        "3.14159265358979323846",
        "1,000,000",
        "1 000 000",
        "-273.15",
        "+1 (555) 123-4567",
        "6.022e23 and 1.6E-19",
        "0x1F600 0b1010 0o755",
        "2024-01-15T10:30:00Z",
        "v1.2.3-beta.4",
        "Hello world! 123",
        "abc123def456",
        "99 bottles of beer",
        "9" * 100,
        "31415926535897932384626433832795028841971693993751058209749445923",
        "\uff11\uff12\uff13 fullwidth",
        "\u0663\u0664\u0665 arabic-indic",
        "\u0967\u0968\u0969 devanagari digits",
        "x\u00b2 + y\u00b3 = z\u00b9",
        "\u00bd \u00bc \u00be fractions",
        "Chapter \u216b and \u2167",
        "\u2460\u2461\u2462 circled",
        "$1.99, \u20ac2,50, \u00a33, \u00a5400, \u20b915",
        "50% off!!! 100 % sure",
    ]
    # Latin with diacritics, Greek, Cyrillic.
    c += [
        "Caf\u00e9 d\u00e9j\u00e0 vu.",
        "cafe\u0301 (decomposed)",
        "na\u00efve co\u00f6perate fa\u00e7ade",
        "\u00c5ngstr\u00f6m \u00d8resund \u00c6ther",
        "Stra\u00dfe \u1e9e gro\u00df",
        "Ti\u1ebfng Vi\u1ec7t c\u00f3 d\u1ea5u",
        "\u0141\u00f3d\u017a \u017b\u00f3\u0142w",
        "\u0394\u03b7\u03bc\u03bf\u03ba\u03c1\u03b1\u03c4\u03af\u03b1 \u03b5\u03af\u03bd\u03b1\u03b9",
        "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u041a\u0430\u043a \u0434\u0435\u043b\u0430?",
        "\u0423\u043a\u0440\u0430\u0457\u043d\u0441\u044c\u043a\u0430 \u043c\u043e\u0432\u0430",
        "\u0130stanbul \u0131\u015f\u0131k",
        "\u0301 lone combining acute at start",
        "\u0308\u0308\u0308 stacked marks",
        "a\u0300\u0301\u0302\u0303\u0304 many marks",
        "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319algo",
    ]
    # CJK, Japanese, Korean.
    c += [
        "\u4f60\u597d\uff0c\u4e16\u754c\uff01",
        "\u6211\u7231\u5317\u4eac\u5929\u5b89\u95e8",
        "\u4eba\u5de5\u667a\u80fd\u662f\u8ba1\u7b97\u673a\u79d1\u5b66\u7684\u4e00\u4e2a\u5206\u652f\u3002",
        "\u7e41\u9ad4\u4e2d\u6587\u6e2c\u8a66",
        "\u3053\u3093\u306b\u3061\u306f\u4e16\u754c",
        "\u30ab\u30bf\u30ab\u30ca\u3068\u3072\u3089\u304c\u306a\u3068\u6f22\u5b57",
        "\u6771\u4eac\u30bf\u30ef\u30fc\u306f333\u30e1\u30fc\u30c8\u30eb\u3067\u3059\u3002",
        "\uff8a\uff9d\uff76\uff78\uff76\uff80\uff76\uff85",
        "\u3002\u3001\u300c\u300d\u300e\u300f\u30fb",
        "\uc548\ub155\ud558\uc138\uc694 \uc138\uacc4",
        "\ud55c\uad6d\uc5b4\ub294 \uc544\ub984\ub2f5\uc2b5\ub2c8\ub2e4.",
        "\u1100\u1161\u11a8 jamo",
        "\u3131\u3134\u3137 compat jamo",
        "mixed \u4e2d\u6587 and English \u65e5\u672c\u8a9e and \ud55c\uad6d\uc5b4",
        "\ud840\udc0b".encode("utf-16", "surrogatepass").decode("utf-16"),
        "\U0002a6d6 ext-B",
    ]
    # Right-to-left and Indic scripts.
    c += [
        "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
        "\u0627\u0644\u0644\u064f\u0651\u063a\u064e\u0629\u064f \u0627\u0644\u0639\u064e\u0631\u064e\u0628\u0650\u064a\u064e\u0651\u0629\u064f",
        "\u0639\u062f\u062f \u0661\u0662\u0663 \u0648 123",
        "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
        "\u200fRTL mark\u200e LTR mark",
        "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
        "\u0939\u093f\u0928\u094d\u0926\u0940 \u092d\u093e\u0937\u093e",
        "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a",
        "\u1298\u1295 \u12a0\u121b\u122d\u129b",
        "\u10e5\u10d0\u10e0\u10d7\u10e3\u10da\u10d8",
        "\u0532\u0561\u0580\u0587",
        "\u0ba4\u0bae\u0bbf\u0bb4\u0bcd",
    ]
    # Emoji.
    c += [
        "\U0001f600",
        "\U0001f600\U0001f603\U0001f604",
        "I love \U0001f355 and \U0001f363!",
        "\U0001f44d\U0001f3fd thumbs up medium skin",
        "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 family",
        "\U0001f469\u200d\U0001f4bb coder",
        "\U0001f3f3\ufe0f\u200d\U0001f308 flag",
        "\U0001f1fa\U0001f1f8\U0001f1ef\U0001f1f5\U0001f1e9\U0001f1ea",
        "1\ufe0f\u20e3 keycap #\ufe0f\u20e3",
        "\u2764\ufe0f heart \u2764 text heart",
        "\u2603\u2600\u2601",
        "emoji\U0001f680rocket\U0001f680",
        " \U0001f525 \U0001f525  \U0001f525",
        "\U0001f9d1\U0001f3ff\u200d\U0001f91d\u200d\U0001f9d1\U0001f3fb",
        "\U0001fae0 newer emoji",
    ]
    # Symbols and box drawing.
    c += [
        "\u2200x \u2208 \u211d: x\u00b2 \u2265 0 \u2227 \u2203y \u2209 \u2205",
        "\u222b\u2080\u00b9 f(x) dx \u2248 \u03c0/4",
        "\u2192 \u2190 \u2191 \u2193 \u21d2 \u21d4",
        "\u250c\u2500\u2500\u2510\n\u2502  \u2502\n\u2514\u2500\u2500\u2518",
        "\u2588\u2593\u2592\u2591",
        "\u2122 \u00ae \u00a9 \u2117",
        "\u266a\u266b \u2660\u2663\u2665\u2666",
        "\ue000 private use \uf8ff",
        "\x7f delete and \x1b[31m escape",
        "bell\x07 and backspace\x08",
        "nul\x00byte",
    ]
    # Code.
    c += [
        "def f(x):\n    return x * 2\n",
        "import numpy as np\nprint(np.arange(10).sum())",
        "class Foo:\n    def __init__(self):\n        self.x = 1  # comment\n",
        "if (x != nullptr && y->z[3] >= 0) { return -1; }",
        "#include <vector>\nint main() { std::vector<int> v{1, 2, 3}; }",
        "template <typename T> T max(T a, T b) { return a > b ? a : b; }",
        "const add = (a, b) => a + b; console.log(`sum: ${add(1, 2)}`);",
        "fn main() { let v: Vec<u8> = vec![0; 16]; println!(\"{:?}\", v); }",
        "func main() {\n\tfmt.Println(\"hello\")\n}",
        "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;",
        "<html><body><p class=\"x\">Hi &amp; bye</p></body></html>",
        "{\"key\": [1, 2.5, true, null], \"nested\": {\"a\": \"b\"}}",
        "#!/bin/bash\nfor f in *.txt; do echo \"$f\"; done | grep -v '^#' > out.log 2>&1",
        "^[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\\.[a-zA-Z]{2,}$",
        "x += 1; y -= 2; z *= 3; w /= 4; a %= 5; b **= 6; c //= 7",
        "a && b || !c ?? d ?. e",
        "    indented code block\n        more indent",
        "/* block comment */ // line comment\n# python comment",
        "public static void main(String[] args) throws Exception {}",
        "$ git commit -m \"fix: handle edge case\" && git push origin main",
        "\\documentclass{article}\n\\begin{equation} E = mc^2 \\end{equation}",
        "| a | b |\n|---|---|\n| 1 | 2 |",
        "```python\nprint('hi')\n```",
        "x=1;y=2;z=x+y",
        "arr[i][j] = arr[i-1][j-1] + 1;",
        "<div>\n\t<span>{{ value }}</span>\n</div>",
        "key: value\nlist:\n  - a\n  - b",
        "0xDEADBEEF & 0xFF == 0xEF",
        "C:\\Users\\name\\Documents\\file.txt",
    ]
    # URLs, e-mails, paths.
    c += [
        "https://www.example.com/path/to/page?query=1&other=two#frag",
        "http://localhost:8080/api/v1/users/42",
        "Visit https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct now",
        "mailto:someone@example.org",
        "user.name+tag@sub.example.co.uk",
        "ftp://files.example.net/pub/file.tar.gz",
        "/usr/local/bin/python3 --version",
        "~/projects/my-repo/src/main.rs",
        "www.google.com",
        "https://例え.jp/パス",
    ]
    # Special-token look-alikes as plain text.
    c += [
        "<|im_start|>",
        "<|im_end|>",
        "<|im_end",
        "<|im_start|>user\nHello<|im_end|>\n",
        "<|endoftext|>",
        "text<|endoftext|>text",
        "<repo_name>",
        "<file_sep>foo",
        "< |im_start| >",
        "<||>",
        "<|",
        "|>",
        "<|im_start|><|im_start|>",
        "<s></s>",
        "[INST] hi [/INST]",
        "<|begin_of_text|><|start_header_id|>",
    ]
    # Mixed and odd.
    c += [
        "English, \u65e5\u672c\u8a9e, \u0627\u0644\u0639\u0631\u0628\u064a\u0629, \u0420\u0443\u0441\u0441\u043a\u0438\u0439 \U0001f30d",
        "CamelCase\u4e2d\u6587Mixed123\u65e5\u672c",
        "ALLCAPS lowercase MiXeD",
        "a" * 300,
        "ab" * 150,
        "supercalifragilisticexpialidocious",
        "pneumonoultramicroscopicsilicovolcanoconiosis",
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do "
        "eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim "
        "ad minim veniam, quis nostrud exercitation ullamco laboris.",
        "...",
        "----------",
        "==========",
        "**bold** _italic_ `code` ~~strike~~",
        "# Heading\n\n- item 1\n- item 2\n\n1. first\n2. second",
        "Q: What is 2+2?\nA: 4.",
        "\u00bfQu\u00e9 tal? \u00a1Muy bien!",
        "\u00ab guillemets \u00bb and \u201e German quotes\u201c",
        "tab\tseparated\tvalues\n1\t2\t3",
        "comma,separated,values\n1,2,3",
        "multi\n\n\n\nparagraph\n\n\n\ntext",
        "a\u00a0",
        " \u00a0",
        "\u00a0\u00a0x",
        "x \u3000y",
        "\U0001f600 \U0001f600",
        "100\U0001f4af",
        "\u0661\u0662x\u0663",
        "I'm 25 years old and I've lived in NYC since '09.",
        "It's 3:45pm on Jan. 5th, 2024 -- isn't it?",
        "The price is $19.99 (was $29.99).",
        "e-mail: test@test.com, phone: +44 20 7946 0958",
        "\"Quoted\" 'single' `back`",
        "sp ace d  ou t   te xt",
        " leading single space",
        "trailing single space ",
        "\u3042",
        "\u00e9",
        "\u00ff\u00fe\u00fd",
        "\u0100\u0101\u0120\u0121",
        "\u010a\u0120 byte-level look-alikes \u0120hello",
    ]
    return c


def special_cases():
    """Texts tokenized with special=True (control tokens parsed)."""
    return [
        "<|im_start|>user\nHello<|im_end|>\n",
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
        "trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?"
        "<|im_end|>\n<|im_start|>assistant\n",
        "<|endoftext|>",
        "<|im_end|><|im_start|>",
        "abc<|im_end|>def",
        "<|im_start|> spaced <|im_end|>  ",
        "<|im_end",
        "<|im_start|<|im_end|>>",
        "<repo_name>kvsession<file_sep>main.cc\nint main() {}<|endoftext|>",
        "<jupyter_start><jupyter_code>print(1)<jupyter_output>1",
        "plain text without specials",
        "\n<|im_start|>\n",
        "\U0001f600<|im_end|>\U0001f600",
        "<|im_start|><|im_start|><|im_start|>",
    ]


def tokenize_all(model_path, cases):
    from llama_cpp import Llama
    llm = Llama(model_path=model_path, vocab_only=True, verbose=False)
    out = []
    for special, text in cases:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False,
                           special=bool(special))
        out.append((special, text, ids))
    return out


def write_tsv(path, rows):
    with open(path, "w", encoding="ascii", newline="\n") as f:
        for special, text, ids in rows:
            f.write("%d\t%s\t%s\n" % (special, text.encode("utf-8").hex(),
                                      " ".join(str(i) for i in ids)))


def copy_with_pre(src, dst, pre):
    """Vocab-only copy of `src` (metadata, no tensors) with another pre."""
    import gguf
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"]
    arch = bytes(arch.parts[arch.data[0]]).decode()
    writer = gguf.GGUFWriter(dst, arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        vtype = field.types[0]
        if name == "tokenizer.ggml.pre":
            writer.add_string(name, pre)
        elif vtype == gguf.GGUFValueType.ARRAY:
            sub = field.types[-1]
            if sub == gguf.GGUFValueType.STRING:
                vals = [bytes(field.parts[i]).decode("utf-8") for i in field.data]
            else:
                vals = [field.parts[i].tolist()[0] for i in field.data]
            writer.add_array(name, vals)
        elif vtype == gguf.GGUFValueType.STRING:
            writer.add_string(name, bytes(field.parts[field.data[0]]).decode())
        else:
            writer.add_key_value(name, field.parts[field.data[0]][0], vtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def cpp_string(text):
    """C++ literal of a str's UTF-8 (or of bytes); 3-digit octal escapes
    never run on into the next character."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    named = {0x0A: "\\n", 0x09: "\\t", 0x0D: "\\r", 0x5C: "\\\\",
             0x22: '\\"'}
    out = []
    for b in data:
        if b in named:
            out.append(named[b])
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append("\\%03o" % b)
    return '"' + "".join(out) + '"'


def print_pre_variants(model_path):
    # C++ string literals end at NUL, so leave those out.
    subset = [t for t in plain_cases() if len(t) < 120 and "\0" not in t]
    for pre in ["llama-bpe", "qwen2"]:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "vocab.gguf")
            copy_with_pre(model_path, path, pre)
            rows = tokenize_all(path, [(0, t) for t in subset])
        print("// pre = %s" % pre)
        for _, text, ids in rows:
            print("{%s, {%s}}," % (cpp_string(text),
                                    ", ".join(str(i) for i in ids)))


INVALID_UTF8 = [
    b"a\xffb",
    b"\x80 stray continuation",
    b"truncated \xe2\x82",
    b"\xe2\x82\xac\xe2\x82 euro and a half",
    b"\xc3\xa9\xc3",
    b"bad lead \xf8\x88\x80\x80\x80 five bytes",
    b"\xfe\xff BOM-ish bytes",
    b"\xf0\x9f\x98 cut emoji\xf0\x9f\x98\x80",
]


def print_invalid_utf8(model_path):
    from llama_cpp import Llama
    llm = Llama(model_path=model_path, vocab_only=True, verbose=False)
    for raw in INVALID_UTF8:
        ids = llm.tokenize(raw, add_bos=False, special=False)
        print("{%s, {%s}}," % (cpp_string(raw),
                                ", ".join(str(i) for i in ids)))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.environ.get("KVSESSION_MODEL",
                                                      DEFAULT_MODEL))
    ap.add_argument("--out", default=os.path.join(
        here, "..", "data", "tokenizer_vectors.tsv"))
    ap.add_argument("--pre-variants", action="store_true")
    ap.add_argument("--invalid-utf8", action="store_true")
    args = ap.parse_args()
    if args.pre_variants:
        print_pre_variants(args.model)
        return 0
    if args.invalid_utf8:
        print_invalid_utf8(args.model)
        return 0
    cases = [(0, t) for t in plain_cases()] + [(1, t) for t in special_cases()]
    seen = set()
    unique = []
    for case in cases:
        if case not in seen:
            seen.add(case)
            unique.append(case)
    rows = tokenize_all(args.model, unique)
    write_tsv(args.out, rows)
    print("wrote %d cases to %s" % (len(rows), os.path.normpath(args.out)),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
