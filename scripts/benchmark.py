#!/usr/bin/env python
from llast_fairseq.cli.benchmark import main

main()
