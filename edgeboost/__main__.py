import sys

from edgeboost.cli import main

sys.exit(main())
