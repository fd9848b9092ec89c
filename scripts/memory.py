#!/usr/bin/env python
from llast_fairseq.cli.memory import main

main()
