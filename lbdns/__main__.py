import sys

from lbdns.cli.main import main

sys.exit(main())
