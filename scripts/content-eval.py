#!/usr/bin/env python3
"""Content recovery per case: `eval` of each kept patched model on its own case's probes.

For each case of a suite whose patched model was kept (persona_eval.py with PE_KEEP=DIR), runs
`gguf-sleep eval --base MODEL --candidate DIR/CASE.gguf --prompt SYSTEM --questions PROBES`
and reports, over the prompted model's greedy replies to the probes, the KL recovery on every
reply token and on the content positions alone (reply tokens that spell a word of the prompt
the probe does not contain; and the first token of each such word alone), and the top-1
agreement there of the unprompted base and of the patched model with the prompted model
("content recovery": the share of the prompt's content tokens the patched model emits itself;
the prompted model's own share is 1).

Usage: content-eval.py BIN MODEL SUITE.json KEEP_DIR [--max-tokens N] [--json OUT]
"""
import argparse, json, os, subprocess, sys, tempfile


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary"), ap.add_argument("model"), ap.add_argument("suite"), ap.add_argument("keep")
    ap.add_argument("--max-tokens", default="48")
    ap.add_argument("--json", help="also write every case's eval report to this file")
    a = ap.parse_args()
    cases = [c for c in json.load(open(a.suite))["cases"]
             if os.path.exists(os.path.join(a.keep, c["name"] + ".gguf"))]
    if not cases:
        sys.exit(f"content-eval: no patched model of the suite's cases in {a.keep}")
    reports, rows = {}, []
    for c in cases:
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("\n".join(c["probes"]) + "\n")
            qfile = f.name
        out = subprocess.run([a.binary, "eval", "--base", a.model, "--candidate",
                              os.path.join(a.keep, c["name"] + ".gguf"), "--prompt", c["system"],
                              "--questions", qfile, "--max-tokens", a.max_tokens, "--no-locality",
                              "--json"], capture_output=True, text=True, timeout=1800)
        os.unlink(qfile)
        if out.returncode != 0:
            sys.exit(f"content-eval: eval failed on {c['name']}: {out.stderr.strip()[-300:]}")
        r = json.loads(out.stdout)
        reports[c["name"]] = r
        k, f1 = r.get("content"), r.get("content_first")
        if k:
            rows.append((k["top1_base"], k["top1_candidate"], k["recovery"],
                         f1["top1_base"], f1["top1_candidate"], f1["tokens"]))
        print(f"{c['name']}: KL recovery {r['recovery']:.3f}; content "
              + (f"{k['tokens']} tokens, KL recovery {k['recovery']:.3f}, top-1 base "
                 f"{k['top1_base']:.2f} -> patched {k['top1_candidate']:.2f}; first pieces "
                 f"{f1['tokens']}, top-1 {f1['top1_base']:.2f} -> {f1['top1_candidate']:.2f}"
                 if k else "none"),
              flush=True)
    if rows:
        n = len(rows)
        mean = lambda i: sum(r[i] for r in rows) / n
        print(f"mean over {n} cases with content: top-1 base {mean(0):.3f} -> patched "
              f"{mean(1):.3f}, content KL recovery {mean(2):.3f}; first pieces top-1 base "
              f"{mean(3):.3f} -> patched {mean(4):.3f}")
    allrec = [r["recovery"] for r in reports.values()]
    print(f"mean KL recovery over {len(allrec)} cases: {sum(allrec) / len(allrec):.3f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(reports, f, indent=1)


if __name__ == "__main__":
    main()
