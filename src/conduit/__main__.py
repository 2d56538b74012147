import sys

from conduit.cli.main import main

sys.exit(main())
