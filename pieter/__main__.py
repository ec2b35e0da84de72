import sys

from pieter.cli import main

sys.exit(main())
