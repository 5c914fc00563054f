"""Near-duplicate detection against evaluation sets, and the CLIP paper's overlap report.

Where things happen:
- eval_sets.py: read an eval set (image folder, WebDataset tars, Parquet, CSV of paths) as items with ids.
- image_hashes.py: the image signals: pixel SHA-256, pHash of the sample (letterbox bars trimmed), and the
  pHash of stored variants of each eval image (mirror, square center crop, 95%/90% crops on a 5x5 grid);
  images whose colours differ mostly in hue are hashed along their main colour axis too.
- hamming_index.py: multi-index Hamming search over the stored pHashes (exactly brute force, compiled):
  retrieval of candidates only.
- verify.py: the second stage: a stored 8x8 colour signature per eval item ranks a sample's candidates in
  one matrix product (the pre-filter; the best 16 scoring 0.8+ go on), then each is verified on pixels
  before it counts as a match: the sample is aligned on the eval image's stored 64 px thumbnail (colour
  correlation over every crop/flip a copy can show, then refined), and at the aligned region most of its
  pixels must agree in colour and hue (after one gain and offset) AND most of the region's strong edges must be
  found, in every ninth of it too (a plain region with no edges proves nothing), and none of its details may be
  missing where the sample is plain.
- caption_index.py: caption copies by MinHash LSH over word bigrams, confirmed by exact Jaccard.
- eval_index.py: the index file (`EvalIndex.build/save/load`) and `lookup` (one sample) /
  `lookup_many` (a shard's samples at once, the fast path) returning `OverlapMatch` records.
- build_index.py: `openwit eval-index --eval-set NAME=PATH ... --output eval.idx`.
- overlap.py: overlap records written to OUT/overlap/{eval_set}.parquet.

Thresholds (pHash retrieval radius 16 bits; verification: colour 0.9, pixels 0.9, edges 0.8; caption
distance 0.5) and their measured recall and false-positive rates are in bench/RESULTS.md, "Eval-set
decontamination", "Retrieve, then verify", "Verification at 64 px", "Pre-filter", "Local edges, hue" and "Details lost
to plain".
"""
