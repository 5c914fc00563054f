"""Read evaluation sets in the forms they are published in, as a stream of items with stable ids.

Forms, chosen by the path:
- a folder of images: class subfolders give the label (ImageFolder layout, e.g. a CIFAR-10 export);
  id = the image's path relative to the folder, with "/" separators.
- a WebDataset tar (or several: a glob or a brace pattern is not needed, give a folder of .tar files):
  a sample's image is its .jpg/.jpeg/.png/.webp member, label from .cls, caption(s) from .txt (one a line);
  id = the sample key, prefixed with the tar name when there are several tars.
- a Parquet file: an image column (binary, or a struct with a "bytes" field as Hugging Face writes it),
  optional label/caption columns (a caption column may hold a list, as COCO's five captions);
  id = the "id" column when there is one, else "row{N}".
- a CSV file with a "path" column (relative paths are relative to the CSV's folder), optional
  label/caption/id columns; id = the "id" column, else the path as written.

An unreadable item is yielded with its error, so the builder counts it as a reject; a whole input that
cannot be read raises InputError.
"""

import csv
import io
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field

from openwit.errors import InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")
LABEL_COLUMNS = ("label", "class", "cls", "fine_label")
CAPTION_COLUMNS = ("caption", "captions", "text", "sentences", "raw")
IMAGE_COLUMNS = ("image", "img", "jpg", "png", "image_bytes")


@dataclass(frozen=True)
class EvalItem:
    eval_id: str
    image_bytes: bytes | None
    label: str | None = None
    captions: tuple[str, ...] = field(default_factory=tuple)
    error: str | None = None  # why the item could not be read (then image_bytes is None)


def parse_eval_set_arg(value: str) -> tuple[str, str]:
    """'NAME=PATH' -> (NAME, PATH), with a clear error for anything else."""
    name, sep, path = value.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise InputError(f"--eval-set {value!r}: expected NAME=PATH, e.g. --eval-set cifar10=data/cifar10-test")
    if "/" in name or "\\" in name:
        raise InputError(f"--eval-set {value!r}: the name {name!r} names overlap/{name}.parquet, "
                         "so it must not contain '/'")
    return name.strip(), path.strip()


def read_eval_set(path: str) -> Iterator[EvalItem]:
    """The items of the eval set at `path`, in a stable order."""
    if os.path.isdir(path):
        tars = sorted(f for f in os.listdir(path) if f.endswith(".tar"))
        images = any(_is_image(f) for _, _, files in os.walk(path) for f in files)
        if tars and not images:
            return _read_tars([os.path.join(path, t) for t in tars])
        return _read_folder(path)
    if not os.path.exists(path):
        raise InputError(f"eval set {path!r} does not exist; give an image folder, a .tar, .parquet or .csv")
    lower = path.lower()
    if lower.endswith(".tar"):
        return _read_tars([path])
    if lower.endswith(".parquet"):
        return _read_parquet(path)
    if lower.endswith(".csv"):
        return _read_csv(path)
    raise InputError(f"eval set {path!r}: unknown form; give an image folder (class subfolders as labels), "
                     "a WebDataset .tar (or a folder of them), a .parquet with an image column, or a .csv "
                     "with a 'path' column")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _read_file(path: str) -> tuple[bytes | None, str | None]:
    try:
        with open(path, "rb") as f:
            return f.read(), None
    except OSError as e:
        return None, f"unreadable file: {e.strerror or e}"


def _read_folder(root: str) -> Iterator[EvalItem]:
    found = False
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()  # os.walk order is the filesystem's; ids and item order must not depend on it
        for name in sorted(filenames):
            if not _is_image(name):
                continue
            found = True
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            label = rel.split("/")[0] if "/" in rel else None
            data, error = _read_file(full)
            yield EvalItem(rel, data, label=label, error=error)
    if not found:
        raise InputError(f"eval set folder {root!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")


