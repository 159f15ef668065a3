"""The MS research newsletter: compose, check, render and send a monthly issue of research summaries.

The library is in the subpackages and modules beside this file; `newsletter.cli` is the thin command line.
Nothing is imported here, so that `newsletter --help` starts at once.
"""
