"""Convert vg with `spade4d convert vg`; run with --help for the options.

python -m data_tools.convert_vg [options]
"""

import sys

from spade4d.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", "vg", *sys.argv[1:]]))
