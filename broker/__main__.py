"""``python -m edgeboost.broker --socket PATH --recipe FILE[:TOKEN] ...``"""

from edgeboost.broker.cli import main

raise SystemExit(main())
