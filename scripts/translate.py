#!/usr/bin/env python
from llast_fairseq.cli.translate import main

main()
