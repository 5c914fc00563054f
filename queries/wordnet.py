"""WordNet lemmas, read from a WordNet 3.x database directory in Princeton's `dict/` format.

Debian's `wordnet-base` package installs one (/usr/share/wordnet). The synsets are the lines of
`data.noun`, `data.verb`, `data.adj` and `data.adv`: `offset lex_filenum ss_type w_cnt word lex_id ...`,
with w_cnt in hexadecimal; the files open with license lines that start with two spaces.

We take every lemma of every synset, `_` -> space, keeping WordNet's case ("New York", "Einstein"), since the
matcher is case-sensitive. MetaCLIP instead takes each synset's NLTK name (its first lemma, lower-cased):
a subset of ours, up to case. Adjective markers such as `(a)`, `(p)`, `(ip)` are not part of the lemma.
"""

import re

from apache_beam.io.filesystems import FileSystems

from openwit.errors import InputError
from queries.files import read_lines

DATA_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
_ADJECTIVE_MARKER = re.compile(r"\((?:a|p|ip)\)$")
_SYNSET_TYPES = {"n", "v", "a", "s", "r"}


def data_paths(directory: str) -> list[str]:
    """The four data files of a WordNet dict directory; an InputError lists any that are missing."""
    paths = [FileSystems.join(directory, name) for name in DATA_FILES]
    missing = [name for name, path in zip(DATA_FILES, paths) if not FileSystems.exists(path)]
    if missing:
        raise InputError(f"--wordnet {directory!r} is not a WordNet dict directory: missing {', '.join(missing)}. "
                         "Give the folder holding data.noun etc. (e.g. /usr/share/wordnet from Debian's "
                         "wordnet-base)")
    return paths


def parse_data_line(line: str) -> list[str]:
    """The lemmas of one synset line; raises ValueError when the line is not a synset."""
    fields = line.split(" ")
    if len(fields) < 6 or not fields[0].isdigit() or fields[2] not in _SYNSET_TYPES:
        raise ValueError("expected `offset lex_filenum ss_type w_cnt word lex_id ...`")
    word_count = int(fields[3], 16)
    if word_count < 1 or len(fields) < 4 + 2 * word_count:
        raise ValueError(f"w_cnt {fields[3]} does not match the words on the line")
    return [_ADJECTIVE_MARKER.sub("", fields[4 + 2 * i]).replace("_", " ") for i in range(word_count)]


def read_lemmas(path: str):
    """Yield every lemma of a WordNet data file, in file order (repeats included)."""
    synsets = 0
    for number, raw in read_lines(path, "WordNet data file"):
        line = raw.decode("utf-8", "replace")
        if line.startswith("  ") or not line.strip():  # license header
            continue
        try:
            lemmas = parse_data_line(line)
        except ValueError as e:
            raise InputError(f"WordNet data file {path!r} line {number}: {e} (got {line[:60]!r}); the file is "
                             "damaged or not a WordNet 3.x data file") from e
        synsets += 1
        yield from lemmas
    if synsets == 0:
        raise InputError(f"WordNet data file {path!r} holds no synset; give a WordNet 3.x dict directory")
