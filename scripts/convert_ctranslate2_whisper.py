#!/usr/bin/env python
from llast_fairseq.cli.convert_ctranslate2_whisper import main

main()
