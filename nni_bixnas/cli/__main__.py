import sys

from nni_bixnas.cli import main

sys.exit(main())
