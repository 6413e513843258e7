"""Extend a genre with model-generated stories (kept apart in data/generated/).

    .venv/bin/python scripts/generate_stories.py fantasy 8 [--model NAME] [--seed 0]
"""

import argparse

import steerlab as sl
from steerlab.study.datagen import append_generated, generate_stories

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("genre")
parser.add_argument("n", type=int)
parser.add_argument("--model", default=None, help="any chat model steerlab can load (default: embedded)")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--temperature", type=float, default=1.0)
args = parser.parse_args()
rows = generate_stories(sl.load_model(args.model), args.genre, args.n, seed=args.seed, temperature=args.temperature)
print(f"wrote {len(rows)} rows to {append_generated(rows)}")
