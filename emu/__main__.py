import sys

from emu.cli import main

sys.exit(main(prog="python -m emu"))
