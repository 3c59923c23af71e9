import sys

from launcher.cli import main
from ni.cli_util import run_cli

sys.exit(run_cli(main))
