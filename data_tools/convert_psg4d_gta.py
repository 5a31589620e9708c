"""Convert psg4d-gta with `spade4d convert psg4d-gta`; run with --help for the options.

python -m data_tools.convert_psg4d_gta [options]
"""

import sys

from spade4d.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", "psg4d-gta", *sys.argv[1:]]))
