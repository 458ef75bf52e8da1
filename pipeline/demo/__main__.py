"""python -m pipeline.demo --workdir demo_output (see run_demo.py)."""
import sys

from pipeline.demo.run_demo import main

sys.exit(main())
