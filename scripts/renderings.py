#!/usr/bin/env python3
"""Persona suite through the ways runtimes render a chat turn.

A patched model is fitted with no system prompt, rendered by the model's own chat template. Other
runtimes render a turn their own way. For each case whose patched model was kept (persona_eval.py
with PE_KEEP=DIR), this scores the patched model's replies under each rendering:

  template   the model's jinja template with no system message (`generate`; also Ollama's
             Modelfile as `patch --ollama` writes it, and LM Studio with its system box empty)
  empty      a system turn with empty text (`generate --system ""`)
  generic    a generic system prompt many users keep: "You are a helpful assistant."
  node       node-llama-cpp's own chat wrapper (ChatML for SmolLM2) with no system turn
             (runtimes/node/generate.mjs; scripts/setup.sh installs it)

Recovery = (patched - base) / (prompted - base), with base and prompted scored under the
template rendering (the suite's own reference), each case capped at 1 in the mean.

Usage: renderings.py BIN MODEL SUITE.json KEEP_DIR [--scorer persona_eval.py] [--json OUT]
"""
import json, os, subprocess, sys, tempfile

from kept import kept_cases, load_scorer, parse_args

HERE = os.path.dirname(os.path.abspath(__file__))
GENERIC = "You are a helpful assistant."
RENDERINGS = ["template", "empty", "generic", "node"]


def node_replies(model, probes, max_tokens):
    spec = {"model": model, "max_tokens": max_tokens, "items": [{"user": p} for p in probes]}
    out = subprocess.run(["node", os.path.join(HERE, "../runtimes/node/generate.mjs")],
                         input=json.dumps(spec), capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        sys.exit(f"renderings: node-llama-cpp failed: {out.stderr.strip()} (run scripts/setup.sh)")
    return [r["text"] for r in json.loads(out.stdout)["replies"]]


def replies(pe, binary, model, probes, rendering):
    if rendering == "template":
        return pe.generate(binary, model, probes)
    if rendering == "empty":
        return pe.generate(binary, model, probes, system="")
    if rendering == "generic":
        return pe.generate(binary, model, probes, system=GENERIC)
    return node_replies(model, probes, pe.MAX_TOKENS)


def main():
    a = parse_args(__doc__)
    pe = load_scorer(a.scorer)
    cases = kept_cases(a.suite, a.keep, "renderings")
    rows, record = {r: [] for r in RENDERINGS}, []
    for c in cases:
        probes, rule = c["probes"], c["score"]
        mean = lambda rs: sum(pe.score(rule, r) for r in rs) / len(rs)
        sb = mean(pe.generate(a.binary, a.model, probes))
        sp = mean(pe.generate(a.binary, a.model, probes, system=c["system"]))
        line = [f"{c['name']}: base {sb:.2f} prompted {sp:.2f}"]
        patched = os.path.join(a.keep, c["name"] + ".gguf")
        for r in RENDERINGS:
            got = replies(pe, a.binary, patched, probes, r)
            sq = mean(got)
            rec = (sq - sb) / (sp - sb) if sp - sb > 0 else 0.0
            rows[r].append(rec)
            line.append(f"{r} {sq:.2f} ({rec:.2f})")
            record.append({"case": c["name"], "rendering": r, "score": sq, "recovery": rec,
                           "replies": got})
        print(" | ".join(line), flush=True)
    for r in RENDERINGS:
        capped = sum(min(1.0, x) for x in rows[r]) / len(rows[r])
        print(f"{r}: mean behaviour recovery, each case capped at 1: {capped:.3f} over {len(rows[r])} cases")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(record, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
