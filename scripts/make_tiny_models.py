#!/usr/bin/env python
from llast_fairseq.cli.make_tiny_models import main

main()
