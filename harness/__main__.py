"""python -m stealcheck"""

import sys

from .cli import main

sys.exit(main())
