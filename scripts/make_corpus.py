#!/usr/bin/env python
from llast_fairseq.cli.make_corpus import main

main()
