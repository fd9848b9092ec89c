#!/usr/bin/env python
from llast_fairseq.cli.experiment import main

raise SystemExit(main())
