#!/usr/bin/env python
from llast_fairseq.cli.prep_fleurs import main

main()
