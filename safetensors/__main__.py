"""``python -m safetensors``: the command line (safetensors/cli.py)."""
import sys

from .cli import main

sys.exit(main())
