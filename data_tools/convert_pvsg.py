"""Convert pvsg with `spade4d convert pvsg`; run with --help for the options.

python -m data_tools.convert_pvsg [options]
"""

import sys

from spade4d.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", "pvsg", *sys.argv[1:]]))
