import sys

from rawflow.payloads.cli import main

sys.exit(main())
