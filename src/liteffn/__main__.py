import sys

from liteffn.cli import main

sys.exit(main())
