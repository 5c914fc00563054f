"""The experiment web: deterministic, captions say what the pictures show, leaked eval copies are found."""

import io

import numpy as np
from PIL import Image

from dedup.eval_index import EvalIndex
from dedup.eval_sets import decode, read_eval_set
from openwit import experiment_web as ew


def test_same_seed_same_web_other_seed_other_web():
    a, b, c = (ew.generate(seed, pictures=12, eval_per_class=1, leak_fraction=0.25) for seed in (0, 0, 1))
    assert a.site.files == b.site.files and a.site.pairs == b.site.pairs and a.leaked == b.leaked
    assert [e.png for e in a.eval_images] == [e.png for e in b.eval_images]
    assert a.site.files != c.site.files


def test_captions_name_the_colour_and_shape_and_pictures_show_the_colour():
    web = ew.generate(3, pictures=30, eval_per_class=1, leak_fraction=0.0)
    for path, alt, _ in web.site.pairs:
        colours = [c for c in ew.COLOURS if c in alt.lower().split()]
        assert len(colours) == 1 and any(s in alt for s in ew.SHAPES), alt
        # The shape's colour is the most saturated colour in the picture: find pixels near it.
        img = Image.open(io.BytesIO(web.site.files[path][0])).convert("RGB")
        target = ew.COLOURS[colours[0]]
        near = int((np.abs(np.asarray(img, np.int32) - target).sum(axis=2) < 90).sum())
        assert near > 0.02 * img.width * img.height, (alt, near)


def test_eval_sets_are_image_folders_and_their_leaked_copies_are_found(tmp_path):
    web = ew.generate(0, pictures=40, eval_per_class=2, leak_fraction=0.15)
    paths = ew.write_image_folders(web.eval_images, str(tmp_path))
    colours = list(read_eval_set(paths["colours"]))
    assert len(colours) == 2 * len(ew.COLOURS) and {i.label for i in colours} == set(ew.COLOURS)
    assert len(list(read_eval_set(paths["shapes"]))) == 2 * len(ew.SHAPES)
    assert len(web.leaked) == round(0.15 * 28) and set(web.leaked.values()) == set(ew.LEAK_TRANSFORMS)

    index, _ = EvalIndex.build((name, read_eval_set(path)) for name, path in paths.items())
    copies = [(path, alt) for path, alt, _ in web.site.pairs if path in web.copy_of]
    assert sorted(web.copy_of.values()) == sorted(web.leaked)
    found = index.lookup_many([decode(web.site.files[path][0]) for path, _ in copies])
    by_key = {f"{e.eval_set}/{e.eval_id}": e for e in web.eval_images}
    for (path, alt), matches in zip(copies, found):
        assert web.copy_of[path] in {f"{m.eval_set}/{m.eval_id}" for m in matches}, web.leaked[web.copy_of[path]]
        item = by_key[web.copy_of[path]]  # a copy is captioned with what its eval image shows
        assert item.colour in alt.lower() and item.shape in alt.lower(), (alt, item)
