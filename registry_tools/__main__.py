import sys

from registry_tools.cli import main

sys.exit(main())
