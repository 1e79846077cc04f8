import sys

from properties.cli import main

sys.exit(main())
