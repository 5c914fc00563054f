"""Near-duplicate detection against evaluation sets, and the CLIP paper's overlap report.

Where things happen:
- eval_sets.py: read an eval set (image folder, WebDataset tars, Parquet, CSV of paths) as items with ids.
- image_hashes.py: the image signals: pixel SHA-256, pHash of the sample (letterbox bars trimmed), and the
  pHash of stored variants of each eval image (mirror, square center crop, 95%/90% crops on a 5x5 grid).
- hamming_index.py: multi-index Hamming search over the stored pHashes (exactly brute force, compiled):
  retrieval of candidates only.
- verify.py: the second stage: each candidate pair is verified on pixels (colour correlation of the sample
  with every aligned crop/flip of the eval image's stored 32 px thumbnail, AND the correlation of their grey
  edges on the same regions) before it counts as a match.
- caption_index.py: caption copies by MinHash LSH over word bigrams, confirmed by exact Jaccard.
- eval_index.py: the index file (`EvalIndex.build/save/load`) and `lookup` (one sample) /
  `lookup_many` (a shard's samples at once, the fast path) returning `OverlapMatch` records.
- build_index.py: `openwit eval-index --eval-set NAME=PATH ... --output eval.idx`.
- overlap.py: overlap records written to OUT/overlap/{eval_set}.parquet.

Thresholds (pHash retrieval radius 12 bits, verification scores: colour 0.93 and
structure 0.55; caption distance 0.5) and their measured
recall and false-positive rates are in bench/RESULTS.md, "Eval-set decontamination" and "Retrieve, then verify".
"""
