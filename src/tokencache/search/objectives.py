"""The search objectives and their optimisation directions (light: no torch)."""

#: objective -> optuna direction
OBJECTIVES = {
    "macs": "minimize",
    "latency_model": "minimize",
    "latency": "minimize",
    "psnr": "maximize",
    "ssim": "maximize",
    "rel_l1": "minimize",
    "fd": "minimize",
    "clip": "maximize",
}
COST_OBJECTIVES = ("macs", "latency_model", "latency")
