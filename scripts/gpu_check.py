"""The steps of ``scripts/gpu_check.sh``, one process call at a time (``sfd.tools.gpu_check``)."""

from sfd.tools.gpu_check import main

if __name__ == "__main__":
    main()
