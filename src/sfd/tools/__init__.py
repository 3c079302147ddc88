"""Tools run from ``scripts/``, under the library's rules: the GPU check (``gpu_*``), the crash
campaign (``crash_*``), the side-by-side benchmark against the release (``bench_release``,
``matmuls``) and the synthetic data sets they and the tests build (``synthetic``). They drive
the experiments and the commands, so they sit above ``sfd.experiments`` and below the CLI."""
