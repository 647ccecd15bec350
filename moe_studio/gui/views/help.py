"""Help > "What am I looking at?": a few lines per view for a first look, and the
keyboard shortcuts as the window's own actions have them (so the list cannot go
stale).

``VIEW_HELP`` is keyed by the centre tabs' titles (``main_window.DASHBOARDS``); a
dashboard added there without an entry here fails the tests.
"""
from __future__ import annotations

import html

from PySide6.QtGui import QAction, QKeySequence

VIEW_HELP: dict[str, str] = {
    "Training": (
        "<p>How training goes: <b>loss</b> (nats per token; train solid, validation dots; "
        "one line per member for ensembles), the <b>load-balancing</b> and <b>router "
        "z-loss</b> terms the router is trained with, the <b>learning rate</b> schedule "
        "and <b>throughput</b> in tokens per second.</p>"
        "<p>Smoothing is a debiased moving average (as in TensorBoard); the X axis can be "
        "steps, tokens or time. While a run trains, the x axis follows the data and a "
        "dashed line marks the planned last step. Hover a plot for the values; ⋯ exports "
        "it as PNG, SVG or CSV.</p>"),
    "Gates": (
        "<p>How sure the routers are. <b>Router probabilities over time</b>: the spread of "
        "every token's probability for every expert as percentile bands (median line). "
        "The histogram beside it is that distribution at the selected step; 1/E marks a "
        "router that cannot tell experts apart.</p>"
        "<p><b>Entropy</b> (low: confident routing), <b>mean top-1 probability</b> and "
        "<b>|logit|</b> (what the z-loss keeps small), per layer. The step slider picks "
        "the step; ▶ plays through training.</p>"),
    "Experts": (
        "<p>How evenly the experts are used. <b>Tokens per expert</b> at the selected step "
        "(one colour per layer, the key under the bars; dashed: the uniform load; red "
        "outline: a dead expert), the same as <b>load ÷ uniform</b> per layer × expert, "
        "and over the whole run (1 = a fair share).</p>"
        "<p>Below, balance over time: coefficient of variation, max ÷ mean load, tokens "
        "dropped by the capacity limit, experts that got no token for <i>Dead after</i> "
        "steps. Click a heatmap cell to list the probe tokens that expert received.</p>"),
    "Routing": (
        "<p>Where the router sends real text. The <b>gate probability</b> heatmap is "
        "token × expert for the probe text (characters along the bottom). The text below "
        "is coloured by each token's top-1 expert; hover a character for every layer's "
        "choices.</p>"
        "<p><b>Domain × expert</b> and <b>token class × expert</b>: the share of each "
        "group's token-choices going to each expert (centred on the uniform share); "
        "<i>total variation</i> in the title is how differently the groups are routed "
        "(0 alike, 1 disjoint). Type your own text and press Route to send it through "
        "the model.</p>"),
    "Precision": (
        "<p>How close the numbers come to the edges of fp16, bf16 and fp8. <b>Loss "
        "scale</b>: the fp16 GradScaler's scale; a triangle is a skipped step (an "
        "overflow made it back off; hover for the step and the scale).</p>"
        "<p><b>Max |x|</b> per module against each format's largest value; the <b>log2 "
        "|x|</b> heatmap shows where a module's values fall, with the format's subnormal, "
        "flush and overflow zones shaded; overflow and underflow shares over time; the "
        "table lists the tensors with the least headroom (in bits) at the step.</p>"),
    "Ensemble": (
        "<p>How much the members of an ensemble agree, and what combining them buys. "
        "<b>Validation loss</b> of each member, of the ensemble and of each combination "
        "rule; the <b>member × member</b> matrix (the combo picks agreement, Q, "
        "Jensen-Shannon, kappa…) at the selected evaluation; <b>diversity</b> and "
        "<b>divergence and gain</b> over training.</p>"
        "<p>The probe text is shaded by how much the members disagree about the next "
        "character; hover for each member's guess. <b>Compare runs</b> sets several runs "
        "side by side (e.g. an MoE against an ensemble of the same size).</p>"),
    "Compare": (
        "<p>The runs checked in the Runs panel, one colour each everywhere: train and "
        "validation loss, load CV and a scalar of your choice overlaid, or grouped by a "
        "config key that differs (mean line and band). The list on the left hides and "
        "shows runs.</p>"
        "<p>Below: a summary table (CSV export) and the config keys that differ. <b>Side "
        "by side</b> shows two runs in the Routing or Experts view on one step slider "
        "(one above the other when the window is narrow).</p>"),
}


def view_help_html(title: str) -> str:
    """The help of the view titled ``title``, as rich text."""
    body = VIEW_HELP.get(title)
    if body is None:
        return f"<p>No help for {html.escape(title)} yet.</p>"
    return f"<h3>{html.escape(title)}</h3>{body}"


def shortcuts_html(actions: list[QAction]) -> str:
    """A two-column table of ``actions`` that have a shortcut: what, and the keys (as the
    platform writes them)."""
    rows = []
    seen = set()
    for a in actions:
        keys = a.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
        what = a.text().replace("&&", "\0").replace("&", "").replace("\0", "&")
        if not keys or (what, keys) in seen:
            continue
        seen.add((what, keys))
        rows.append(f"<tr><td>{html.escape(what)}</td><td>&nbsp;&nbsp;<b>"
                    f"{html.escape(keys)}</b></td></tr>")
    return "<h3>Keyboard shortcuts</h3><table>" + "".join(rows) + "</table>"
