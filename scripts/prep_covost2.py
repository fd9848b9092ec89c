#!/usr/bin/env python
from llast_fairseq.cli.prep_covost2 import main

main()
