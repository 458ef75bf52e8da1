"""What the launcher shows on the console: logging set-up, the live progress line, messages of a failed run."""
