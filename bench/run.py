#!/usr/bin/env python3
"""sdm benchmark: sdm beside direct TCP, `ssh -L` and stunnel, in one run on this machine.

    bench/run.sh                  # full run (~25 min); knobs: environment variables (README.md)
    SMOKE=1 bench/run.sh          # smoke mode: everything once, tiny sizes (~40 s)
    bench/run.sh --report DIR     # re-render DIR/REPORT.md (and chart.png)
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sdmbench import main, report  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        report.render(sys.argv[2])
        print(os.path.join(sys.argv[2], "REPORT.md"))
        sys.exit(0)
    if len(sys.argv) > 1:
        sys.exit(__doc__)
    sys.exit(main.main())
