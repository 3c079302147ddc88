import os

# Idle OpenMP threads must sleep, not spin: on a 2-core machine spinning workers of one
# process starve the others (and the tests' own subprocesses) many times over.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
