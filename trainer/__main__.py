import sys

from ni.cli_util import run_cli
from trainer.cli import main

sys.exit(run_cli(main))
