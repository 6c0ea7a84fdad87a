import sys

from oswitch.cli import main

sys.exit(main(sys.argv[1:]))
