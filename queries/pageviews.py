"""Article titles by page views, from Wikimedia's page-view dumps (dumps.wikimedia.org/other/pageviews).

Each line is `project title count bytes` (`en Albert_Einstein 1234 0`); hourly files come gzipped. Views are
summed per title over all lines of all given files and titles with at least `min_views` are kept (MetaCLIP
sums 26 sampled days and keeps >= 70). Titles read with `_` as space.

Projects: `en` (desktop) and `en.m` (mobile web) of English Wikipedia by default; MetaCLIP v1 read `en` only
(MetaCLIP 2 merges `.m` in). Namespaced titles (Talk:, File:, Special:, ...) are skipped. Unlike MetaCLIP,
which drops every title containing ':', we only drop titles whose prefix is a real namespace or alias, so
articles like "Star Wars: Episode IV" stay.

Lines of other projects are counted per project (`queries:pageview_lines_skipped_project_<project>`), so a file
of `en.wikipedia ...` lines, read with the default projects, says why it gave no title.

A malformed line is a counted reject (Beam counter `queries:pageview_lines_rejected_<reason>`). A file whose
first lines are all malformed, or that has no valid line at all, or none of the chosen projects, is the wrong
file (or the wrong --projects): an InputError naming it and, for projects, the ones it holds.
"""

from collections import Counter

import apache_beam as beam
from apache_beam.metrics import Metrics

from openwit.errors import InputError
from queries.files import read_lines

WHAT = "page-view file"
DEFAULT_PROJECTS = ("en", "en.m")
SKIPPED_PROJECT_COUNTER = "pageview_lines_skipped_project_"
CHECK_FIRST_LINES = 1000  # this many malformed lines before any valid one means the file is not page views

# English Wikipedia's namespaces, their talk pages and aliases (Special:NamespaceInfo), casefolded.
_NAMESPACES = {
    "media", "special", "talk", "user", "user talk", "wikipedia", "wikipedia talk", "project", "project talk",
    "wp", "wt", "file", "file talk", "image", "image talk", "mediawiki", "mediawiki talk", "template",
    "template talk", "tm", "help", "help talk", "category", "category talk", "portal", "portal talk", "draft",
    "draft talk", "timedtext", "timedtext talk", "module", "module talk", "gadget", "gadget talk",
    "gadget definition", "gadget definition talk", "event", "event talk", "book", "book talk",
    "education program", "education program talk",
}

REASONS = {
    "fields": "not 4 space-separated fields (project title count bytes)",
    "count": "view count is not a non-negative integer",
    "encoding": "not UTF-8",
    "title": "empty title",
}


def is_namespaced(title: str) -> bool:
    prefix, colon, _ = title.partition(":")
    return bool(colon) and prefix.strip().casefold() in _NAMESPACES


def parse_line(line: bytes) -> tuple[str, str, int] | str:
    """(project, title, views) of one line, or the key of the reason it is malformed."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return "encoding"
    fields = text.split(" ")
    if len(fields) != 4:
        return "fields"
    project, title, count, _bytes = fields
    if not count.isdigit():
        return "count"
    if not title.strip("_"):
        return "title"
    return project, title, int(count)


def normalize_title(raw_title: str) -> str:
    return " ".join(raw_title.replace("_", " ").split())


class ReadPageViews(beam.DoFn):
    """A page-view file -> (title, views) for each line of the chosen projects."""

    def __init__(self, projects=DEFAULT_PROJECTS):
        self.projects = frozenset(projects)
        self.lines = Metrics.counter("queries", "pageview_lines")
        self.rejected = {reason: Metrics.counter("queries", f"pageview_lines_rejected_{reason}")
                         for reason in REASONS}
        self.namespaced = Metrics.counter("queries", "pageview_titles_namespaced_skipped")

    def process(self, path):
        valid, first_bad = 0, None
        skipped = Counter()  # per project, summed here and counted once per file: a file holds ~1000 projects
        for number, line in read_lines(path, WHAT):
            if not line:
                continue
            self.lines.inc()
            parsed = parse_line(line)
            if isinstance(parsed, str):
                self.rejected[parsed].inc()
                if first_bad is None:
                    first_bad = (number, parsed, line[:80])
                if valid == 0 and number >= CHECK_FIRST_LINES:
                    break
                continue
            valid += 1
            project, raw_title, views = parsed
            if project not in self.projects:
                skipped[project] += 1
                continue
            title = normalize_title(raw_title)
            if is_namespaced(title):
                self.namespaced.inc()
                continue
            yield title, views
        for project, n in skipped.items():
            Metrics.counter("queries", SKIPPED_PROJECT_COUNTER + project).inc(n)
        if valid and sum(skipped.values()) == valid:  # not one line counted: a silent skip of the whole file
            found = ", ".join(f"{project} {n}" for project, n in skipped.most_common(5))
            raise InputError(
                f"{WHAT} {path!r}: none of its {valid} lines is of the projects {','.join(sorted(self.projects))} "
                f"(it holds {found}{' ...' if len(skipped) > 5 else ''}); give --projects with the codes it uses")
        if valid == 0 and first_bad is not None:
            number, reason, preview = first_bad
            raise InputError(
                f"{WHAT} {path!r} line {number}: {REASONS[reason]} ({preview!r}), and no line before it is "
                "valid; give Wikimedia page-view dumps (pageviews-YYYYMMDD-HH0000.gz)")


class TitleViews(beam.PTransform):
    """Page-view file paths -> (title, summed views) for titles with at least min_views."""

    def __init__(self, paths: list[str], min_views: int, projects=DEFAULT_PROJECTS):
        super().__init__()
        self.paths, self.min_views, self.projects = paths, min_views, projects

    def expand(self, pbegin):
        min_views = self.min_views
        return (
            pbegin
            | "PageViewFiles" >> beam.Create(self.paths)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadPageViews" >> beam.ParDo(ReadPageViews(self.projects))
            | "SumViews" >> beam.CombinePerKey(sum)
            | "MinViews" >> beam.Filter(lambda tv: tv[1] >= min_views)
        )
