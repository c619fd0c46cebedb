#!/usr/bin/env python3
"""Persona over a long chat: behaviour at turns 1-8, prompted and patched side by side.

A chat is held over the fixed user turns of data/turns.txt (generic requests written without
regard to any suite), the model's own replies kept in the context. At each turn t (1 = no
earlier exchange, t = after t-1 of them) every probe of a case is asked and scored by the
case's rule. The prompted model (the base model with the case's system prompt) is known to
drift from its prompt as a chat grows; the patched model (no system prompt) carries it in its
weights. For each case whose patched model was kept (persona_eval.py with PE_KEEP=DIR).

Usage: turns.py BIN MODEL SUITE.json KEEP_DIR [--scorer persona_eval.py] [--json OUT]
Prints a line per case and turn, then the mean over cases per turn.
"""
import json, os, subprocess, sys, tempfile

from kept import kept_cases, load_scorer, parse_args

HERE = os.path.dirname(os.path.abspath(__file__))
TURNS = os.path.join(HERE, "../data/turns.txt")


def by_turn(binary, model, probes, max_tokens, system=None):
    """{turn: [reply per probe]} for turns 1..len(turns)+1."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(probes) + "\n")
        qfile = f.name
    cmd = [binary, "generate", model, "--user-file", qfile, "--history-file", TURNS,
           "--every-turn", "--max-tokens", str(max_tokens), "--json"]
    if system is not None:
        cmd += ["--system", system]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    os.unlink(qfile)
    if out.returncode != 0:
        sys.exit(f"turns: generate failed: {out.stderr.strip()[-400:]}")
    got = {}
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            got.setdefault(r["turn"], []).append(r["reply"])
    return got


def main():
    a = parse_args(__doc__)
    pe = load_scorer(a.scorer)
    cases = kept_cases(a.suite, a.keep, "turns")
    record, curves = [], {"prompted": {}, "patched": {}}
    for c in cases:
        runs = {
            "prompted": by_turn(a.binary, a.model, c["probes"], pe.MAX_TOKENS, c["system"]),
            "patched": by_turn(a.binary, os.path.join(a.keep, c["name"] + ".gguf"), c["probes"],
                               pe.MAX_TOKENS),
        }
        for side, got in runs.items():
            for t, replies in sorted(got.items()):
                s = [pe.score(c["score"], r) for r in replies]
                curves[side].setdefault(t, []).append(sum(s) / len(s))
                record.append({"case": c["name"], "side": side, "turn": t, "replies": replies,
                               "scores": s})
        line = " ".join(f"t{t}={sum(pe.score(c['score'], r) for r in runs['prompted'][t]) / len(c['probes']):.2f}/"
                        f"{sum(pe.score(c['score'], r) for r in runs['patched'][t]) / len(c['probes']):.2f}"
                        for t in sorted(runs["prompted"]))
        print(f"{c['name']}: prompted/patched {line}", flush=True)
    for t in sorted(curves["prompted"]):
        p, q = curves["prompted"][t], curves["patched"][t]
        print(f"turn {t}: prompted {sum(p) / len(p):.3f} patched {sum(q) / len(q):.3f} ({len(p)} cases)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
