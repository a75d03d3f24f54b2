import sys

from rst.cli import main

sys.exit(main())
