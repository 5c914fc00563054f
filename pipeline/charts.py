"""The dataset card's charts, drawn by matplotlib from aggregates.json and returned as SVG data URIs.

An SVG inside an <img> is inert: no script in it can run and none of its text joins the page, so a hostile
query or host name drawn on a chart cannot reach the card's HTML. Text is drawn as paths (no font needed to
view the card offline), math-text parsing is off (a caption like "$5 & $10" is literal text, not TeX), and
the SVG ids and metadata are fixed so the same build gives the same card.
"""

import base64
import io

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

STYLE = {
    "svg.fonttype": "path",
    "svg.hashsalt": "openwit",  # deterministic element ids
    "text.parse_math": False,
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
WIDTH = 7.5  # inches, at matplotlib's 72 points per inch in SVG: fits the card's 60em column
STAGE_COLOURS = {"read": "#8c564b", "caption": "#1f77b4", "match": "#ff7f0e", "dedup": "#9467bd",
                 "balance": "#2ca02c", "fetch": "#d62728", "image": "#e377c2", "decontaminate": "#7f7f7f",
                 "shard": "#bcbd22"}


def _data_uri(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()


def _figure(height: float) -> Figure:
    return Figure(figsize=(WIDTH, height))


def _no_data(ax, message: str = "no data") -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#777")
    ax.set_xticks([])
    ax.set_yticks([])


def _log(ax, which: str) -> None:
    """A log axis labelled with plain numbers: matplotlib's default log labels are math text, which is off."""
    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}" if value >= 1 else f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def _barh(ax, labels: list[str], values: list[int], colours=None) -> None:
    positions = range(len(labels))
    ax.barh(positions, values, color=colours or "#1f77b4")
    ax.set_yticks(positions, labels)
    ax.invert_yaxis()  # first item on top


def funnel(steps: list[list]) -> str:
    with matplotlib.rc_context(STYLE):
        fig = _figure(0.3 * len(steps) + 0.8)
        ax = fig.subplots()
        labels = [name if i in (0, len(steps) - 1) else f"after {name}" for i, (name, _) in enumerate(steps)]
        _barh(ax, labels, [n for _, n in steps], [STAGE_COLOURS.get(name, "#1f77b4") for name, _ in steps])
        for y, (_, n) in enumerate(steps):
            ax.annotate(f"{n:,}", (n, y), xytext=(3, 0), textcoords="offset points", va="center")
        ax.set_xlabel("candidates left")
        return _data_uri(fig)


def rejects(rejected: dict[str, dict[str, int]]) -> str:
    rows = sorted(((n, stage, reason) for stage, reasons in rejected.items() for reason, n in reasons.items()),
                  key=lambda r: (-r[0], r[1], r[2]))
    with matplotlib.rc_context(STYLE):
        fig = _figure(0.25 * max(len(rows), 2) + 0.8)
        ax = fig.subplots()
        if not rows:
            _no_data(ax, "nothing rejected")
        else:
            _barh(ax, [f"{stage}: {reason}" for _, stage, reason in rows], [n for n, _, _ in rows],
                  [STAGE_COLOURS.get(stage, "#1f77b4") for _, stage, _ in rows])
            _log(ax, "x")
            ax.set_xlabel("candidates rejected (log scale)")
        return _data_uri(fig)


def query_distribution(queries: dict) -> str:
    """Per-query counts against their rank, log-log: the head flattens at t after balancing."""
    with matplotlib.rc_context(STYLE):
        fig = _figure(3.6)
        ax = fig.subplots()
        # "before" is drawn wide and pale: below t it coincides with "after", and must still show.
        curves = [("before balancing (candidates)", "before", "#1f77b4", 4, 0.4),
                  ("after balancing (selected)", "after", "#2ca02c", 1.5, 1),
                  ("kept (fetched)", "kept", "#d62728", 1, 1)]
        drawn = False
        for label, name, colour, width, alpha in curves:
            if queries[name]:
                ranks, counts = zip(*queries[name])
                ax.step(ranks, counts, where="post", label=label, color=colour, linewidth=width, alpha=alpha)
                drawn = True
        if not drawn:
            _no_data(ax, "no query matched")
            return _data_uri(fig)
        if queries["t"]:
            ax.axhline(queries["t"], color="#555", linestyle="--", linewidth=1, label=f"t = {queries['t']:,.0f}")
        _log(ax, "x")
        _log(ax, "y")
        ax.set_xlabel("query rank")
        ax.set_ylabel("pairs per query")
        ax.legend(frameon=False)
        return _data_uri(fig)


def _bin_labels(edges: list[int]) -> list[str]:
    return [f"{lo}-{hi - 1}" if i < len(edges) - 2 else f"{lo}+" for i, (lo, hi) in enumerate(zip(edges, edges[1:]))]


def caption_lengths(histogram: dict) -> str:
    with matplotlib.rc_context(STYLE):
        fig = _figure(2.6)
        ax = fig.subplots()
        counts, edges = histogram["counts"], histogram["edges"]
        if not sum(counts):
            _no_data(ax, "no kept captions")
        else:
            last = edges[-2] + (edges[-2] - edges[-3])  # the overflow bin drawn one bin wide
            ax.stairs(counts, edges[:-1] + [last], fill=True, color="#1f77b4")
            ax.set_xlabel(f"caption length, characters (the last bin holds {edges[-2]} and more)")
            ax.set_ylabel("kept samples")
        return _data_uri(fig)


def languages(found: dict) -> str:
    top = list(found["counts"].items())[:15]
    with matplotlib.rc_context(STYLE):
        fig = _figure(0.25 * max(len(top), 2) + 0.8)
        ax = fig.subplots()
        if not top:
            _no_data(ax, "no kept captions")
        else:
            _barh(ax, [code for code, _ in top], [n for _, n in top])
            ax.set_xlabel(f"captions in a sample of {found['sample']:,} kept captions")
        return _data_uri(fig)


def image_sides(sides: dict) -> str:
    """Original (as downloaded) and written (after resizing) widths and heights, on power-of-two bins."""
    labels = _bin_labels(sides["edges"])
    with matplotlib.rc_context(STYLE):
        fig = _figure(3.0)
        axes = fig.subplots(1, 2, sharey=False)
        for ax, (title, prefix) in zip(axes, (("original", "original_"), ("written", ""))):
            width, height = sides[prefix + "width"], sides[prefix + "height"]
            if not sum(width) + sum(height):
                _no_data(ax, f"no {title} images")
                continue
            positions = range(len(labels))
            ax.bar([p - 0.2 for p in positions], width, width=0.4, label="width", color="#1f77b4")
            ax.bar([p + 0.2 for p in positions], height, width=0.4, label="height", color="#ff7f0e")
            ax.set_xticks(positions, labels, rotation=60, ha="right")
            ax.set_title(f"{title} images")
            ax.set_xlabel("pixels")
            ax.legend(frameon=False)
        return _data_uri(fig)


def hosts(top: list[dict]) -> str:
    with matplotlib.rc_context(STYLE):
        fig = _figure(0.25 * max(len(top), 2) + 0.8)
        ax = fig.subplots()
        if not top:
            _no_data(ax, "no image fetched")
        else:
            names = [h["host"] for h in top]
            ok = [h["attempted"] - h["failed"] for h in top]
            positions = range(len(top))
            ax.barh(positions, ok, color="#2ca02c", label="kept")
            ax.barh(positions, [h["failed"] for h in top], left=ok, color="#d62728", label="failed")
            ax.set_yticks(positions, names)
            ax.invert_yaxis()
            ax.set_xlabel("images attempted")
            ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
        return _data_uri(fig)
