"""`bench report`: results files -> the report's data model -> markdown (or HTML) with PNG plots beside it.

Everything in the report comes from the records: no figure is typed in, nothing depends on the
time of rendering, so the same inputs give byte-identical markdown. Every figure carries a cell
reference (c1, c2, ...) that the appendix resolves to a cell id and the results file it came from.

Pipeline: `load_results(paths)` (bench.analysis.results: entries, environment groups, pairs) ->
`build_report(results, out)` (blocks and plot specs; decisions from bench.analysis.decisions,
claims from bench.analysis.claims) -> `render_markdown(report.blocks)` (or `render_html`) and
`plots.write_plot(spec)` for each plot; `render_to_file` does all of it.

Modules: document (assembly, files), summary (bullets, the per-tier verdict), matrix (decision matrix
rows), tables (comparison, appendix, fast paths), ladder (where the difference comes from),
environment, phrases (one cell in words), labels (titles, slugs, settings-view labels, links),
plot_specs. The claims section is bench.render.claims (the judgement: bench.analysis.claims.judge_claims).
"""

from bench.analysis.claims import claims_results
from bench.analysis.decisions import cost_per_million_tokens, fits
from bench.analysis.results import Results, load_results
from bench.render.blocks import render_html, render_markdown
from bench.render.report.document import FORMATS, Report, build_report, default_out, format_for, render_to_file
from bench.render.report.labels import settings_views
from bench.render.report.matrix import decision_rows
from bench.render.report.phrases import status_text
from bench.render.report.summary import summary_items

__all__ = ["FORMATS", "Report", "Results", "build_report", "claims_results", "cost_per_million_tokens",
           "decision_rows", "default_out", "fits", "format_for", "load_results", "render_html",
           "render_markdown", "render_to_file", "settings_views", "status_text", "summary_items"]
