"""Settings for the benchmark: the production settings plus a URLconf with one trivial view.

Everything else comes from the environment exactly as in production (``bench/run.py`` sets it).
"""

from config.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
