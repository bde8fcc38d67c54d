"""Recipes: one module per reproduced paper figure/table (plus sigprop's own), each declaring its runs
per scale (ci / cpu / paper; gpu for the recipe sized for one GPU call) and how it is drawn. `reproduce(name, scale, out)` runs one.

    from sigprop.recipes import RECIPES, reproduce
    reproduce("fig3", scale="cpu", out="figures/fig3", runs_dir="runs/recipes")
"""

from __future__ import annotations

import importlib

from sigprop.errors import choice_error
from sigprop.recipes.base import RECIPE_SCALES, Recipe, RunPlan
from sigprop.recipes.executor import Result, plan_status, reproduce

#: Recipe modules in gallery order (paper figures first, then sigprop's own pictures).
MODULES = ("catch_up", "fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "fig8", "fig9", "fig12", "fig13", "fig14", "fig15", "fig16", "fig17", "fig22", "fig24", "fig25",
           "plateau", "table1", "rank_collapse", "cos_training", "warmup", "outliers", "successors", "gpu")

RECIPES: dict[str, Recipe] = {
    r.name: r for r in (importlib.import_module(f"sigprop.recipes.{m}").RECIPE for m in MODULES)
}


def get_recipe(name: str) -> Recipe:
    """A recipe by name (case-insensitive; 'Fig. 3', 'fig03' and 'fig3' all work)."""
    key = name.strip().lower().replace(" ", "").replace(".", "").replace("_", "-")
    key = key if key in RECIPES else key.replace("fig0", "fig")
    if key not in RECIPES:
        raise choice_error("recipe", name, RECIPES)
    return RECIPES[key]


__all__ = ["MODULES", "RECIPES", "RECIPE_SCALES", "Recipe", "Result", "RunPlan", "get_recipe", "plan_status", "reproduce"]
