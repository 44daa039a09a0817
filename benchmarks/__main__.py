import sys

from edgeboost.benchmarks.cli import main

sys.exit(main())
