"""Named presets (`--preset`): whole methods one flag away, so a published setting stays
reproducible after the tool's defaults move on.

A preset fills SearchConfig fields below a recipe and the command line: `--preset paper --lr
0.02` is the paper's method with another learning rate.
"""

from __future__ import annotations

from slt_deploy.registry import Registry

PRESETS: Registry[dict] = Registry("preset")

# This tool's gates before the defaults of docs/search.md ("The defaults since issue 19"): the
# paper's gate plus the learned loss temperature. Kept to reproduce the earlier tables.
GATES_V1 = {
    "method": "gates",
    "gate": "stg",
    "init": "uniform",
    "lr": 0.01,
    "sigma": 0.5,
    "sigma_final": 0.5,  # σ constant
    "gate_bound": 0.0,  # unbounded
    "temperature_final": 1.0,
    "sharpen_start": 0.0,
    "windup_reset": False,
    "budget": "penalty",
    "loss_temperature": "learned",
    "exact_target": False,
}
PRESETS.register("gates-v1")(GATES_V1)

# The paper's method as docs/design.md states it: Gaussian stochastic gates, σ = 0.5, μ₀ = 0.5,
# uniform weights, no sharpening (t = 1), plain cross-entropy, the mask the controller ends on.
# Adam at 0.01 is this tool's setting for it (the design gives none).
PRESETS.register("paper")({**GATES_V1, "gate_init": 0.5, "loss_temperature": "none"})
