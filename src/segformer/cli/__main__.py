"""`python -m segformer.cli ...` (used under torchrun) runs the same `main` as the `segformer` script."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
