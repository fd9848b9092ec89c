#!/usr/bin/env python
from llast_fairseq.cli.export import main

main()
