"""The default sampling settings every entry point shares (no heavy imports).

The saved pipelines sample with DPM-Solver++ (multistep, second order). Its default step count was chosen
by `benchmarks/bench_sampling.py --quality`: at 15 steps its FID stays within 1.1x of DDPM over the full
1,000-step schedule at over 40x DDPM's wall-clock speed on the chest-xray model; 25 steps gave no better FID
and missed the speed goal (docs/pipelines.md, "Sampler quality"). Each `pipeline_*.py` file repeats the
value as its `__call__` default, since a saved folder ships that file alone; a test keeps them equal.
"""

DEFAULT_INFERENCE_STEPS = 15
