"""This tree against the official SFD release, side by side in one process, calls alternated
(``sfd.tools.bench_release``; docs/PERFORMANCE.md).

    PYTHONPATH=DEPS python scripts/bench_release.py --release-dir SFD --preset demo --batch-size 64
    PYTHONPATH=DEPS python scripts/bench_release.py --release-dir SFD --preset S --batch-size 8 \\
        --iters 5 [--mode best --scope loss] [--ceiling] [--json out.json]
"""

from sfd.tools.bench_release import main

if __name__ == "__main__":
    main()
