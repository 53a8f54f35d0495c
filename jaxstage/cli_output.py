"""How the commands print: vectors and the game's reference equilibrium."""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxstage.game_base import AnonymousGame


def format_vector(values: Any) -> str:
    """``values`` as a float array printed to 4 decimals, comma-separated."""
    return np.array2string(np.asarray(values, dtype=np.float64), precision=4, separator=", ")


def print_equilibria(game: AnonymousGame, final: np.ndarray | None = None) -> None:
    """Print ``game``'s analytic equilibrium, the nearest to ``final`` when several."""
    equilibria = game.equilibria()
    if not equilibria:
        print("reference equilibrium: none known analytically")
        return
    if final is None or len(equilibria) == 1:
        nearest = equilibria[0]
    else:
        nearest = min(equilibria, key=lambda e: float(np.abs(np.asarray(e) - final).sum()))
    which = "" if len(equilibria) == 1 else f" (nearest of {len(equilibria)})"
    print(f"reference equilibrium{which} {format_vector(nearest)}")
