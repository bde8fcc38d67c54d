"""Paper-style figures from sigprop's DataFrames."""

from sigprop.plots.style import BLOCK_STYLE, COLUMN, TEXTWIDTH, block_style, paper_style, savefig, scale_note

__all__ = ["BLOCK_STYLE", "COLUMN", "TEXTWIDTH", "block_style", "paper_style", "savefig", "scale_note"]
