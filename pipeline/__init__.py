"""The commands users run (main: the launcher, report, evaluate, demo) and, below them by kind, their parts."""
