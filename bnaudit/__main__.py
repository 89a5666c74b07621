import sys

from bnaudit.cli import main

sys.exit(main())
