"""Output flavours: the same valid examples, written in the shape each trainer reads (`output.flavor`).

One module per flavour; each registers a `Flavour` (see `base`). `distill.output.flavours.render` holds the two
calls the runner makes: render each valid example (refusing what the trainer would reject), then write a side's
lines with their provenance inline or in the sidecar, and the flavour's side files.
"""

from distill.output.flavours import axolotl, llamafactory, openai, trl, verl  # noqa: F401  (registration)
from distill.output.flavours.base import FLAVOURS, Flavour, Refused, RenderContext

__all__ = ["FLAVOURS", "Flavour", "Refused", "RenderContext"]
