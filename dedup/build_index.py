"""`openwit eval-index`: build one near-duplicate index file from several named eval sets.

    openwit eval-index --eval-set cifar10=data/cifar10-test --eval-set coco=data/coco-val.parquet \
        --output eval.idx

Each --eval-set is NAME=PATH; PATH is an image folder (class subfolders as labels), a WebDataset .tar or
a folder of them, a .parquet with an image column, or a .csv with a 'path' column (see dedup/eval_sets.py).
Items that cannot be decoded are counted per reason and reported, not fatal; an eval set with no usable
item at all is an error.
"""

import argparse
import os
import sys

from dedup import caption_index
from dedup.eval_index import DEFAULT_MIN_COLOUR, DEFAULT_MIN_EDGES, DEFAULT_MIN_PIXELS, DEFAULT_RADIUS, EvalIndex
from dedup.eval_sets import parse_eval_set_arg, read_eval_set
from openwit.errors import InputError, parse_command_line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="openwit eval-index", description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval-set", action="append", required=True, metavar="NAME=PATH",
                    help="an eval set to index (repeat for several)")
    ap.add_argument("--output", required=True, help="index file to write (local or gs://, s3://, ...)")
    ap.add_argument("--radius", type=int, default=DEFAULT_RADIUS,
                    help="largest pHash Hamming distance retrieved as a candidate, which is then verified "
                         f"(default {DEFAULT_RADIUS})")
    ap.add_argument("--min-colour", type=float, default=DEFAULT_MIN_COLOUR,
                    help="smallest colour correlation (-1..1) of a candidate with its best-aligned region of the "
                         f"eval image (default {DEFAULT_MIN_COLOUR})")
    ap.add_argument("--min-pixels", type=float, default=DEFAULT_MIN_PIXELS,
                    help="smallest share (0..1) of the candidate's pixels that must agree with the aligned eval "
                         f"image, after one gain and offset (default {DEFAULT_MIN_PIXELS})")
    ap.add_argument("--min-edges", type=float, default=DEFAULT_MIN_EDGES,
                    help="smallest share (0..1) of the aligned eval image's strong edges the candidate must have "
                         f"(default {DEFAULT_MIN_EDGES})")
    ap.add_argument("--caption-max-distance", type=float, default=caption_index.DEFAULT_MAX_DISTANCE,
                    help="largest 1-Jaccard caption distance reported as overlap "
                         f"(default {caption_index.DEFAULT_MAX_DISTANCE})")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="processes that decode and hash eval images (default: one per core)")
    args = parse_command_line(ap, argv)
    if not 1 <= args.workers <= 256:
        raise InputError(f"--workers {args.workers}: give a number of processes between 1 and 256")
    if not 0 <= args.radius <= 32:
        raise InputError(f"--radius {args.radius}: give a Hamming distance between 0 and 32")
    if not -1.0 <= args.min_colour <= 1.0:
        raise InputError(f"--min-colour {args.min_colour}: give a correlation between -1 and 1")
    for option, value in (("--min-pixels", args.min_pixels), ("--min-edges", args.min_edges)):
        if not 0.0 <= value <= 1.0:
            raise InputError(f"{option} {value}: give a share between 0 and 1")
    if not 0.0 <= args.caption_max_distance < 1.0:
        raise InputError(f"--caption-max-distance {args.caption_max_distance}: give a value in [0, 1)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    named = [parse_eval_set_arg(v) for v in args.eval_set]
    index, report = EvalIndex.build(((name, read_eval_set(path)) for name, path in named),
                                    radius=args.radius, caption_max_distance=args.caption_max_distance,
                                    min_colour=args.min_colour, min_pixels=args.min_pixels,
                                    min_edges=args.min_edges, workers=args.workers)
    for name, path in named:
        rejected = sum(report.rejected[name].values())
        if report.items[name] == 0:
            detail = "; ".join(report.examples[name]) or "no items"
            raise InputError(f"eval set {name!r} ({path}): no usable image among {rejected} items ({detail})")
        print(f"{name}: {report.items[name]} items, {report.hashes[name]} hashes, {report.captions[name]} "
              f"captions, {rejected} rejected {dict(report.rejected[name]) or ''}".rstrip(), file=sys.stderr)
        for example in report.examples[name]:
            print(f"  rejected {example}", file=sys.stderr)
        # Indexed, but by exact pixels and captions only: a user should know these are not near-dup checked.
        unhashed = sum(report.unhashed[name].values())
        print(f"  {unhashed} without a perceptual hash (exact pixels and captions only) "
              f"{dict(report.unhashed[name]) or ''}".rstrip(), file=sys.stderr)
        for example in report.unhashed_examples[name]:
            print(f"  unhashed {example}", file=sys.stderr)
    index.save(args.output)
    print(f"wrote {args.output}: {len(index)} eval items from {len(named)} eval sets", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
