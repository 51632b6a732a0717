"""sdm benchmark harness: sdm beside direct TCP, `ssh -L` and stunnel on loopback.

Standard library only (the chart is drawn by report.py with matplotlib when it is installed).
Entry point: bench/run.py; see bench/README.md.
"""
