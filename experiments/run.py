"""Run the DORE comparisons: `python experiments/run.py [experiments/comparisons.yaml] [--only NAME ...] [--smoke]`.

The runner is `dore.experiments` (also `python -m dore.experiments`); `--help` lists the options.
"""

from dore.experiments import main

if __name__ == "__main__":
    main()
