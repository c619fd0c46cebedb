#!/usr/bin/env python3
"""Print N calibration questions, one per line, for `gguf-sleep patch --calib FILE`.

The first 134 are the built-in set (data/calibration.txt); the rest are generated from question
templates × everyday topics, in a fixed shuffled order (the same N gives the same file), skipping any
question of the held-out evaluation set (data/heldout.txt). Used for the calibration-size sweep.

Usage: scripts/calib-questions.py N > questions.txt
"""
import itertools
import pathlib
import random
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOPICS = """the moon|volcanoes|coffee|trains|the rainforest|chess|honeybees|bread|rainbows|the internet
|music|soccer|gardening|the desert|whales|electricity|birthdays|snow|libraries|bicycles|the ocean tides
|dinosaurs|pizza|thunderstorms|painting|robots|the pyramids|penguins|camping|clocks|magnets|the human heart
|recycling|kites|cheese|earthquakes|owls|the violin|rivers|money|the alphabet|bridges|sunflowers
|video games|the Olympics|chocolate|glaciers|spiders|knitting|the solar system|medicine|castles|tigers
|umbrellas|batteries|islands|cooking rice|the weather|friendship|mathematics|poetry|farming|rockets
|submarines|the brain|mushrooms|tea|lighthouses|deserts at night|jazz|origami|hiking|the wind|bees and flowers
|computers|photography|the Arctic|fireworks|swimming|history|maps|the sun|cars|apples|elephants|shoes
|mountains|clouds|languages|holidays|the city|sleep|exercise|birds|pirates|space travel|the post office""".replace("\n", "").split("|")
TEMPLATES = [
    "Tell me something interesting about {t}.",
    "How would you explain {t} to a child?",
    "What do you think about {t}?",
    "Can you give me a fun fact about {t}?",
    "Why do people like {t}?",
    "Write two sentences about {t}.",
    "What is the most important thing to know about {t}?",
    "Do you have a story about {t}?",
    "What questions do people often ask about {t}?",
    "How has {t} changed over time?",
]


def main():
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit("usage: calib-questions.py N")
    n = int(sys.argv[1])
    base = [q.strip() for q in (ROOT / "data/calibration.txt").read_text().splitlines() if q.strip()]
    held = {q.strip().lower() for q in (ROOT / "data/heldout.txt").read_text().splitlines()}
    out, seen = [], set()
    gen = [tpl.format(t=t.strip()) for t, tpl in itertools.product(TOPICS, TEMPLATES)]
    random.Random(0).shuffle(gen)  # varied topics and forms at any N
    for q in itertools.chain(base, gen):
        key = q.lower()
        if key in held or key in seen:
            continue
        seen.add(key)
        out.append(q)
        if len(out) == n:
            break
    if len(out) < n:
        sys.exit(f"calib-questions.py: only {len(out)} distinct questions available")
    print("\n".join(out))


if __name__ == "__main__":
    main()
