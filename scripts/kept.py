"""What the scripts over kept patched models share (renderings.py, turns.py): their command
line, the shared persona scorer, and the suite's cases whose patched model was kept
(persona_eval.py with PE_KEEP=DIR)."""
import argparse, importlib.util, json, os, sys

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(doc):
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("binary"), ap.add_argument("model"), ap.add_argument("suite"), ap.add_argument("keep")
    ap.add_argument("--scorer", default=os.path.join(HERE, "../../shared/eval/persona_eval.py"))
    ap.add_argument("--json", help="also write every reply and score to this file")
    return ap.parse_args()


def load_scorer(path):
    spec = importlib.util.spec_from_file_location("persona_eval", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def kept_cases(suite, keep, who):
    cases = [c for c in json.load(open(suite))["cases"]
             if os.path.exists(os.path.join(keep, c["name"] + ".gguf"))]
    if not cases:
        sys.exit(f"{who}: no kept patched models in {keep} (run persona_eval.py with PE_KEEP)")
    return cases