def _read_tars(paths: list[str]) -> Iterator[EvalItem]:
    for path in paths:
        prefix = os.path.basename(path)[: -len(".tar")] + "/" if len(paths) > 1 else ""
        try:
            tar = tarfile.open(path, "r:*")
        except (OSError, tarfile.TarError) as e:
            raise InputError(f"eval set {path!r} is not a readable tar file: {e}") from e
        samples: dict[str, dict[str, bytes]] = {}
        order: list[str] = []
        with tar:
            try:
                for member in tar:
                    if not member.isfile():
                        continue
                    base = os.path.basename(member.name)
                    key = os.path.join(os.path.dirname(member.name), base.split(".", 1)[0])
                    ext = base.split(".", 1)[1].lower() if "." in base else ""
                    if key not in samples:
                        samples[key] = {}
                        order.append(key)
                    samples[key][ext] = tar.extractfile(member).read()
            except (OSError, tarfile.TarError, EOFError) as e:
                raise InputError(f"eval set {path!r}: tar is truncated or corrupt after "
                                 f"{len(order)} samples: {e}") from e
        for key in order:
            parts = samples[key]
            image_ext = next((e for e in parts if _is_image("." + e)), None)
            label = parts["cls"].decode("utf-8", "replace").strip() if "cls" in parts else None
            captions = ()
            if "txt" in parts:
                captions = tuple(c for c in parts["txt"].decode("utf-8", "replace").splitlines() if c.strip())
            if image_ext is None:
                yield EvalItem(prefix + key, None, label, captions, error="sample has no image member")
            else:
                yield EvalItem(prefix + key, parts[image_ext], label, captions)


def _pick(columns: list[str], candidates: tuple[str, ...]) -> str | None:
    return next((c for c in candidates if c in columns), None)


def _as_captions(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value.strip() else ()
    if isinstance(value, dict):  # e.g. {"raw": "..."}
        return _as_captions(value.get("raw") or value.get("text"))
    return tuple(c for v in value for c in _as_captions(v))


def _read_parquet(path: str) -> Iterator[EvalItem]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        raise InputError(f"eval set {path!r} is not a readable Parquet file: {e}") from e
    columns = pf.schema_arrow.names
    image_col = _pick(columns, IMAGE_COLUMNS)
    if image_col is None:
        raise InputError(f"eval set {path!r} has no image column (columns: {columns}); name the column of "
                         f"image bytes one of {list(IMAGE_COLUMNS)}")
    label_col, caption_col = _pick(columns, LABEL_COLUMNS), _pick(columns, CAPTION_COLUMNS)
    id_col = "id" if "id" in columns else None
    wanted = [c for c in (image_col, label_col, caption_col, id_col) if c]
    row = 0
    # Batches keep memory bounded: an eval set of 50k images with bytes is gigabytes.
    for batch in pf.iter_batches(batch_size=256, columns=wanted):
        for record in batch.to_pylist():
            value = record[image_col]
            if isinstance(value, dict):
                value = value.get("bytes")
            eval_id = str(record[id_col]) if id_col and record[id_col] is not None else f"row{row}"
            label = record[label_col] if label_col else None
            item = EvalItem(eval_id, value if isinstance(value, bytes) else None,
                            label=None if label is None else str(label),
                            captions=_as_captions(record[caption_col]) if caption_col else ())
            if item.image_bytes is None:
                item = EvalItem(eval_id, None, item.label, item.captions,
                                error=f"row {row}: column {image_col!r} holds no image bytes")
            yield item
            row += 1


def _read_csv(path: str) -> Iterator[EvalItem]:
    base = os.path.dirname(os.path.abspath(path))
    try:
        f = open(path, newline="", encoding="utf-8")
    except OSError as e:
        raise InputError(f"eval set {path!r} cannot be opened: {e}") from e
    with f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        if "path" not in columns:
            raise InputError(f"eval set {path!r} has no 'path' column (header: {columns}); write a header "
                             "line with a 'path' column and optional 'label', 'caption' and 'id' columns")
        label_col, caption_col = _pick(columns, LABEL_COLUMNS), _pick(columns, CAPTION_COLUMNS)
        try:
            for line, record in enumerate(reader, start=2):
                rel = (record.get("path") or "").strip()
                eval_id = (record.get("id") or "").strip() or rel
                label = (record.get(label_col) or "").strip() or None if label_col else None
                captions = _as_captions(record.get(caption_col)) if caption_col else ()
                if not rel:
                    yield EvalItem(eval_id or f"line{line}", None, label, captions,
                                   error=f"line {line}: empty path")
                    continue
                data, error = _read_file(rel if os.path.isabs(rel) else os.path.join(base, rel))
                yield EvalItem(eval_id, data, label, captions,
                               error=f"line {line}: {error}" if error else None)
        except (UnicodeDecodeError, csv.Error) as e:
            raise InputError(f"eval set {path!r}: not a UTF-8 CSV file ({e}); save it as UTF-8") from e


def decode(data: bytes):
    """The RGB image in `data`, or raise ValueError with the reason."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as e:  # Pillow raises many types for bad files
        raise ValueError(f"undecodable image: {type(e).__name__}: {e}") from e
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA").convert("RGB")
    return image.convert("RGB")
