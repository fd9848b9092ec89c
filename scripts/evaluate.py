from llast_fairseq.cli.evaluate import main
raise SystemExit(main())
