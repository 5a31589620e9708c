"""Convert psg4d-hoi with `spade4d convert psg4d-hoi`; run with --help for the options.

python -m data_tools.convert_psg4d_hoi [options]
"""

import sys

from spade4d.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", "psg4d-hoi", *sys.argv[1:]]))
