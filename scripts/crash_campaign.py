"""Crash campaign: SIGKILL long-running sfd commands at random moments, rerun them to
completion, compare with an uninterrupted run (``sfd.tools.crash_campaign``; docs/RELIABILITY.md).

    python scripts/crash_campaign.py --kills 10 --commands train,sample --out /tmp/campaign
"""

from sfd.tools.crash_campaign import main

if __name__ == "__main__":
    main()
