import os

# Idle OpenMP threads must sleep, not spin: on a 2-core machine spinning workers of one
# process starve the others (and the tests' own subprocesses) many times over.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and OpenMP spin-waits on a busy machine); a
    module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
